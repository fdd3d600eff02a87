"""`inv validate` against the isolated live stack of `nox -s integration`, on either backend.

Tests that break something (redis stopped, AOF off, bound to 0.0.0.0) put the stack back.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from scripts.backends import get_backend
from scripts.ops.validate import AREAS
from scripts.settings import Settings
from tests.integration.helpers import Inv, core_healthy, listening_addresses

EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 - what the test starts the servers on, on purpose

LIVE_CHECKS = {
    "Services": (
        "postgres answers",
        "schema tables",
        "extensions",
        "updated_at triggers",
        "foreign-key indexes",
        "seed data",
        "redis answers",
        "redis AOF",
    ),
    "Security": (
        "postgres bind",
        "redis bind",
        "postgres wrong password",
        "postgres no password",
        "redis without password",
        "backups private",
    ),
}


def _validate(inv: Inv, *args: str) -> tuple[int, dict[str, Any], str]:
    """Exit code, parsed JSON report and whole output of `inv validate --json ARGS`."""
    result = inv("validate", "--json", *args)
    output = result.stdout + result.stderr
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"`inv validate --json` printed no JSON:\n{output}") from None
    assert isinstance(report, dict), output
    counts = {s: sum(c["status"] == s for c in report["checks"]) for s in report["summary"]}
    assert report["summary"] == counts, output
    return result.returncode, report, output


def _check(report: dict[str, Any], area: str, name: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["area"] == area and c["name"] == name]
    assert len(found) == 1, (area, name, report["checks"])
    check: dict[str, Any] = found[0]
    return check


def _failures(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["status"] == "fail"]


def _secrets(stack: Settings) -> list[str]:
    return [stack.postgres_password.reveal(), stack.redis_password.reveal()]


def test_a_healthy_stack_passes(running: Settings, inv: Inv) -> None:
    result = inv("validate")
    table = result.stdout + result.stderr
    assert result.returncode == 0, table
    assert " 0 failed" in table
    code, report, output = _validate(inv)
    assert code == 0, output
    assert _failures(report) == [], output
    assert {c["area"] for c in report["checks"]} == set(AREAS), output
    for area, names in LIVE_CHECKS.items():
        for name in names:
            check = _check(report, area, name)
            assert check["status"] == "pass", check
    assert (
        "users, ai_agents, reviews, transactions"
        in _check(report, "Services", "schema tables")["finding"]
    )
    assert "uuid-ossp" in _check(report, "Services", "extensions")["finding"]
    assert "pgcrypto" in _check(report, "Services", "extensions")["finding"]
    assert _check(report, "Services", "redis AOF")["finding"] == "appendonly yes"
    for service, port in (("postgres", running.postgres_port), ("redis", running.redis_port)):
        bind = _check(report, "Security", f"{service} bind")["finding"]
        assert f"{running.bind_address}:{port}" in bind
    tools = [c for c in report["checks"] if c["area"] == "Tools"]
    assert tools and all(c["status"] in ("pass", "warn") for c in tools), tools
    for secret in _secrets(running):
        assert secret not in output and secret not in table


def test_the_deliberate_failed_logins_are_announced_in_the_server_log(
    running: Settings, inv: Inv
) -> None:
    """Whoever reads `inv logs -s postgres` after `inv validate` learns that its two failed
    logins were validate's own checks: a line says so just before them."""
    assert inv("validate").returncode == 0
    shown = inv("logs", "-s", "postgres", "--tail", "200")
    lines = [line for line in shown.stdout.splitlines() if "LOG:" in line or "FATAL:" in line]
    notes = [
        i for i, line in enumerate(lines) if "inv validate: the next two failed logins" in line
    ]
    assert notes, shown.stdout
    after = [line for line in lines[notes[-1] + 1 :] if "FATAL:" in line]
    assert len(after) >= 2 and all("password authentication failed" in x for x in after[:2])


