"""Names of branches and snapshots, and the PostgreSQL databases that hold them.

All of them live in the stack's server beside POSTGRES_DB, so their names are built from it
with "__" as the separator; a name itself may not hold "__", which keeps the kinds (branch,
snapshot, a snapshot's spare copy, a copy being made) from ever meaning the same database.
"""

from __future__ import annotations

import hashlib
import re

MAIN = "main"  # the branch whose database is POSTGRES_DB itself
NAME = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
MAX_NAME = 30
SNAPSHOT_MARK = "__snapshot__"
PARTIAL_MARK = "__snapshotting__"  # a snapshot not complete yet: never listed as one


def problem(kind: str, name: str) -> str | None:
    """One sentence when `name` cannot name a `kind` ("branch", "snapshot"), else None."""
    if not NAME.match(name) or len(name) > MAX_NAME:
        shown = name if len(name) <= 40 else name[:37] + "..."
        return (
            f"{shown!r} is not a {kind} name: use 1 to {MAX_NAME} lowercase letters and digits, "
            "single '-' or '_' between them (e.g. before-tags)."
        )
    return None


def branch_database(base: str, branch: str) -> str:
    """The database of `branch`: POSTGRES_DB itself for main."""
    return base if branch == MAIN else f"{base}__{branch}"


def branch_of(base: str, database: str) -> str | None:
    """The branch whose database `database` is, or None when it is none of the stack's."""
    if database == base:
        return MAIN
    prefix = f"{base}__"
    rest = database.removeprefix(prefix)
    if rest != database and NAME.match(rest):
        return rest
    return None


def snapshot_database(base: str, name: str) -> str:
    return f"{base}{SNAPSHOT_MARK}{name}"


def snapshot_of(base: str, database: str) -> str | None:
    rest = database.removeprefix(f"{base}{SNAPSHOT_MARK}")
    return rest if rest != database and NAME.match(rest) else None


def partial_database(base: str, stamp: str) -> str:
    return f"{base}{PARTIAL_MARK}{stamp}"


def is_partial(base: str, database: str) -> bool:
    return database.startswith(f"{base}{PARTIAL_MARK}")


def too_long(base: str, name: str, database: str) -> str | None:
    """A sentence when the database of `name`, built from POSTGRES_DB, passes PostgreSQL's
    63-byte limit on names."""
    size = len(database.encode())
    if size <= 63:
        return None
    room = 63 - (size - len(name.encode()))
    return (
        f"{name!r} makes the database name {database!r} longer than PostgreSQL's 63 bytes: "
        f"with POSTGRES_DB={base}, use at most {max(room, 0)} characters."
    )


def from_git(branch: str) -> str:
    """A branch name for a git branch: lowercase, other characters as '-', and when that
    changed anything, a short hash of the git name, so feature/x and feature-x never meet."""
    plain = re.sub(r"[^a-z0-9]+", "-", branch.lower()).strip("-") or "branch"
    if plain == branch and len(plain) <= MAX_NAME:
        return plain
    digest = hashlib.sha1(branch.encode(), usedforsecurity=False).hexdigest()[:6]
    return f"{plain[: MAX_NAME - 7].rstrip('-')}-{digest}"


SPARE_MARK = "__spare__"


def spare_database(base: str, name: str) -> str:
    """A ready copy of snapshot `name` (scripts.ops.spares), never listed as a snapshot."""
    return f"{base}{SPARE_MARK}{name}"


def spare_of(base: str, database: str) -> str | None:
    rest = database.removeprefix(f"{base}{SPARE_MARK}")
    return rest if rest != database and NAME.match(rest) else None
