"""What a task checks before it acts, by what the task does to the stack.

READ tasks (observe, back up, open a client) warn; STOP tasks (down, clean) also refuse to
touch a compose project another checkout owns; CHANGE tasks (start services, change data)
refuse anything that could send them, or the application, to the wrong server.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from scripts import envfile
from scripts.console import display_path, enumerate_names, warn
from scripts.envfile import PLACEHOLDER_PASSWORD
from scripts.errors import StackError
from scripts.names import MAIN
from scripts.settings import (
    ADMIN_PASSWORD_KEY,
    DEFAULTS,
    PASSWORD_KEYS,
    Settings,
    load,
    new_password,
    placeholder_passwords,
)
from scripts.urls import URL_KEYS, derive_url, mask_url, url_disagreements, url_unset

if TYPE_CHECKING:
    from scripts.backends.base import Backend

READ, STOP, CHANGE = "read", "stop", "change"


def open_stack(
    kind: str, *, announce: bool = True, switching: bool = False
) -> tuple[Settings, Backend]:
    """Settings and backend for a task of `kind`, after every check that kind needs.

    Notices go to stderr, so a task's own output (JSON, a table) stays clean.
    """
    from scripts.backends import get_backend

    settings = load()
    for note in settings.file_notes:
        warn(note)
    if mode_problem := private_mode_problem(settings):
        warn(mode_problem)
    settings = on_engine_host(settings)
    settings = write_unset_urls(settings)
    if kind == CHANGE:
        settings = ensure_admin_password(settings)
    backend = get_backend(settings)
    if announce:
        banner(settings, backend)
    check(settings, backend, kind, switching=switching)
    recover_restore(settings)
    return settings, backend


def on_engine_host(settings: Settings) -> Settings:
    """On a remote engine reached over tcp://, the ports are published on the engine's host:
    the tasks (and the URLs) reach them there. Everywhere else nothing changes."""
    if settings.backend != "compose":  # `inv init` writes the resolved backend
        return settings
    from scripts.infra import engine

    point = engine.endpoint(settings.subprocess_env())
    if point.scheme != "tcp" or not point.remote:
        return settings
    return dataclasses.replace(settings, engine_address=engine.resolve_ip(point.hostname))


def recover_restore(settings: Settings) -> None:
    """Finish or undo a restore, snapshot or rollback a crash interrupted, before anything
    else: the journal says where it stopped. Only when no command holds the stack's lock: a
    journal whose command still runs (a restore in another terminal) is that command's.
    Without a running server, `inv up-core` does it."""
    from scripts.infra import lock
    from scripts.ops import journals

    if not journals.pending(settings):
        return
    with lock.attempt(settings.state_dir) as free:
        if free:
            _recover_journals(settings)


def _recover_journals(settings: Settings) -> None:
    from scripts.ops import copies, swap

    try:
        notes = swap.recover(settings) if swap.journal_pending(settings) else []
        notes += copies.recover(settings)
    except StackError:
        warn(
            "A restore, snapshot or rollback was interrupted; it is put in order as soon as "
            "PostgreSQL runs: `inv up-core`."
        )
        return
    for note in notes:
        warn(note)


def banner(settings: Settings, backend: Backend) -> None:
    """Which stack a task acts on: the backend, where it keeps the stack, and the settings
    the process environment changed (after `set -a; . ./.env` in another checkout, say)."""
    from scripts.console import say

    branch = "" if settings.postgres_branch == MAIN else f" (branch {settings.postgres_branch})"
    say(
        "info",
        f"{backend.name} backend · {backend.where()} · database {settings.postgres_db}{branch}",
    )
    if overrides := environment_overrides(settings):
        say("info", f"From the environment, not {display_path(settings.env_file)}: {overrides}.")


def check(settings: Settings, backend: Backend, kind: str, *, switching: bool = False) -> None:
    """The checks of `kind` on settings already loaded (and URLs already written): that the
    docker CLI's Compose plugin is there (compose backend) and whose stack it is first, then
    whether the env file would send anything elsewhere."""
    if backend.name == "compose":
        check_compose_plugin(refuse=kind != READ)
    if kind in (STOP, CHANGE):
        backend.check_owner()
    check_urls(settings, refuse=kind == CHANGE, switching=switching)
    if kind == CHANGE and (keys := placeholder_passwords(settings)):
        raise StackError(placeholder_message(settings, keys))


def check_compose_plugin(*, refuse: bool) -> None:
    """Name a docker CLI Compose plugin link that points nowhere before any `docker compose`
    runs (every one would fail with "unknown command"): refuse, or warn when `refuse` is
    False. An lstat and a stat, no program run."""
    from scripts.infra.compose_plugin import plugin_problem

    if problem := plugin_problem():
        if refuse:
            raise StackError(problem)
        warn(problem)


def private_mode_problem(settings: Settings) -> str | None:
    """A sentence when other users may read the env file (it holds the passwords)."""
    try:
        mode = settings.env_file.stat().st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o077:
        return None
    shown = display_path(settings.env_file)
    return f"{shown} is readable by other users (mode {mode:04o}): run `chmod 600 {shown}`."


def write_unset_urls(settings: Settings, *, quiet: bool = False) -> Settings:
    """Write DATABASE_URL / REDIS_URL into the env file where it leaves them unset (empty, or
    with .env.example's placeholder password): the application reads them from there."""
    changes = {
        key: derive_url(settings, key, settings.file_values.get(key, ""))
        for key in URL_KEYS
        if url_unset(settings.file_values.get(key, ""))
    }
    if not changes:
        return settings
    shown = display_path(settings.env_file)
    try:
        envfile.update(settings.env_file, changes)
    except OSError as exc:
        warn(f"Could not write {enumerate_names(list(changes))} into {shown} ({exc.strerror}).")
        return settings
    if not quiet:
        warn(
            f"Wrote {enumerate_names(list(changes))} into {shown}, derived from the stack's "
            f"settings (the application reads {'them' if len(changes) > 1 else 'it'} there)."
        )
    return load()


def ensure_admin_password(settings: Settings) -> Settings:
    """Generate POSTGRES_ADMIN_PASSWORD into an env file from before the admin role."""
    if settings.postgres_admin_password:
        return settings
    envfile.update(settings.env_file, {ADMIN_PASSWORD_KEY: new_password()})
    warn(
        f"Generated POSTGRES_ADMIN_PASSWORD into {display_path(settings.env_file)}: the "
        "stack's superuser, for what the application's role may not do."
    )
    return load()


def url_sentence(settings: Settings, key: str, parts: list[str]) -> str:
    shown = display_path(settings.env_file)
    detail = ", ".join(_part_detail(settings, key, part) for part in parts)
    if parts == ["database"]:
        branch = settings.postgres_branch
        return (
            f"{key} in {shown} names another database than POSTGRES_BRANCH={branch} "
            f"({settings.postgres_db}): the application and the tasks would use different "
            f"data. Switch branches with `inv db.branch --switch {branch}`, which writes both."
        )
    outcome = (
        "the application's login would be refused"
        if set(parts) <= {"password", "user"}
        else "the application would reach another server"
    )
    return (
        f"{key} in {shown} disagrees with the stack's settings in its {detail}: {outcome}. "
        f"Set it to the stack's (`inv env --show-secrets` prints it), or empty it ({key}=) "
        "and the next task writes it."
    )


def _part_detail(settings: Settings, key: str, part: str) -> str:
    stack = {
        ("DATABASE_URL", "host"): settings.connect_host,
        ("DATABASE_URL", "port"): str(settings.postgres_port),
        ("DATABASE_URL", "user"): settings.postgres_user,
        ("DATABASE_URL", "database"): settings.postgres_db,
        ("REDIS_URL", "host"): settings.connect_host,
        ("REDIS_URL", "port"): str(settings.redis_port),
    }.get((key, part))
    return f"{part} (the stack's: {stack})" if stack else part


def check_urls(settings: Settings, *, refuse: bool, switching: bool = False) -> None:
    """Refuse (or warn about) application URLs that point elsewhere than the stack. A branch
    switch (`switching`) rewrites DATABASE_URL's database, so that one part may disagree."""
    sentences = [
        url_sentence(settings, key, parts)
        for key in URL_KEYS
        if (parts := url_disagreements(settings, key))
        and not (switching and key == "DATABASE_URL" and parts == ["database"])
    ]
    if refuse and sentences:
        raise StackError(" ".join(sentences) + " Nothing was changed.")
    for sentence in sentences:
        warn(sentence)


def placeholder_message(settings: Settings, keys: list[str]) -> str:
    shown = display_path(settings.env_file)
    names = enumerate_names(keys)
    verb = "are" if len(keys) > 1 else "is"
    return (
        f"{names} in {shown} {verb} still .env.example's placeholder {PLACEHOLDER_PASSWORD!r}: "
        f"run `inv init` to generate passwords (or set your own in {shown})."
    )


def environment_overrides(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The settings the process environment changes from what the env file says (secrets
    named, never shown), as one line; empty when there are none."""
    environ = os.environ if environ is None else environ
    shown = []
    for key, default in DEFAULTS.items():
        if key not in environ:
            continue
        in_file = settings.file_values.get(key, default or "")
        if environ[key] == in_file:
            continue
        if key in PASSWORD_KEYS:
            shown.append(f"{key} (differs)")
        elif key in URL_KEYS:
            shown.append(f"{key}={mask_url(environ[key])}")
        else:
            shown.append(f"{key}={environ[key]} (file: {in_file or 'unset'})")
    return ", ".join(shown)
