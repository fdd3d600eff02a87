"""A Docker engine on a machine that has none: probe, install, start.

Owns installing docker.io and the dockerd this project starts itself; Compose v2 is
scripts.infra.compose_plugin's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.errors import StackError
from scripts.infra import engine, procs, run, wait

DEFAULT_SOCKET = "/var/run/docker.sock"
DOCKERD_LOG = Path("/var/log/ai-marketplace-dockerd.log")
DOCKERD_PID_FILE = Path("/run/ai-marketplace-dockerd.pid")
DOCKERD_OWN_PID_FILE = Path("/var/run/docker.pid")  # written by dockerd itself
APT_PACKAGE = "docker.io"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.1
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# Daemons this process started, kept so they are reaped (and no ResourceWarning is raised).
_CHILDREN: dict[int, run.Process] = {}


@dataclass(frozen=True)
class EngineReport:
    """What ensure_engine found or did; the compose suite's stop_engine (tests/support) undoes
    only what it started."""

    version: str  # the engine's version, e.g. "20.10.24+dfsg1"
    started: bool  # True when this call started the daemon (stop_engine will stop it)
    how: str  # "reused", "package" (its install started it), "systemctl" or "dockerd"
    pid: int | None = None  # the daemon's pid when known
    installed: bool = False  # True when this call installed docker.io
    log_file: Path | None = None  # dockerd's output when this call started it detached
    seconds: float = 0.0  # time spent starting the daemon (install excluded)


# --------------------------------------------------------------------------- probing


def docker_host() -> str:
    """How sentences name the engine: DOCKER_HOST=…, a context, or the local socket."""
    return engine.endpoint().named()


def _is_local_default() -> bool:
    point = engine.endpoint()
    return point.chosen_by == "" and point.host in (
        f"unix://{DEFAULT_SOCKET}",
        "unix:///run/docker.sock",
    )


def engine_version(timeout: float = 1.0) -> str | None:
    """The engine's version when it answers (scripts.infra.engine), else None."""
    return engine.engine_version(timeout=timeout)


def docker_output(*args: str) -> str | None:
    """What `docker ARGS` prints, stripped; None when the CLI is missing or the call fails."""
    if shutil.which("docker") is None:
        return None
    result = run.run(["docker", *args], timeout=30)
    output = result.stdout.strip()
    return output if result.ok and output else None


def _cli_version() -> str | None:
    return docker_output("info", "--format", "{{.ServerVersion}}")


def _which_sbin(name: str) -> str | None:
    """shutil.which that also looks in the sbin directories a non-root PATH may lack."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(name, path=os.pathsep.join([path, *_SBIN_DIRS]))


def _is_dockerd(pid: int) -> bool:
    return procs.command_name(pid) == "dockerd"


def _running_dockerd(own_pid_file: Path = DOCKERD_PID_FILE) -> int | None:
    """The pid of a dockerd that runs already (perhaps still starting), if any."""
    for pid_file in (DOCKERD_OWN_PID_FILE, own_pid_file):
        pid = procs.read_pid(pid_file)
        if pid is not None and procs.alive(pid) and _is_dockerd(pid):
            return pid
    return None


def _privilege_prefix() -> list[str] | None:
    """[] as root, ["sudo", "-n"] when sudo works without a password, else None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        return None
    return ["sudo", "-n"] if run.run(["sudo", "-n", "true"], timeout=10).ok else None


def _tail(path: Path) -> str:
    return "\n".join(procs.tail(path, 15)) or f"(nothing in {path})"


# --------------------------------------------------------------------------- engine


