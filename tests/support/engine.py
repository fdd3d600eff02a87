"""A Docker engine for the compose suite: stopped again after it, but only when the session
started it and no other containers live on it. The product only ever starts one
(scripts.infra.docker.ensure_engine)."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from scripts.errors import StackError
from scripts.infra import procs, run
from scripts.infra.docker import (
    DOCKERD_PID_FILE,
    STOP_TIMEOUT,
    EngineReport,
    _is_dockerd,
    _privilege_prefix,
    docker_output,
)


def containers_on_engine() -> list[str]:
    """The names of every container on the engine, running or not."""
    output = docker_output("ps", "--all", "--format", "{{.Names}}")
    return sorted(output.split()) if output else []


def stop_engine(report: EngineReport, *, pid_file: Path = DOCKERD_PID_FILE) -> None:
    """Stop the daemon only when `report` says ensure_engine started it; else leave it alone."""
    if not report.started:
        return
    if report.how == "systemctl":
        prefix = _privilege_prefix()
        if prefix is None:
            raise StackError("Stopping dockerd needs root: run `sudo systemctl stop docker`.")
        run.run([*prefix, "systemctl", "stop", "docker.socket", "docker"])
        return
    pid = report.pid
    if pid is None:
        return
    if not procs.alive(pid):
        return
    if not _is_dockerd(pid):
        return  # the pid was reused by another process: nothing of ours to stop
    try:
        procs.stop(pid, signal.SIGTERM, STOP_TIMEOUT, signal.SIGKILL)
    except PermissionError:
        raise StackError(
            f"Stopping dockerd (pid {pid}) needs root: run `sudo kill {pid}`."
        ) from None
    if procs.read_pid(pid_file) == pid:
        with contextlib.suppress(OSError):
            pid_file.unlink()
