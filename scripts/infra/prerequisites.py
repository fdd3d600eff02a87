"""What each backend needs on the host, where it is, and how `inv setup` installs what is missing.

Native: PostgreSQL 15 server binaries, redis-server 7, and for the tools profile php with
pgsql plus adminer.php. Compose: a reachable Docker engine and Compose v2.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from scripts.errors import StackError
from scripts.infra import run
from scripts.infra.run import last_line

PG_MAJOR = 15
ADMINER_PACKAGE = "adminer"
_PG_BIN_CANDIDATES = (
    f"/usr/lib/postgresql/{PG_MAJOR}/bin",  # Debian, Ubuntu
    f"/usr/pgsql-{PG_MAJOR}/bin",  # RHEL and Fedora (PGDG)
    f"/opt/homebrew/opt/postgresql@{PG_MAJOR}/bin",  # macOS, Apple silicon
    f"/usr/local/opt/postgresql@{PG_MAJOR}/bin",  # macOS, Intel
)


@dataclass(frozen=True)
class Check:
    """One prerequisite: found (with what) or missing (with the packages that provide it)."""

    name: str
    found: str | None
    needed_for: str
    packages: dict[str, tuple[str, ...]] = field(default_factory=dict)  # manager -> packages
    problem: str = ""  # why it is unusable when found

    @property
    def ok(self) -> bool:
        return self.found is not None and not self.problem


def server_locale() -> str:
    """The locale initdb gives the native server: C.UTF-8 where it exists (Linux), else C
    (macOS has no C.UTF-8); the encoding is UTF8 either way."""
    import sys

    return "C" if sys.platform == "darwin" else "C.UTF-8"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ai-marketplace-stack"


def adminer_php() -> Path:
    return cache_dir() / "adminer.php"


def postgres_bindir() -> Path | None:
    """Directory holding PostgreSQL 15's initdb, postgres, psql, pg_dump."""
    candidates = [Path(p) for p in _PG_BIN_CANDIDATES]
    if found := shutil.which("initdb"):
        candidates.append(Path(found).resolve().parent)
    for directory in candidates:
        if not ((directory / "initdb").is_file() and (directory / "postgres").is_file()):
            continue
        if directory.parts[-2] == str(PG_MAJOR) or _major(directory / "postgres") == PG_MAJOR:
            return directory
    return None


def _major(binary: Path) -> int | None:
    out = run.run([str(binary), "--version"], timeout=10).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match[1]) if match else None


def _version(argv: list[str], pattern: str) -> str | None:
    out = run.run(argv, timeout=10)
    match = re.search(pattern, out.stdout + out.stderr)
    return match[1] if match else None


def native_checks(with_tools: bool) -> list[Check]:
    checks: list[Check] = []
    bindir = postgres_bindir()
    checks.append(
        Check(
            f"PostgreSQL {PG_MAJOR} server (initdb, postgres, psql)",
            str(bindir) if bindir else None,
            "postgres",
            {"apt": (f"postgresql-{PG_MAJOR}",), "brew": (f"postgresql@{PG_MAJOR}",)},
        )
    )
    redis = shutil.which("redis-server")
    redis_version = _version([redis, "--version"], r"v=(\d+\.\d+\.\d+)") if redis else None
    problem = ""
    if redis and (redis_version is None or int(redis_version.split(".")[0]) < 7):
        problem = f"redis-server {redis_version or '?'} is older than 7"
    checks.append(
        Check(
            "Redis 7 server (redis-server)",
            f"{redis} ({redis_version})" if redis else None,
            "redis",
            {"apt": ("redis-server",), "brew": ("redis",)},
            problem,
        )
    )
    if with_tools:
        php = shutil.which("php")
        modules = _version([php, "-m"], r"(?m)^(pgsql)$") if php else None
        checks.append(
            Check(
                "PHP CLI with the pgsql extension",
                php,
                "adminer",
                {"apt": ("php-cli", "php-pgsql"), "brew": ("php",)},
                "" if not php or modules else "php has no pgsql extension",
            )
        )
        page = adminer_php()
        checks.append(
            Check(
                "adminer.php (from Debian's adminer package)",
                str(page) if page.is_file() else None,
                "adminer",
                {"adminer.php": (ADMINER_PACKAGE,)},
            )
        )
    return checks


def compose_checks() -> list[Check]:
    from scripts.infra.compose_plugin import compose_version
    from scripts.infra.docker import engine_version

    docker = shutil.which("docker")
    engine = engine_version() if docker else None
    compose = compose_version() if docker else None
    return [
        Check("Docker CLI", docker, "compose", {"apt": ("docker.io",)}),
        Check(
            "Docker engine",
            engine,
            "compose",
            {},
            "" if engine or not docker else "no Docker engine answers (is dockerd running?)",
        ),
        Check("Docker Compose v2", compose, "compose", {}),
    ]