def _install_docker(yes: bool) -> None:
    command = "sudo apt-get install -y --no-install-recommends docker.io"
    if shutil.which("apt-get") is None:
        raise StackError(
            "dockerd is not installed and this machine has no apt-get: install Docker Engine "
            "(https://docs.docker.com/engine/install/) and try again."
        )
    prefix = _privilege_prefix()
    if prefix is None:
        raise StackError(
            f"dockerd is not installed and installing it needs root: run `{command}` and try again."
        )
    if not yes:
        raise StackError(
            f"dockerd is not installed: pass --yes to let this install it, or run `{command}`."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if prefix:
        prefix = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive"]
    steps = [
        [*prefix, "apt-get", "update"],
        [*prefix, "apt-get", "install", "-y", "--no-install-recommends", APT_PACKAGE],
    ]
    for argv in steps:
        result = run.run(argv, env=env, stdin=run.DEVNULL)
        if not result.ok:
            raise StackError(
                f"`{shlex.join(argv)}` failed ({result.last_line(str(result.returncode))}): "
                "fix the apt sources or network and try again."
            )


def _wait_for_api(timeout: float, pid: int | None, log: Path | None) -> str:
    """The engine's version once its API answers; a daemon that exits or stays silent for
    `timeout` seconds is a StackError that shows the end of its log."""
    where = f"; its log {log} ends with:\n{_tail(log)}" if log else ""
    exited = False

    def answer() -> str | None:
        nonlocal exited
        version = engine_version(timeout=0.5)
        exited = version is None and pid is not None and not procs.alive(pid)
        return version or ("" if exited else None)

    version = wait.until(answer, timeout=timeout, interval=POLL_INTERVAL)
    if exited:
        raise StackError(
            f"dockerd (pid {pid}) exited during start-up: fix what its log names and try "
            f"again{where}"
        )
    if not version:
        raise StackError(
            f"The Docker engine did not answer on {docker_host()} within {timeout:.0f} s: fix "
            f"what its log names and try again{where}"
        )
    return version


def _start_systemd(prefix: list[str]) -> EngineReport:
    began = time.monotonic()
    argv = [*prefix, "systemctl", "start", "docker"]
    result = run.run(argv)
    if not result.ok:
        raise StackError(
            f"`{shlex.join(argv)}` failed ({result.last_line(str(result.returncode))}): "
            "see `journalctl -u docker`, fix the cause and try again."
        )
    version = _wait_for_api(START_TIMEOUT, None, None)
    return EngineReport(
        version,
        started=True,
        how="systemctl",
        pid=_running_dockerd(),
        seconds=time.monotonic() - began,
    )


def _start_detached(dockerd: str, log: Path, pid_file: Path) -> EngineReport:
    began = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {dockerd}\n".encode())
    process = run.spawn([dockerd], log)
    _CHILDREN[process.pid] = process
    with contextlib.suppress(OSError):
        pid_file.write_text(f"{process.pid}\n")
    try:
        version = _wait_for_api(START_TIMEOUT, process.pid, log)
    except StackError:
        procs.stop(process.pid, signal.SIGTERM, STOP_TIMEOUT, signal.SIGKILL)
        with contextlib.suppress(OSError):
            pid_file.unlink()
        raise
    return EngineReport(
        version,
        started=True,
        how="dockerd",
        pid=process.pid,
        log_file=log,
        seconds=time.monotonic() - began,
    )


def ensure_engine(
    *, yes: bool, log: Path = DOCKERD_LOG, pid_file: Path = DOCKERD_PID_FILE
) -> EngineReport:
    """A Docker engine answering on docker_host(): reuse one, else install and start dockerd.

    `yes` allows installing docker.io with apt-get; starting an installed daemon needs no yes.
    Only the default local socket is started here: a DOCKER_HOST elsewhere must answer itself.
    """
    version = engine_version()
    if version is not None:
        return EngineReport(version, started=False, how="reused", pid=_running_dockerd(pid_file))
    host = docker_host()
    if not _is_local_default():
        point = engine.endpoint()
        engine.client(timeout=engine.PROBE_TIMEOUT).close()  # says what is wrong, if it can
        raise StackError(
            f"No Docker engine answers at {point.named()}: start that engine, or "
            f"{point.fix_hint()}."
        )
    running = _running_dockerd(pid_file)
    if running is not None:  # a daemon that is still starting (or stuck): wait, never start two
        try:
            version = _wait_for_api(START_TIMEOUT, running, None)
        except StackError:
            raise StackError(
                f"dockerd (pid {running}) runs but does not answer on {host}: read its log "
                f"({log} when this project started it), stop it (`kill {running}`) and try "
                "again."
            ) from None
        return EngineReport(version, started=False, how="reused", pid=running)

    installed = False
    if _which_sbin("dockerd") is None or shutil.which("docker") is None:
        _install_docker(yes)
        installed = True
        # A package script may have started the daemon (systemd, or sysvinit's invoke-rc.d).
        version = engine_version()
        if version is not None:
            return EngineReport(
                version,
                started=True,
                how="package",
                pid=_running_dockerd(pid_file),
                installed=True,
            )
    dockerd = _which_sbin("dockerd")
    if dockerd is None:
        raise StackError(
            f"{APT_PACKAGE} is installed but dockerd is not on PATH: reinstall it with "
            f"`sudo apt-get install --reinstall {APT_PACKAGE}`."
        )

    prefix = _privilege_prefix()
    if Path("/run/systemd/system").is_dir():
        if prefix is None:
            raise StackError(
                "The Docker engine is not running and starting it needs root: run "
                "`sudo systemctl start docker` and try again."
            )
        report = _start_systemd(prefix)
    else:
        if os.geteuid() != 0:
            raise StackError(
                "The Docker engine is not running and this machine has no systemd: as root, run "
                f"`sh -c '{dockerd} >>{log} 2>&1 &'` and try again."
            )
        report = _start_detached(dockerd, log, pid_file)
    return dataclasses.replace(report, installed=installed)


def describe(report: EngineReport) -> str:
    """One line for logs: what ensure_engine did."""
    parts: Sequence[str] = [
        f"Docker engine {report.version}",
        "installed" if report.installed else "",
        {"reused": "reused", "package": "started by its package"}.get(
            report.how, f"started with {report.how}"
        ),
        f"pid {report.pid}" if report.pid else "",
        f"in {report.seconds:.1f} s" if report.started and report.seconds else "",
        f"log {report.log_file}" if report.log_file else "",
    ]
    return ", ".join(p for p in parts if p)