def test_offline_skips_only_the_live_checks(running: Settings, inv: Inv) -> None:
    code, report, output = _validate(inv, "--offline")
    assert code == 0, output
    services = [c for c in report["checks"] if c["area"] == "Services"]
    assert services and all(c["status"] == "skip" for c in services), services
    names = {c["name"] for c in report["checks"]}
    assert not {"postgres bind", "postgres wrong password", "redis AOF"} & names, names
    assert _check(report, "Security", "backups private")["status"] == "pass"


def test_the_ports_check_knows_the_stacks_own_servers(running: Settings, inv: Inv) -> None:
    code, report, output = _validate(inv)
    assert code == 0, output
    for service, port in (("postgres", running.postgres_port), ("redis", running.redis_port)):
        check = _check(report, "Ports", f"{service} {port}")
        assert check["status"] == "pass", check
        assert "held by this stack's" in check["finding"], check
        if get_backend(running).name == "compose":
            assert f"{running.project}_" in check["finding"], check  # the container's name
        else:
            assert service in check["finding"] and "pid" in check["finding"], check


def test_adminer_is_checked_when_it_runs(running: Settings, inv: Inv) -> None:
    result = inv("up")
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        code, report, output = _validate(inv)
        assert code == 0, output
        assert _check(report, "Services", "adminer answers")["status"] == "pass"
        port = _check(report, "Ports", f"adminer {running.adminer_port}")
        assert "held by this stack's" in port["finding"], port
        bind = _check(report, "Security", "adminer bind")
        assert bind["status"] == "pass", bind
    finally:
        get_backend(running).stop(["adminer"])


def test_a_stopped_redis_fails_naming_it(running: Settings, inv: Inv) -> None:
    get_backend(running).stop(["redis"])
    code, report, output = _validate(inv)
    assert code == 1, output
    failed = _failures(report)
    assert [c["name"] for c in failed] == ["redis answers"], output
    assert "inv up-core" in failed[0]["fix"]
    assert _check(report, "Services", "postgres answers")["status"] == "pass"
    table = inv("validate")
    assert table.returncode == 1
    assert "redis answers" in table.stdout
    assert "1 failed" in table.stdout


def test_redis_without_aof_fails(running: Settings, inv: Inv) -> None:
    client = redis.Redis.from_url(running.redis_url.reveal(), socket_timeout=10)
    try:
        client.config_set("appendonly", "no")
        try:
            code, report, output = _validate(inv)
            assert code == 1, output
            failed = _failures(report)
            assert [c["name"] for c in failed] == ["redis AOF"], output
            assert "appendonly" in failed[0]["finding"]
        finally:
            client.config_set("appendonly", "yes")
    finally:
        client.close()


def test_a_server_bound_to_all_interfaces_fails_naming_it(running: Settings, inv: Inv) -> None:
    # The env file says BIND_ADDRESS=127.0.0.1; the servers are started with 0.0.0.0 from the
    # process environment, then `inv validate` runs without that override.
    assert running.bind_address == "127.0.0.1"
    try:
        result = inv("down")
        assert result.returncode == 0, result.stdout + result.stderr
        result = inv("up-core", env={"BIND_ADDRESS": EVERY_INTERFACE})
        assert result.returncode == 0, result.stdout + result.stderr
        assert EVERY_INTERFACE in listening_addresses(running.postgres_port)

        code, report, output = _validate(inv)
        assert code == 1, output
        failed = _failures(report)
        assert {c["name"] for c in failed} == {"postgres bind", "redis bind"}, output
        for check in failed:
            assert EVERY_INTERFACE in check["finding"], check
            assert "127.0.0.1" in check["finding"], check
        for service, port in (("postgres", running.postgres_port), ("redis", running.redis_port)):
            ports = _check(report, "Ports", f"{service} {port}")
            assert ports["status"] == "pass", ports  # still this stack's own server
        table = inv("validate")
        assert table.returncode == 1
        assert "postgres bind" in table.stdout and EVERY_INTERFACE in table.stdout
    finally:
        assert inv("down").returncode == 0
        result = inv("up-core")
        assert result.returncode == 0, result.stdout + result.stderr
    assert core_healthy(running)
    for port in (running.postgres_port, running.redis_port):
        assert listening_addresses(port) == {"127.0.0.1"}, port
