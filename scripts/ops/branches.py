"""Branches: a database per line of work, cloned from the current one (scripts.ops.copies).

The env file's POSTGRES_BRANCH names the current branch: every task acts on its database
(main's is POSTGRES_DB itself, another's <POSTGRES_DB>__<branch>), and the application's
DATABASE_URL is rewritten with it, so the two never disagree. scripts.ops.gitfollow switches
branches as git does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scripts import envfile, names
from scripts.errors import StackError, UsageError
from scripts.ops import copies, swap
from scripts.ops.copies import Announce

if TYPE_CHECKING:
    from scripts.settings import Settings


@dataclass(frozen=True)
class Branch:
    name: str
    database: str
    size: int
    current: bool


@dataclass(frozen=True)
class Switched:
    branch: Branch
    created_from: str | None  # the branch it was cloned from, when it was created now
    ended: int
    database_url: str  # masked


def check_name(settings: Settings, name: str) -> None:
    if bad := names.problem("branch", name):
        raise UsageError(bad)
    base = settings.postgres_base_db
    if long := names.too_long(base, name, names.branch_database(base, name)):
        raise UsageError(long)


def list_branches(settings: Settings) -> list[Branch]:
    base = settings.postgres_base_db
    with swap.admin(settings) as conn:
        rows = conn.execute(
            "SELECT datname, pg_database_size(oid) FROM pg_database ORDER BY datname"
        ).fetchall()
    found = []
    for database, size in rows:
        branch = names.branch_of(base, str(database))
        if branch is not None:
            found.append(
                Branch(branch, str(database), int(size), branch == settings.postgres_branch)
            )
    return sorted(found, key=lambda b: (b.name != names.MAIN, b.name))


def find(settings: Settings, name: str) -> Branch | None:
    check_name(settings, name)
    return next((b for b in list_branches(settings) if b.name == name), None)


def create(settings: Settings, name: str, *, announce: Announce) -> Switched:
    """Clone the current branch's database as `name`'s and make `name` current."""
    from scripts.ops import stack

    check_name(settings, name)
    target = names.branch_database(settings.postgres_base_db, name)
    with stack.locked(settings), swap.admin(settings) as conn:
        copies.tidy(conn, settings)
        if target in swap.databases(conn):
            raise StackError(
                f"Branch {name!r} exists already: switch to it with "
                f"`inv db.branch --switch {name}`, or choose another name."
            )
        partial, ended = copies.copy(conn, settings, settings.postgres_db, announce)
        copies.execute(conn, "ALTER DATABASE {} RENAME TO {}", partial, target)
    switched = switch(settings, name)
    return Switched(switched.branch, settings.postgres_branch, ended, switched.database_url)


def switch(settings: Settings, name: str) -> Switched:
    """Make `name` the current branch: POSTGRES_BRANCH and DATABASE_URL in the env file."""
    branch = find(settings, name)
    if branch is None:
        back = (
            " (POSTGRES_BRANCH names it: `inv db.branch --switch main` goes back to the "
            "stack's own first)"
            if name == settings.postgres_branch
            else ""
        )
        raise StackError(
            f"There is no branch {name!r}: `inv db.branch --list` shows the branches; "
            f"`inv db.branch {name}` creates it from the current one{back}."
        )
    url = make_current(settings, name)
    return Switched(dataclasses.replace(branch, current=True), None, 0, url)


def on_branch(settings: Settings, name: str) -> Settings:
    """`settings` as they are with `name` the current branch (the env file unchanged)."""
    database = names.branch_database(settings.postgres_base_db, name)
    return dataclasses.replace(settings, postgres_db=database, postgres_branch=name)


def make_current(settings: Settings, name: str) -> str:
    """Write POSTGRES_BRANCH and the DATABASE_URL that follows it into the env file; return
    the URL, masked."""
    from scripts.urls import derive_url, mask_url

    _check_not_overridden(settings)
    moved = on_branch(settings, name)
    url = derive_url(moved, "DATABASE_URL", settings.database_url.reveal())
    envfile.update(settings.env_file, {"POSTGRES_BRANCH": name, "DATABASE_URL": url})
    return mask_url(url)


def delete(settings: Settings, name: str) -> Branch:
    from scripts.ops import stack

    branch = find(settings, name)
    if branch is None:
        raise StackError(f"There is no branch {name!r}: `inv db.branch --list` shows them.")
    if name == names.MAIN:
        raise StackError("Branch main is the stack's own database (POSTGRES_DB): it stays.")
    if name == settings.postgres_branch:
        raise StackError(
            f"Branch {name!r} is the current one: switch to another first, e.g. "
            "`inv db.branch --switch main`."
        )
    with stack.locked(settings), swap.admin(settings) as conn:
        copies.drop(conn, branch.database)
    return branch


def _check_not_overridden(settings: Settings) -> None:
    import os

    for key in ("POSTGRES_BRANCH", "DATABASE_URL"):
        if key in os.environ:
            raise StackError(
                f"{key} is set in the environment, which wins over the env file a branch "
                f"switch writes: unset it (`unset {key}`) and run the command again."
            )