def install_commands(missing: list[Check]) -> list[list[str]]:
    """Commands that install what is missing with this machine's package manager.

    Empty when this machine cannot install them itself (no known package manager, or not
    root and no sudo).
    """
    apt = [pkg for check in missing for pkg in check.packages.get("apt", ())]
    commands: list[list[str]] = []
    privileged = os.geteuid() == 0 or shutil.which("sudo") is not None
    if apt and shutil.which("apt-get") and privileged:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        commands.append([*sudo, "apt-get", "update"])
        commands.append([*sudo, "apt-get", "install", "-y", "--no-install-recommends", *apt])
    elif apt:
        brew = [pkg for check in missing for pkg in check.packages.get("brew", ())]
        if brew and shutil.which("brew"):
            commands.append(["brew", "install", *brew])
    return commands


def install(missing: list[Check], *, yes: bool, again: str) -> None:
    """Install the packages behind `missing` with this machine's package manager.

    Asks first unless `yes`; without a terminal to ask, or where this machine cannot install
    (no package manager, no root or sudo), raises a StackError with the exact command.
    `again` is the command to run afterwards (e.g. "inv setup --yes").
    """
    from scripts.console import confirm, say

    packaged = [c for c in missing if "apt" in c.packages or "brew" in c.packages]
    commands = install_commands(packaged)
    if packaged and not commands:
        raise StackError(manual_instructions(packaged))
    if not commands:
        return
    names = ", ".join(c.name for c in packaged)
    shown = " && ".join(shlex.join(cmd) for cmd in commands)
    if not yes:
        answer = confirm(f"Install {names} with `{shown}`?")
        if answer is None:
            raise StackError(
                f"Missing {names}: run `{again}` to install with `{shown}`, or run that yourself."
            )
        if not answer:
            raise StackError(f"Nothing was installed. To install by hand: {shown}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in commands:
        say("info", f"Running: {shlex.join(command)}")
        result = run.run(command, env=env, capture=False)
        if result.returncode != 0:
            raise StackError(
                f"`{shlex.join(command)}` failed with exit code {result.returncode}: see its "
                f"output above, fix that, and run `{again}`."
            )


def manual_instructions(missing: list[Check]) -> str:
    names = ", ".join(check.name for check in missing)
    apt = " ".join(pkg for check in missing for pkg in check.packages.get("apt", ()))
    brew = " ".join(pkg for check in missing for pkg in check.packages.get("brew", ()))
    hints = []
    if apt:
        hints.append(f"Debian/Ubuntu: sudo apt-get install -y {apt}")
    if brew:
        hints.append(f"macOS: brew install {brew}")
    return f"Missing: {names}. Install it, then run this again. " + "; ".join(hints)


def fetch_adminer() -> Path:
    """Take adminer.php alone out of Debian's adminer package (apt verifies the download).

    `apt-get install adminer` would pull in apache2; the one compiled PHP file is all we serve.
    Records its sha256 beside it, and checks it on every later call.
    """
    target = adminer_php()
    digest_file = target.with_suffix(".php.sha256")
    if target.is_file() and not digest_file.is_file():
        # Saved by hand (where there is no apt-get): trust it now, notice changes later.
        digest_file.write_text(f"{_sha256(target)}  adminer.php\n")
        return target
    if target.is_file():
        if _sha256(target) == digest_file.read_text().split()[0]:
            return target
        target.unlink()  # changed since it was fetched: fetch again
    if not shutil.which("apt-get"):
        raise StackError(
            "adminer.php is missing and this machine has no apt-get: download Adminer 4.8.1 "
            f"from https://www.adminer.org/ and save it as {target}."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="adminer-") as tmp:
        Path(tmp).chmod(0o755)
        result = run.run(["apt-get", "download", ADMINER_PACKAGE], cwd=tmp)
        debs = list(Path(tmp).glob(f"{ADMINER_PACKAGE}_*.deb"))
        if result.returncode != 0 or not debs:
            raise StackError(
                "Could not download Debian's adminer package "
                f"({last_line(result.stderr, 'no package')}): run `apt-get update` and try again."
            )
        unpacked = run.run(["dpkg-deb", "-x", str(debs[0]), f"{tmp}/x"])
        page = Path(tmp) / "x/usr/share/adminer/adminer.php"
        if unpacked.returncode != 0 or not page.is_file():
            raise StackError(
                f"Debian's adminer package {debs[0].name} holds no adminer.php where expected "
                f"({last_line(unpacked.stderr, 'nothing unpacked')}): save Adminer 4.8.1 as "
                f"{target} by hand."
            )
        partial = target.with_suffix(".partial")
        shutil.copyfile(page, partial)
        partial.replace(target)
    digest_file.write_text(f"{_sha256(target)}  adminer.php\n")
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
