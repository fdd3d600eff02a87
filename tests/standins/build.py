"""TEST INFRASTRUCTURE: builds the local stand-ins for postgres:15, redis:7 and adminer:4.8.1.

No image registry is reachable on this project's CI and dev machines, so the unmodified
docker-compose.yml runs on images built here from Debian 12 packages (see README.md). An
image is rebuilt only when its recipe changed: the sha256 of the files in its directory and
of the base image's id, kept in the image's LABEL org.ai-marketplace.standin-recipe.

    python -m tests.standins.build [--force] [--force-base] [--network auto|default|host] [NAME...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
LABEL = "org.ai-marketplace.standin-recipe"
BASE_TAG = "aim-standin-base:bookworm"
SUITE = "bookworm"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
FALLBACK_SECURITY = "http://deb.debian.org/debian-security"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
# Stand-in directory -> the compose variable whose default names the official image.
STANDINS = {"postgres": "POSTGRES_IMAGE", "redis": "REDIS_IMAGE", "adminer": "ADMINER_IMAGE"}


class BuildError(RuntimeError):
    """A stand-in could not be built; the message names the cause and the fix."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one image."""

    tag: str
    action: str  # "reused", "built" or "left alone"
    seconds: float
    recipe: str

    def line(self) -> str:
        if self.action == "built":
            return f"{self.tag}: built in {self.seconds:.1f} s (recipe {self.recipe[:12]})"
        if self.action == "reused":
            return f"{self.tag}: reused (recipe {self.recipe[:12]})"
        if self.action == "pulled":
            return f"{self.tag}: pulled the official image (no stand-in needed)"
        return f"{self.tag}: left alone (not a stand-in; --force replaces it)"


@dataclass(frozen=True)
class AptSource:
    """One deb822 stanza: a mirror URI with its suites."""

    uri: str
    suites: tuple[str, ...]


# --------------------------------------------------------------------------- docker


def _docker(*args: str, check: bool = True, timeout: float | None = None) -> str:
    try:
        result = subprocess.run(
            ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout
        )
    except FileNotFoundError:
        raise BuildError(
            "The docker CLI is not on PATH: install it (scripts.infra.docker.ensure_engine)."
        ) from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise BuildError(
            f"`docker {' '.join(args[:2])}` failed: {detail[-1] if detail else result.returncode}"
        )
    return result.stdout


def _inspect(tag: str) -> tuple[str, str | None] | None:
    """(image id, recipe label or None) of `tag`, or None when there is no such image."""
    result = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return None
    try:
        image = json.loads(result.stdout)[0]
    except (ValueError, IndexError):
        return None
    # An imported image without labels has "Config": null or "Labels": null.
    labels = (image.get("Config") or {}).get("Labels") or {}
    label = labels.get(LABEL)
    return str(image["Id"]), (str(label) if label else None)


def _remove_old(previous: tuple[str, str | None] | None, tag: str) -> None:
    """Drop our previous build of `tag` once the new one has the tag (saves disk).

    An image without our label (a real official one replaced with --force) is never removed.
    """
    if previous is None or previous[1] is None:
        return
    image_id = previous[0]
    now = _inspect(tag)
    if now is not None and now[0] != image_id:
        subprocess.run(["docker", "image", "rm", image_id], capture_output=True, check=False)


def _engine_check() -> None:
    result = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise BuildError(
            "No Docker engine answers: start one first "
            "(python -c 'from scripts.infra.docker import ensure_engine; "
            "ensure_engine(yes=True)')."
        )


# --------------------------------------------------------------------------- recipes


def official_tags(compose_file: Path = COMPOSE_FILE) -> dict[str, str]:
    """The default image of each service in docker-compose.yml, e.g. {"redis": "redis:7"}."""
    text = compose_file.read_text()
    tags: dict[str, str] = {}
    for name, variable in STANDINS.items():
        match = re.search(r"\$\{" + variable + r":-([^}]+)\}", text)
        if match is None:
            raise BuildError(f"{compose_file} has no ${{{variable}:-...}} default image.")
        tags[name] = match[1].strip()
    return tags


