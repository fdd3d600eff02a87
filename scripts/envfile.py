"""The env file's text: read as Docker Compose reads it, and written back keeping its comments.

Owns the format (KEY=VALUE, `export`, comments, quotes, ${VAR} interpolation, a leading BOM),
what a file says besides its values (keys set twice, lines that are no assignment), and
writing values into a file atomically, readable by its owner alone.

Why not python-dotenv: it reads `$VAR` and `$$` differently from Compose, which reads the same
file for the containers (tests/unit/test_unit_envfile.py compares all three on the same text).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scripts.console import display_path
from scripts.errors import StackError
from scripts.files import write_atomic

BOM = "\ufeff"
PLACEHOLDER_PASSWORD = "change-me"  # noqa: S105 - .env.example's passwords, that init replaces
_INTERPOLATION = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?-)?(?P<default>[^}]*)\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
# A quoted value, optionally followed by a comment: 'literal' or "with \" escapes".
_QUOTED = re.compile(r"""^(?:'(?P<single>[^']*)'|"(?P<double>(?:[^"\\]|\\.)*)")(?:\s+#.*)?$""")
LINE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<value>.*?)\s*$")
# Values written without quotes: nothing any reader could take for syntax.
_BARE = re.compile(r"[A-Za-z0-9_.,:/@%+=?&\[\]-]*")


@dataclass(frozen=True)
class EnvText:
    """What an env file says: its values, and what a reader should be told about it."""

    values: dict[str, str]
    duplicates: dict[str, list[int]] = field(default_factory=dict)  # key -> its line numbers
    invalid_lines: list[int] = field(default_factory=list)  # not KEY=VALUE (Compose refuses)
    bom: bool = False  # started with a UTF-8 byte-order mark (read past, as Compose does)

    def notes(self, shown: str) -> list[str]:
        """One sentence per thing worth a warning, each naming the fix."""
        notes = []
        if self.bom:
            notes.append(
                f"{shown} starts with a byte-order mark (read past, as Compose does; a shell's "
                "`. ./.env` reads it as part of the first key): save it as UTF-8 without BOM."
            )
        for key, lines in self.duplicates.items():
            where = ", ".join(map(str, lines))
            notes.append(
                f"{key} is set {len(lines)} times in {shown} (lines {where}); the last one counts: "
                "delete the others."
            )
        return notes


def parse(text: str, lookup: Mapping[str, str] | None = None) -> EnvText:
    """Read env-file text the way Docker Compose does.

    KEY=VALUE lines, `export` prefix, # comments, single quotes (literal), double quotes
    (escapes), and ${VAR} / ${VAR:-default} / ${VAR-default} / $VAR interpolation from
    `lookup` (the process environment) first, then from earlier keys. The last of a key set
    twice wins.
    """
    bom = text.startswith(BOM)
    values: dict[str, str] = {}
    seen: dict[str, list[int]] = {}
    invalid: list[int] = []
    outer = {} if lookup is None else lookup
    for number, raw in enumerate(text.removeprefix(BOM).splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = LINE.match(raw)
        if match is None:
            invalid.append(number)
            continue
        key = match["key"]
        seen.setdefault(key, []).append(number)
        values[key] = _value(match["value"], values, outer)
    duplicates = {key: lines for key, lines in seen.items() if len(lines) > 1}
    return EnvText(values, duplicates, invalid, bom)


def parse_values(text: str, lookup: Mapping[str, str] | None = None) -> dict[str, str]:
    return parse(text, lookup).values


def _value(value: str, earlier: Mapping[str, str], outer: Mapping[str, str]) -> str:
    quoted = _QUOTED.match(value)
    if quoted and quoted["single"] is not None:
        return quoted["single"]
    if quoted and quoted["double"] is not None:
        value = _unescape(quoted["double"])
    else:
        value = re.sub(r"\s+#.*$", "", value)  # trailing comment on an unquoted value
    return _interpolate(value, earlier, outer)


def _unescape(value: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m[1], "\\" + m[1]), value)


def _interpolate(value: str, earlier: Mapping[str, str], outer: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        found = outer.get(name, earlier.get(name))
        if match["op"] == ":-" and not found:
            return match["default"]
        if match["op"] == "-" and found is None:
            return match["default"]
        return found or ""

    parts = value.split("$$")  # $$ is a literal dollar sign
    return "$".join(_INTERPOLATION.sub(replace, part) for part in parts)


def read_text(path: Path) -> str:
    """The file's text; a missing, unreadable or binary file is one sentence with the fix."""
    shown = display_path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackError(
            f"No env file at {shown}: run `inv init` to create one from .env.example."
        ) from None
    except IsADirectoryError:
        raise StackError(
            f"{shown} is a directory, not an env file: move it away, then run `inv init`."
        ) from None
    except PermissionError:
        raise StackError(
            f"Cannot read {shown}: make it readable by you (chmod 600 {path})."
        ) from None
    except UnicodeDecodeError:
        raise StackError(f"{shown} is not UTF-8 text: save it as UTF-8.") from None
    except OSError as exc:
        raise StackError(f"Cannot read {shown} ({exc.strerror}): fix that and try again.") from None


def read(path: Path, lookup: Mapping[str, str] | None = None) -> EnvText:
    return parse(read_text(path), os.environ if lookup is None else lookup)


def quote(value: str) -> str:
    """`value` as an env-file value that Compose, python-dotenv and this module read back
    unchanged (single quotes where possible: literal for every reader)."""
    if _BARE.fullmatch(value):
        return value
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return '"' + escaped.replace("\n", "\\n") + '"'


def update(path: Path, changes: Mapping[str, str], *, mode: int | None = None) -> None:
    """Set keys in place, keeping comments, order and the other lines; append keys not there.

    Written atomically (a temporary file renamed over it), without a byte-order mark, with
    `mode` or else the file's current one.
    """
    text = read_text(path).removeprefix(BOM)
    lines = text.splitlines()
    pending = dict(changes)
    for index, line in enumerate(lines):
        match = LINE.match(line)
        if match and not line.lstrip().startswith("#") and match["key"] in changes:
            key = match["key"]
            lines[index] = f"{key}={quote(changes[key])}"
            pending.pop(key, None)
    lines += [f"{key}={quote(value)}" for key, value in pending.items()]
    write(path, "\n".join(lines) + "\n", mode=path.stat().st_mode & 0o777 if mode is None else mode)


def write(path: Path, text: str, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write `text` as `path` in one step: readers see the old file or the new one, never
    half of it. `exclusive`: refuse (FileExistsError) when `path` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        return
    write_atomic(path, text, mode=mode)
