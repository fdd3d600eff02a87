"""First-run set-up: the env file (created, or finished when copied by hand), the backend
choice written into it, and prerequisites.

`inv init` and `inv setup` live here; starting the services is scripts.ops.stack's job.
"""

from __future__ import annotations

import os
import sys

from scripts import envfile
from scripts.backends import get_backend
from scripts.backends.base import Backend
from scripts.console import confirm, display_path, enumerate_names, say
from scripts.envfile import PLACEHOLDER_PASSWORD
from scripts.errors import StackError
from scripts.infra import prerequisites
from scripts.ops.preflight import banner, ensure_admin_password, write_unset_urls
from scripts.settings import (
    BACKENDS,
    PASSWORD_KEYS,
    Settings,
    create_env_file,
    env_file_path,
    load,
    new_password,
)
from scripts.urls import URL_KEYS, url_unset


def run(yes: bool) -> tuple[Settings, Backend]:
    """Create the env file, or finish one copied by hand; pin the backend; install what it
    needs. Says what it changed."""
    path = env_file_path()
    backend_name = configured_backend()  # probes for a Docker engine once, if auto
    created = not path.exists()
    if created:
        create_env_file(path, backend=backend_name)
        say("ok", f"Created {display_path(path)} with generated passwords (mode 0600).")
    # Before the env file is finished: whether data exists is the engine's to say (compose).
    ensure_prerequisites(backend_name, yes=yes, with_tools=True, tools_required=False)
    settings = load()
    if settings.backend == "auto" and "STACK_BACKEND" not in os.environ:
        envfile.update(path, {"STACK_BACKEND": backend_name})
        say("ok", f"Pinned STACK_BACKEND={backend_name} in {display_path(path)}.")
        settings = load()
    if not created:
        before = get_backend(settings, backend_name)
        before.check_owner()  # another checkout's data is not this one's to judge
        settings = finish_env_file(settings, before)
    settings = ensure_admin_password(settings)
    backend = get_backend(settings, backend_name)
    banner(settings, backend)
    return settings, backend


def finish_env_file(settings: Settings, backend: Backend) -> Settings:
    """Do to an env file copied from .env.example what creating it would have done.

    Placeholder passwords are replaced by generated ones (POSTGRES_PASSWORD only while no
    database exists: one that exists was made with it), unset URLs are written, and the
    mode becomes 0600. Says what changed.
    """
    path = settings.env_file
    shown = display_path(path)
    placeholders = [
        key
        for key in PASSWORD_KEYS
        if settings.file_values.get(key) == PLACEHOLDER_PASSWORD and key not in os.environ
    ]
    if "POSTGRES_PASSWORD" in placeholders and backend.has_database():
        raise StackError(
            f"POSTGRES_PASSWORD in {shown} is still .env.example's placeholder, and the "
            "database was made with it: set a password of your own there and run `inv init` "
            "again (the stack applies it). Nothing was started."
        )
    mode = path.stat().st_mode & 0o777
    bom = envfile.read_text(path).startswith(envfile.BOM)
    done = []
    if placeholders or mode != 0o600 or bom:
        envfile.update(path, {key: new_password() for key in placeholders}, mode=0o600)
        settings = load()
    if placeholders:
        done.append(f"generated {enumerate_names(placeholders)}")
    if bom:
        done.append("removed its byte-order mark")
    urls = [key for key in URL_KEYS if url_unset(settings.file_values.get(key, ""))]
    if urls:
        settings = write_unset_urls(settings, quiet=True)
        done.append(f"wrote {enumerate_names(urls)} (derived from the stack's settings)")
    if mode != 0o600:
        done.append(f"mode {mode:04o} -> 0600")
    if done:
        say("ok", f"Finished {shown}: {'; '.join(done)}.")
    return settings


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
    from scripts.backends.base import resolve

    chosen, why = resolve(configured)
    if configured == "auto":
        say("info", f"{why}.")
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
    from scripts.infra import compose_plugin, docker

    if not yes and docker.engine_version() is None:
        answer = confirm("Install and/or start the Docker engine (docker.io) and Compose v2?")
        if answer is None:
            raise StackError(
                "No Docker engine answers: run `inv setup --yes` to install and start one, or "
                "set STACK_BACKEND=native in the env file."
            )
        if not answer:
            raise StackError("Nothing was installed. Set STACK_BACKEND=native to use no Docker.")
        yes = True
    report = docker.ensure_engine(yes=yes)
    say("ok", docker.describe(report))
    version = compose_plugin.ensure_compose(sys.executable, notify=lambda line: say("ok", line))
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
