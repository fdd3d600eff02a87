"""Which Docker engine the tasks use, and what they say about it, as the docker CLI decides:
DOCKER_HOST, then DOCKER_CONTEXT, then the current context of config.json, then the local
socket. No engine is contacted here: contexts are written in the docker CLI's own layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scripts.errors import StackError
from scripts.infra import engine
from scripts.ops.preflight import on_engine_host
from scripts.ops.validate import host
from scripts.ops.validate.report import Report
from scripts.urls import derive_url
from tests.unit.unit_support import generated_settings


def _context(config: Path, name: str, host_url: str, *, tls: bool = False) -> None:
    """A context as `docker context create` stores it (meta.json; TLS files beside it)."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest / "meta.json"
    meta.parent.mkdir(parents=True)
    endpoints = {"docker": {"Host": host_url, "SkipTLSVerify": False}}
    meta.write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": endpoints}))
    if tls:
        files = config / "contexts" / "tls" / digest / "docker"
        files.mkdir(parents=True)
        for pem in ("ca.pem", "cert.pem", "key.pem"):
            (files / pem).write_text("-----BEGIN-----\n")


def test_the_local_socket_by_default(tmp_path: Path) -> None:
    point = engine.endpoint({"DOCKER_CONFIG": str(tmp_path)})
    assert point.host == "unix:///var/run/docker.sock"
    assert (point.chosen_by, point.remote, point.hostname) == ("", False, "localhost")


def test_docker_host_beats_docker_context(tmp_path: Path) -> None:
    _context(tmp_path, "build", "ssh://dev@build.internal")
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "build",
           "DOCKER_HOST": "tcp://10.0.0.5:2376", "DOCKER_TLS_VERIFY": "1",
           "DOCKER_CERT_PATH": "/certs"}  # fmt: skip
    point = engine.endpoint(env)
    assert (point.host, point.tls, point.cert_path) == ("tcp://10.0.0.5:2376", True, "/certs")
    assert point.named() == "DOCKER_HOST=tcp://10.0.0.5:2376"
    assert point.remote and point.hostname == "10.0.0.5"


def test_docker_context_then_the_current_context(tmp_path: Path) -> None:
    _context(tmp_path, "build", "ssh://dev@build.internal:2222")
    _context(tmp_path, "tls", "tcp://127.0.0.1:2376", tls=True)
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "tls"}))
    chosen = engine.endpoint({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "build"})
    assert chosen.named() == "docker context 'build' (ssh://dev@build.internal:2222)"
    assert chosen.scheme == "ssh" and chosen.remote  # ssh is forwarded, even to localhost
    argv = chosen.ssh_argv("docker", "version")
    assert argv[0] == "ssh" and argv[-8:] == [
        "-l", "dev", "-p", "2222", "--", "build.internal", "docker", "version"
    ]  # fmt: skip
    current = engine.endpoint({"DOCKER_CONFIG": str(tmp_path)})
    assert (current.context, current.tls, current.remote) == ("tls", True, False)
    assert Path(current.cert_path, "ca.pem").is_file()


def test_a_context_that_does_not_exist_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"The docker context 'gone' \(DOCKER_CONTEXT\) does "):
        engine.endpoint({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "gone"})
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "gone"}))
    with pytest.raises(StackError, match=r"'gone' \(config.json\) does not exist"):
        engine.endpoint({"DOCKER_CONFIG": str(tmp_path)})


def test_tls_files_missing_name_each_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    env = {"DOCKER_HOST": "tcp://127.0.0.1:1", "DOCKER_TLS_VERIFY": "1",
           "DOCKER_CERT_PATH": str(tmp_path)}  # fmt: skip
    with pytest.raises(StackError) as raised:
        engine.client(env)
    assert f"DOCKER_CERT_PATH={tmp_path} lacks cert.pem, key.pem" in raised.value.message


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(key, raising=False)
    return config


def test_a_remote_tcp_engine_is_reached_at_its_host(
    tmp_path: Path, docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = generated_settings(tmp_path, backend="compose")
    assert on_engine_host(settings) == settings  # the local socket: nothing changes
    monkeypatch.setenv("DOCKER_HOST", "tcp://192.0.2.7:2376")
    moved = on_engine_host(settings)
    assert moved.connect_host == "192.0.2.7"
    assert moved.pg_conninfo()["hostaddr"] == "192.0.2.7"
    # The URL the tasks write for the application names that host too.
    assert "@192.0.2.7:" in derive_url(moved, "DATABASE_URL")
    monkeypatch.setenv("DOCKER_HOST", "ssh://dev@192.0.2.7")
    assert on_engine_host(settings).connect_host == settings.connect_host  # forwarded here


def _engine_check(report: Report) -> tuple[str, str, str]:
    found = [c for c in report.checks if c.name == "published ports"]
    assert len(found) == 1, report.checks
    return found[0].status, found[0].finding, found[0].fix


def test_validate_on_a_remote_tcp_engine(
    tmp_path: Path, docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://192.0.2.7:2376")
    report = Report()
    host._engine_reach(report, generated_settings(tmp_path, backend="compose"))
    status, finding, fix = _engine_check(report)
    assert status == "fail" and "loopback of 192.0.2.7" in finding and "ssh://" in fix
    (tmp_path / "b").mkdir()
    exposed = generated_settings(tmp_path / "b", {"BIND_ADDRESS": "0.0.0.0"}, backend="compose")  # noqa: S104
    report = Report()
    host._engine_reach(report, exposed)
    status, finding, fix = _engine_check(report)
    assert status == "warn" and "anyone who reaches that host reaches the database" in finding
    monkeypatch.setenv("DOCKER_HOST", "ssh://dev@192.0.2.7")
    report = Report()
    host._engine_reach(report, exposed)
    assert _engine_check(report)[0] == "pass"


def test_a_start_on_a_remote_tcp_engine_with_loopback_ports_is_refused_first(
    tmp_path: Path, docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is asked of the engine (192.0.2.7 is a documentation address: nothing
    answers there): the sentence comes before any start."""
    from scripts.backends.compose import ComposeBackend

    monkeypatch.setenv("DOCKER_HOST", "tcp://192.0.2.7:2376")
    backend = ComposeBackend(generated_settings(tmp_path, backend="compose"))
    with pytest.raises(StackError) as raised:
        backend.start(["postgres", "redis"])
    said = raised.value.message
    assert said.startswith("DOCKER_HOST=tcp://192.0.2.7:2376 would publish the ports on the ")
    assert "use an ssh:// engine" in said and said.endswith("Nothing was started.")