def recipe_digest(directory: Path, *extra: str) -> str:
    """sha256 over every file in `directory` (path, executable bit, content) and `extra`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
        digest.update(path.read_bytes() + b"\0")
    for item in extra:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()


def _deb822_stanzas(text: str) -> Iterable[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in block.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields:
            yield fields


def _from_deb822(text: str, suite: str) -> list[AptSource]:
    found = []
    for fields in _deb822_stanzas(text):
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "main" not in fields.get("components", "").split():
            continue
        suites = tuple(s for s in fields.get("suites", "").split() if _in_suite(s, suite))
        if suites:
            uris = fields.get("uris", "").split()
            found += [AptSource(uri.rstrip("/"), suites) for uri in uris]
    return found


def _from_one_line(text: str, suite: str) -> list[AptSource]:
    found = []
    for raw in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", raw.split("#", 1)[0]).split()  # drop [options]
        is_deb = len(words) >= 4 and words[0] == "deb"
        if is_deb and _in_suite(words[2], suite) and "main" in words[3:]:
            found.append(AptSource(words[1].rstrip("/"), (words[2],)))
    return found


def _in_suite(name: str, suite: str) -> bool:
    return name == suite or name.startswith(suite + "-")


def host_apt_sources(suite: str = SUITE) -> list[AptSource]:
    """The host's enabled Debian `deb` sources for `suite` (and suite-updates, -security)."""
    files: list[Path] = []
    for location in APT_SOURCES:
        if location.is_file():
            files.append(location)
        elif location.is_dir():
            files += sorted(p for p in location.iterdir() if p.suffix in (".list", ".sources"))
    found: list[AptSource] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        parse = _from_deb822 if path.suffix == ".sources" else _from_one_line
        found += parse(text, suite)
    return found


def base_sources(suite: str = SUITE) -> tuple[str, str]:
    """(debootstrap mirror, deb822 sources text for the image), from the host's apt sources.

    STANDIN_DEBIAN_MIRROR overrides the mirror (security updates then come from it too).
    """
    override = os.environ.get("STANDIN_DEBIAN_MIRROR", "").strip().rstrip("/")
    sources = [AptSource(override, (suite, f"{suite}-updates"))] if override else []
    sources = sources or host_apt_sources(suite)
    if not sources:
        sources = [
            AptSource(FALLBACK_MIRROR, (suite, f"{suite}-updates")),
            AptSource(FALLBACK_SECURITY, (f"{suite}-security",)),
        ]
    mirror = next((s.uri for s in sources if suite in s.suites), sources[0].uri)
    merged: dict[str, list[str]] = {}
    for source in sources:
        suites = merged.setdefault(source.uri, [])
        suites += [s for s in source.suites if s not in suites]
    stanzas = [
        f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suites)}\nComponents: main\n"
        f"Signed-By: {KEYRING}\n"
        for uri, suites in merged.items()
    ]
    return mirror, "\n".join(stanzas)


# --------------------------------------------------------------------------- base


