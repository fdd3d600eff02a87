"""First-run set-up: the env file, the backend choice written into it, and prerequisites.

`inv init` and `inv setup` live here; starting the services is scripts.stack's job.
"""

from __future__ import annotations

import os
import sys

from scripts import prerequisites
from scripts.backends import Backend, get_backend
from scripts.console import confirm, display_path, say
from scripts.errors import StackError
from scripts.settings import (
    BACKENDS,
    Settings,
    create_env_file,
    env_file_path,
    load,
    set_env_value,
)


def run(yes: bool) -> tuple[Settings, Backend]:
    """Create the env file when missing, pin the backend, install what it needs."""
    path = env_file_path()
    backend_name = configured_backend()  # probes for a Docker engine once, if auto
    if not path.exists():
        create_env_file(path, backend=backend_name)
        say("ok", f"Created {display_path(path)} with generated passwords (mode 0600).")
    settings = load()
    if settings.backend == "auto" and "STACK_BACKEND" not in os.environ:
        set_env_value(path, "STACK_BACKEND", backend_name)
        say("ok", f"Pinned STACK_BACKEND={backend_name} in {display_path(path)}.")
        settings = load()
    backend = get_backend(settings, backend_name)
    say("info", f"{backend.name} backend · {backend.where()}")
    ensure_prerequisites(backend.name, yes=yes, with_tools=True, tools_required=False)
    return settings, backend


def configured_backend() -> str:
    """The backend the env file names (resolving auto), or STACK_BACKEND before one exists."""
    if env_file_path().exists():
        return _resolve(load().backend)
    configured = os.environ.get("STACK_BACKEND", "auto").strip().lower() or "auto"
    if configured not in BACKENDS:
        raise StackError(
            f"STACK_BACKEND={configured!r} is not a backend: use auto, compose or native."
        )
    return _resolve(configured)


def _resolve(configured: str) -> str:
    if configured != "auto":
        return configured
    from scripts.docker_engine import compose_version, engine_version

    chosen = "compose" if engine_version() and compose_version() else "native"
    reason = "a Docker engine answers" if chosen == "compose" else "no Docker engine answers"
    say("info", f"STACK_BACKEND=auto chose {chosen}: {reason}.")
    return chosen


def ensure_prerequisites(
    backend: str, *, yes: bool, with_tools: bool, tools_required: bool = True
) -> None:
    """Check the backend's prerequisites; install missing ones after asking (or with --yes).

    With tools_required=False (inv init), what only the tools profile needs is installed
    when someone can say yes, and otherwise left for `inv setup` with a warning.
    """
    if backend == "compose":
        checks = prerequisites.compose_checks()
    else:
        checks = prerequisites.native_checks(with_tools)
    missing = [c for c in checks if not c.ok]
    if not missing:
        say("ok", "Prerequisites present: " + ", ".join(c.name.split(" (")[0] for c in checks))
        return
    only_tools = all(c.needed_for == "adminer" for c in missing)
    if only_tools and not tools_required and not yes and not sys.stdin.isatty():
        names = ", ".join(c.name for c in missing)
        say("warn", f"`inv up` (Adminer) will need {names}: run `inv setup` to install it.")
        return
    if backend == "compose":
        _ensure_docker(yes=yes)
        return
    _install(missing, yes=yes, with_tools=with_tools)


def _ensure_docker(*, yes: bool) -> None:
    """Install (apt, after asking) and start a Docker engine, and link Compose v2 if missing."""
    from scripts import docker_engine

    if not yes and docker_engine.engine_version() is None:
        answer = confirm("Install and/or start the Docker engine (docker.io) and Compose v2?")
        if answer is None:
            raise StackError(
                "No Docker engine answers: run `inv setup --yes` to install and start one, or "
                "set STACK_BACKEND=native in the env file."
            )
        if not answer:
            raise StackError("Nothing was installed. Set STACK_BACKEND=native to use no Docker.")
        yes = True
    report = docker_engine.ensure_engine(yes=yes)
    say("ok", docker_engine.describe(report))
    version = docker_engine.ensure_compose(sys.executable)
    say("ok", f"Docker Compose {version}")


def _install(missing: list[prerequisites.Check], *, yes: bool, with_tools: bool) -> None:
    prerequisites.install(missing, yes=yes, again="inv setup --yes")
    if any("adminer.php" in c.packages for c in missing):
        page = prerequisites.fetch_adminer()
        say("ok", f"Fetched adminer.php from Debian's adminer package into {page}.")
    still = [c for c in prerequisites.native_checks(with_tools) if not c.ok]
    if still:
        raise StackError(prerequisites.manual_instructions(still))
    say("ok", "Installed " + ", ".join(c.name for c in missing) + ".")
