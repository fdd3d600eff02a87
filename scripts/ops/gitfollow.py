"""A database branch per git branch: the post-checkout hook that `inv db.branch --follow-git`
installs, and what it runs on each checkout.

The git branch checked out when following starts keeps the current database branch; every
other git branch gets a database branch of its own, cloned on its first checkout from the one
current then (the branch it came from). The pairs are kept in the state dir.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import names
from scripts.errors import StackError
from scripts.infra import run

if TYPE_CHECKING:
    from scripts.ops.copies import Announce
    from scripts.settings import Settings

MARK = "# ai-marketplace-stack: database branches follow git branches"


@dataclass(frozen=True)
class Followed:
    hook: Path
    git_branch: str | None
    branch: str


def _git(repo: Path, *args: str) -> run.Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return run.run(["git", "-C", str(repo), *args], env=env, timeout=30)


def _hook_path(repo: Path) -> Path:
    result = _git(repo, "rev-parse", "--path-format=absolute", "--git-path", "hooks/post-checkout")
    if result.returncode == run.NOT_FOUND:
        raise StackError("git is not installed: install it (`apt-get install git`) first.")
    if not result.ok:
        raise StackError(f"{repo} is not a git repository ({result.last_line()}): give --repo.")
    return Path(result.stdout.strip())


def current_git_branch(repo: Path) -> str | None:
    result = _git(repo, "symbolic-ref", "--short", "-q", "HEAD")
    return result.stdout.strip() or None if result.ok else None


def state_path(settings: Settings) -> Path:
    return settings.state_dir / "git-branches.json"


def _pairs(settings: Settings) -> dict[str, str]:
    try:
        data = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    pairs = data.get("branches", {}) if isinstance(data, dict) else {}
    return {str(k): str(v) for k, v in pairs.items()}


def _save_pairs(settings: Settings, repo: Path, pairs: dict[str, str]) -> None:
    from scripts.files import write_atomic

    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(state_path(settings), json.dumps({"repo": str(repo), "branches": pairs}, indent=2))


def _hook_text(settings: Settings, repo: Path) -> str:
    q = shlex.quote
    command = (
        f"STACK_ENV_FILE={q(str(settings.env_file))} {q(sys.executable)} -m invoke "
        f"db.branch --git-checkout {q(str(repo))}"
    )
    return (
        "#!/bin/sh\n"
        f"{MARK}\n"
        "# (`inv db.branch --follow-git`); `inv db.branch --unfollow-git` removes this hook.\n"
        '[ "$3" = 1 ] || exit 0  # a file checkout, not a branch checkout\n'
        f"cd {q(str(settings.root))} || exit 0\n"
        f"{command} || echo 'The database branch did not follow this checkout (see above).' >&2\n"
        "exit 0\n"
    )


def follow(settings: Settings, repo: Path) -> Followed:
    hook = _hook_path(repo)
    if hook.exists() and MARK not in hook.read_text(errors="replace"):
        raise StackError(
            f"{hook} is a post-checkout hook of its own: add the line from "
            "`inv db.branch --follow-git` to it by hand, or move it away and run this again."
        )
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(_hook_text(settings, repo))
    hook.chmod(0o755)
    git_branch = current_git_branch(repo)
    pairs = _pairs(settings)
    if git_branch:
        pairs[git_branch] = settings.postgres_branch
    _save_pairs(settings, repo, pairs)
    return Followed(hook, git_branch, settings.postgres_branch)


def unfollow(settings: Settings, repo: Path) -> Path | None:
    hook = _hook_path(repo)
    state_path(settings).unlink(missing_ok=True)
    if hook.exists() and MARK in hook.read_text(errors="replace"):
        hook.unlink()
        return hook
    return None


def branch_for(git_branch: str, pairs: dict[str, str]) -> str:
    """The database branch of a git branch: its pair, else one named after it that no other
    git branch has (and never main, which is POSTGRES_DB)."""
    if git_branch in pairs:
        return pairs[git_branch]
    name = names.from_git(git_branch)
    taken = set(pairs.values()) | {names.MAIN}
    if name in taken:
        name = names.from_git(git_branch + "\0")  # the hashed form, never equal to a plain one
    return name


def on_checkout(settings: Settings, repo: Path, announce: Announce) -> str:
    """What the hook runs: switch to (or create) the database branch of the git branch now
    checked out; return one line for the user."""
    from scripts.ops import branches

    git_branch = current_git_branch(repo)
    if git_branch is None:
        return f"Detached HEAD: the database stays on branch {settings.postgres_branch!r}."
    pairs = _pairs(settings)
    name = branch_for(git_branch, pairs)
    pairs[git_branch] = name
    if name == settings.postgres_branch:
        _save_pairs(settings, repo, pairs)
        return f"git {git_branch} → database branch {name!r} (current already)."
    if branches.find(settings, name) is None:
        done = branches.create(settings, name, announce=announce)
        line = (
            f"git {git_branch} → new database branch {name!r} ({done.branch.database}), "
            f"cloned from {settings.postgres_branch!r}."
        )
    else:
        done = branches.switch(settings, name)
        line = f"git {git_branch} → database branch {name!r} ({done.branch.database})."
    _save_pairs(settings, repo, pairs)
    return line