def _ensure_debootstrap() -> None:
    if shutil.which("debootstrap"):
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BuildError(
            "debootstrap is missing: as root, run "
            "`apt-get install -y --no-install-recommends debootstrap` and try again."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise BuildError(f"`{' '.join(argv)}` failed: {detail[-1] if detail else '?'}")


def build_base(*, force: bool = False, tag: str = BASE_TAG) -> Outcome:
    """The Debian 12 minbase image every stand-in starts FROM (debootstrap + docker import)."""
    mirror, sources = base_sources()
    recipe = recipe_digest(HERE / "base", SUITE, mirror, sources)
    existing = _inspect(tag)
    if existing is not None and existing[1] == recipe and not force:
        return Outcome(tag, "reused", 0.0, recipe)
    if os.geteuid() != 0:
        raise BuildError(f"Making {tag} runs debootstrap, which needs root: run this as root.")
    _ensure_debootstrap()
    began = time.monotonic()
    with tempfile.NamedTemporaryFile("w", suffix=".sources", delete=False) as handle:
        handle.write(sources)
    try:
        result = subprocess.run(
            [
                "sh",
                str(HERE / "base" / "make-base.sh"),
                tag,
                mirror,
                handle.name,
                f"{LABEL}={recipe}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        Path(handle.name).unlink()
    if result.returncode != 0:
        detail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
        raise BuildError(
            f"Making the base image {tag} from {mirror} failed; set STANDIN_DEBIAN_MIRROR to "
            f"a reachable Debian mirror if that one is not:\n{detail}"
        )
    _remove_old(existing, tag)
    return Outcome(tag, "built", time.monotonic() - began, recipe)


# --------------------------------------------------------------------------- stand-ins


def mirror_hosts() -> list[str]:
    """--add-host options pinning each mirror host to the address this host resolves it to.

    The host may resolve its mirror through /etc/hosts, which build containers do not see.
    """
    _, sources = base_sources()
    options = []
    for uri in re.findall(r"^URIs: (.+)$", sources, flags=re.MULTILINE):
        host = urlsplit(uri).hostname
        if not host or re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host):
            continue
        try:
            address = socket.gethostbyname(host)
        except OSError:
            continue
        option = ["--add-host", f"{host}:{address}"]
        if option[1] not in options:
            options += option
    return options


def build_network(base_tag: str = BASE_TAG) -> str:
    """The build network: "default" (bridge) when it reaches the apt mirror, else "host".

    STANDIN_BUILD_NETWORK=default|host skips the probe.
    """
    chosen = os.environ.get("STANDIN_BUILD_NETWORK", "").strip()
    if chosen in ("default", "host"):
        return chosen
    mirror, _ = base_sources()
    parts = urlsplit(mirror)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    probe = f"exec 3<>/dev/tcp/{parts.hostname}/{port}"
    argv = ["docker", "run", "--rm", "--network", "bridge", *mirror_hosts()]
    try:
        ok = subprocess.run(
            [*argv, base_tag, "timeout", "10", "bash", "-c", probe],
            capture_output=True,
            check=False,
            timeout=60,
        ).returncode
    except subprocess.TimeoutExpired:
        ok = 1
    return "default" if ok == 0 else "host"


def build_standin(
    name: str, tag: str, *, base_id: str, network: str, force: bool = False
) -> Outcome:
    """Build tests/standins/NAME as `tag` unless an image with the same recipe has that tag.

    `base_id` (the id of BASE_TAG) is part of the recipe: a new base rebuilds every stand-in.
    """
    directory = HERE / name
    recipe = recipe_digest(directory, f"base={base_id}")
    existing = _inspect(tag)
    if existing is not None and existing[1] is None and not force:
        return Outcome(tag, "left alone", 0.0, recipe)  # e.g. the real official image
    if existing is not None and existing[1] == recipe and not force:
        return Outcome(tag, "reused", 0.0, recipe)
    argv = [
        "docker",
        "build",
        "--tag",
        tag,
        "--label",
        f"{LABEL}={recipe}",
        "--build-arg",
        f"BASE={BASE_TAG}",
        "--network",
        network,
    ]
    if network == "default":
        argv += mirror_hosts()
    began = time.monotonic()
    result = subprocess.run([*argv, str(directory)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise BuildError(
            f"Building {tag} from {directory} failed; fix the recipe (or the mirror, see "
            f"STANDIN_BUILD_NETWORK in README.md):\n{detail}"
        )
    _remove_old(existing, tag)
    return Outcome(tag, "built", time.monotonic() - began, recipe)


def build_all(
    names: Sequence[str] = tuple(STANDINS),
    *,
    force: bool = False,
    force_base: bool = False,
    network: str = "auto",
    report: bool = True,
) -> list[Outcome]:
    """Build (or reuse) the base and the named stand-ins; print one line per image.

    `force` rebuilds the named stand-ins, `force_base` remakes the base (and so all of them).
    """
    _engine_check()
    tags = official_tags()
    for name in names:
        if name not in STANDINS:
            raise BuildError(f"Unknown stand-in {name!r}: choose from {', '.join(STANDINS)}.")
    outcomes: list[Outcome] = []
    to_build = []
    for name in names:
        # The real image wins: one already here (unlabelled) is left alone, and a missing one
        # is pulled when a registry answers. Stand-ins only fill what neither provides.
        pulled = not force and _inspect(tags[name]) is None and _pull(tags[name])
        if pulled:
            outcomes.append(Outcome(tags[name], "pulled", 0.0, ""))
        else:
            to_build.append(name)
    if to_build:
        outcomes.append(build_base(force=force_base))
    base = _inspect(BASE_TAG) if to_build else None
    if to_build and base is None:
        raise BuildError(f"The base image {BASE_TAG} vanished right after it was made.")
    chosen: str | None = None if network == "auto" else network
    for name in to_build:
        assert base is not None
        tag = tags[name]
        recipe = recipe_digest(HERE / name, f"base={base[0]}")
        existing = _inspect(tag)
        needs_build = force or existing is None or existing[1] not in (None, recipe)
        if chosen is None and needs_build:
            chosen = build_network()
        outcomes.append(
            build_standin(name, tag, base_id=base[0], network=chosen or "default", force=force)
        )
    if report:
        for outcome in outcomes:
            print(outcome.line(), flush=True)
    return outcomes


def _pull(tag: str) -> bool:
    """Whether `docker pull` fetched the real image (no registry answers in CI: fast no)."""
    try:
        result = subprocess.run(
            ["docker", "pull", "--quiet", tag], capture_output=True, check=False, timeout=300
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.standins.build",
        description="Build the local stand-in images (test infrastructure, see README.md).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(STANDINS))
    parser.add_argument(
        "--force", action="store_true", help="rebuild the named stand-ins even when unchanged"
    )
    parser.add_argument(
        "--force-base", action="store_true", help="remake the base image too (slow: debootstrap)"
    )
    parser.add_argument(
        "--network",
        choices=("auto", "default", "host"),
        default=os.environ.get("STANDIN_BUILD_NETWORK", "auto") or "auto",
        help="network of the build containers (auto: bridge if it reaches the mirror)",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    try:
        build_all(
            args.names or tuple(STANDINS),
            force=args.force,
            force_base=args.force_base,
            network=args.network,
        )
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"stand-ins ready in {time.monotonic() - began:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
