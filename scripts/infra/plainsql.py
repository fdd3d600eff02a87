"""pg_dump's plain SQL read as a stream: what a restore must know about a file before it
runs it, and the ownership statements it leaves out when it runs it as a role of its own.

The bulk of a dump is COPY data, which passes through in chunks (found by its terminator,
not line by line); only the statements between are looked at one line at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The line pg_dump ends every complete plain-SQL dump with.
DUMP_COMPLETE = b"-- PostgreSQL database dump complete"
# psql meta-commands a pg_dump plain file may hold; any other (\connect, \!, \o, ...) could act
# outside the scratch database.
ALLOWED_META = (b"\\restrict", b"\\unrestrict")
_COPY_END = b"\n\\.\n"
_NAME = rb'(?:"(?:[^"]|"")+"|\w+)'
_CREATE_TABLE = re.compile(
    rb"^CREATE (?:UNLOGGED )?TABLE (" + _NAME + rb"(?:\." + _NAME + rb")?) \("
)
# pg_dump's "ALTER <kind> <name> OWNER TO <role>;", one per line (what --no-owner omits).
_OWNER = re.compile(rb"^ALTER [A-Z ]+ .+ OWNER TO [^;]+;\r?\n?$")
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass
class Scan:
    """Feed a dump through it in chunks; `feed` returns what to pass on to psql (dropped
    statements as empty lines)."""

    drop_owners: bool = False
    tables: set[str] = field(default_factory=set)
    complete: bool = False  # the last statement line seen is pg_dump's closing line
    meta: tuple[str, int] | None = None  # the first forbidden psql command, and its line
    line: int = 0  # lines read so far
    _buffer: bytes = b""
    _in_copy: bool = False
    _dollar: bytes | None = None  # the open dollar quote's tag, inside a function body

    def feed(self, chunk: bytes) -> bytes:
        data = self._buffer + chunk
        out: list[bytes] = []
        pos = 0
        while pos < len(data):
            if self._in_copy:
                if data.startswith(b"\\.\n", pos):  # the block ends on its first line
                    end = pos + 3
                else:
                    found = data.find(_COPY_END, pos)
                    if found < 0:
                        keep = max(pos, len(data) - len(_COPY_END))  # a terminator may straddle
                        out.append(data[pos:keep])
                        self.line += data.count(b"\n", pos, keep)
                        pos = keep
                        break
                    end = found + len(_COPY_END)
                out.append(data[pos:end])
                self.line += data.count(b"\n", pos, end)
                pos = end
                self._in_copy = False
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                break
            line = data[pos : newline + 1]
            pos = newline + 1
            self.line += 1
            # A dropped line leaves an empty one: psql's line numbers stay the file's.
            out.append(line if self._statement(line) else b"\n")
        self._buffer = data[pos:]
        return b"".join(out)

    def close(self) -> bytes:
        """The rest: a last line without a newline."""
        rest, self._buffer = self._buffer, b""
        if not rest:
            return b""
        if self._in_copy:
            return rest
        self.line += 1
        return rest if self._statement(rest) else b""

    def _statement(self, line: bytes) -> bool:
        """Look at one line outside COPY data; False drops it."""
        in_body = self._dollar is not None  # inside a function body: its text, not statements
        if in_body or b"$" in line:
            self._track_dollars(line)
        if in_body:
            return True
        stripped = line.strip()
        if not stripped:
            return True
        # Only comments and \unrestrict (pg_dump 15.14+) may follow the closing line.
        self.complete = stripped == DUMP_COMPLETE or (
            self.complete and stripped.startswith((b"--", b"\\unrestrict"))
        )
        if line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            self._in_copy = True
        elif line.startswith(b"\\"):
            if not line.startswith(ALLOWED_META) and self.meta is None:
                self.meta = (line.split()[0].decode("utf-8", "replace"), self.line)
        elif created := _CREATE_TABLE.match(line):
            parts = [p.strip('"').replace('""', '"') for p in _split_name(created[1])]
            name = ".".join(parts)
            self.tables.add(parts[-1] if parts[:-1] in ([], ["public"]) else name)
        elif self.drop_owners and _OWNER.match(line):
            return False
        return True

    def _track_dollars(self, line: bytes) -> None:
        for tag in _DOLLAR_TAG.findall(line):
            if self._dollar is None:
                self._dollar = tag
            elif tag == self._dollar:
                self._dollar = None


def _split_name(name: bytes) -> list[str]:
    """schema.table (either quoted, holding dots or quotes) -> its parts."""
    text = name.decode("utf-8", "replace")
    return [m[0] for m in re.finditer(r'"(?:[^"]|"")+"|\w+', text)]
