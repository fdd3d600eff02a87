"""Stack operations shared by both backends: start and wait, health, status, down, reset.

The backend starts and stops things; this module decides when the stack is ready (our own
probes, not Docker's healthcheck interval) and serialises changes with a lock file.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.backends.base import CORE, SERVICES, Backend, ServiceState
from scripts.errors import StackError
from scripts.infra import lock, probes
from scripts.infra.probes import ProbeResult
from scripts.ops import journals
from scripts.settings import Settings


@dataclass(frozen=True)
class UpReport:
    started: list[str]
    results: dict[str, ProbeResult]
    seconds: float
    notes: list[str]  # what was done besides starting: passwords applied, roles split


def address(settings: Settings, service: str) -> tuple[str, int]:
    return settings.connect_host, settings.port(service)


def probe_for(settings: Settings, service: str) -> Callable[[], ProbeResult]:
    host, port = address(settings, service)
    if service == "postgres":
        login = probes.pg_login(settings)
        return lambda: probes.probe_postgres(login)
    if service == "redis":
        return lambda: probes.probe_redis(host, port, settings.redis_password.reveal())
    return lambda: probes.probe_http(host, port)


def locked(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """The stack's lock (scripts.infra.lock), for the use cases that change it."""
    return lock.held(settings.state_dir)


def up(settings: Settings, backend: Backend, services: Sequence[str]) -> UpReport:
    """Start `services` and wait until each answers; on failure stop what this call started."""
    with locked(settings):
        return _up(settings, backend, services)


def _up(settings: Settings, backend: Backend, services: Sequence[str]) -> UpReport:
    """`up`, under the stack's lock already (reset takes it for its safety backup too)."""
    began = time.monotonic()
    notes = _restart_hung_adminer(settings, backend) if "adminer" in services else []
    started = backend.start(services)
    try:
        results = _wait(settings, backend, services)
        # A password changed in the env file since the data was made: apply it, once.
        refused = [name for name, r in results.items() if r.auth_failed]
        notes += [
            f"{name}: password changed to the one in the env file ({backend.apply_password(name)})."
            for name in refused
        ]
        if refused:
            results.update(_wait(settings, backend, refused))
        if "postgres" in services and _restore_to_recover(settings, results["postgres"]):
            from scripts.ops import copies, swap

            notes += swap.recover(settings)  # a killed restore's swap, before anything else
            notes += copies.recover(settings)  # a killed snapshot's or rollback's copy
            results.update(_wait(settings, backend, ["postgres"]))
        if "postgres" in services and results["postgres"].ok:
            from scripts.ops import roles

            notes += roles.ensure(settings, backend)
    except StackError as exc:
        raise StackError(f"{exc.message.rstrip('.')}.{_undo(backend, started)}") from None
    failed = {name: r for name, r in results.items() if not r.ok}
    if failed:
        detail = "; ".join(f"{name}: {r.detail.rstrip('.')}" for name, r in failed.items())
        raise StackError(
            f"The stack is not ready: {detail}.{_undo(backend, started)} See `inv logs` for "
            "the services' output."
        )
    return UpReport(started, results, time.monotonic() - began, notes)


def _restart_hung_adminer(settings: Settings, backend: Backend) -> list[str]:
    """An Adminer that runs but does not answer (a request it never finished) is stopped, so
    the start that follows gives a fresh one."""
    probe = probes.probe_http(*address(settings, "adminer"), timeout=2)
    if probe.ok or probe.refused:
        return []
    backend.stop(["adminer"])
    return [f"adminer: did not answer ({probe.detail}), so it was restarted."]


def _restore_to_recover(settings: Settings, postgres: ProbeResult) -> bool:
    """A journaled restore, snapshot or rollback to finish, or the live database missing (a
    set-aside copy of it may be all that is left)."""
    missing = postgres.sqlstate == "3D000"  # invalid_catalog_name: no such database
    return journals.pending(settings) or (missing and not postgres.auth_failed)


def _wait(settings: Settings, backend: Backend, services: Sequence[str]) -> dict[str, ProbeResult]:
    return probes.wait_until_ready(
        [(s, probe_for(settings, s)) for s in services],
        settings.ready_timeout,
        still_running=backend.exit_reason,
    )


def _undo(backend: Backend, started: Sequence[str]) -> str:
    """Stop what this command started; say so."""
    stopped = backend.stop(started) if started else []
    return f" Stopped again: {', '.join(stopped)}." if stopped else ""


def health(settings: Settings) -> dict[str, ProbeResult | None]:
    """Probe core services always, adminer when it answers; None means 'not started, fine'."""
    results: dict[str, ProbeResult | None] = {}
    for service in SERVICES:
        result = probe_for(settings, service)()
        if service not in CORE and result.refused:
            results[service] = None  # the tools profile is optional
        else:
            results[service] = result
    return results


@dataclass(frozen=True)
class StatusRow:
    service: str
    state: ServiceState
    address: str
    health: ProbeResult | None


def status(settings: Settings, backend: Backend) -> list[StatusRow]:
    rows = []
    for service, state in backend.states().items():
        host, port = address(settings, service)
        probe = probe_for(settings, service)() if state.running else None
        rows.append(StatusRow(service, state, f"{host}:{port}", probe))
    return rows


def reset(
    settings: Settings, backend: Backend, *, safety_backup: bool
) -> tuple[Path | None, list[str]]:
    """Delete the stack's data; first take a backup of the database unless told not to.

    Returns the safety backup (None when there was no database or none was wanted) and
    what was deleted.
    """
    from scripts.ops import backup_files, backups, swap

    with locked(settings):
        saved = None
        if safety_backup and backend.has_database():
            try:
                _up(settings, backend, ("postgres",))
                saved = backups.dump(
                    settings,
                    backend,
                    name=f"before-reset-{backup_files.timestamp()}",
                    numbered=True,
                ).path
            except StackError as exc:
                copies = [n for n in swap.leftovers(settings) if swap.ASIDE_MARK in n]
                advice = (
                    f"{', '.join(copies)} may hold the only copy of the database: rename it "
                    f"back to {settings.postgres_db!r} (`inv up-core` does) before deleting"
                    if copies
                    else "Fix that, or run `inv reset --yes --no-backup` to delete without one"
                )
                raise StackError(
                    f"Nothing was deleted: the safety backup failed ({exc.message.rstrip('.')}). "
                    f"{advice}."
                ) from None
        return saved, backend.destroy()


def down(settings: Settings, backend: Backend) -> list[str]:
    with locked(settings):
        return backend.stop()


def clean(settings: Settings, backend: Backend) -> list[str]:
    """Stop everything, remove the backend's leftovers and abandoned partial backups."""
    from scripts.ops import backup_files, copies, swap

    with locked(settings):
        leftovers: list[str] = []
        if probe_for(settings, "postgres")().ok:  # dropping needs the server: before stopping
            leftovers = swap.remove_leftovers(settings) + copies.remove_leftovers(settings)
        removed = backend.clean()
        return leftovers + removed + backup_files.remove_abandoned(settings)


def connection_lines(settings: Settings) -> Mapping[str, str]:
    host = settings.connect_host
    return {
        "PostgreSQL": f"{host}:{settings.postgres_port}  db {settings.postgres_db}, "
        f"user {settings.postgres_user}",
        "Redis": f"{host}:{settings.redis_port}",
        "DATABASE_URL": settings.database_url_masked,
        "REDIS_URL": settings.redis_url_masked,
        "Adminer": f"{settings.adminer_url}  (after `inv up`)",
    }
