"""scripts/infra/plainsql.py: pg_dump's plain SQL scanned as a stream, in chunks of any size."""

from __future__ import annotations

import pytest

from scripts.infra.plainsql import Scan

DUMP = b"""\
--
-- PostgreSQL database dump
--

\\restrict abc123

SET statement_timeout = 0;
CREATE TABLE public.users (
    id integer NOT NULL,
    note text
);
ALTER TABLE public.users OWNER TO marketplace;
CREATE UNLOGGED TABLE "Odd"."Mixed Case" (
    id integer
);
CREATE FUNCTION public.f() RETURNS void
    LANGUAGE plpgsql
    AS $_$
BEGIN
ALTER TABLE public.users OWNER TO someone_else;
END
$_$;
ALTER FUNCTION public.f() OWNER TO marketplace;
COPY public.users (id, note) FROM stdin;
1\tALTER TABLE public.users OWNER TO data;
2\t\\\\connect looks like a meta-command
\\.
COPY public.empty (id) FROM stdin;
\\.

--
-- PostgreSQL database dump complete
--

\\unrestrict abc123

"""


def scan_in_chunks(data: bytes, size: int, *, drop_owners: bool = False) -> tuple[Scan, bytes]:
    scan = Scan(drop_owners=drop_owners)
    out = b"".join(scan.feed(data[i : i + size]) for i in range(0, len(data), size))
    return scan, out + scan.close()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_a_complete_dump_is_read_the_same_in_chunks_of_any_size(size: int) -> None:
    scan, out = scan_in_chunks(DUMP, size)
    assert out == DUMP
    assert scan.complete
    assert scan.meta is None
    assert scan.tables == {"users", "Odd.Mixed Case"}
    assert scan.line == DUMP.count(b"\n")


@pytest.mark.parametrize("size", [1, 5, 1 << 20])
def test_ownership_statements_are_blanked_but_not_in_data_or_function_bodies(size: int) -> None:
    _, out = scan_in_chunks(DUMP, size, drop_owners=True)
    lines = out.split(b"\n")
    assert len(lines) == len(DUMP.split(b"\n")), "line numbers must stay the file's"
    assert b"ALTER TABLE public.users OWNER TO marketplace;" not in lines
    assert b"ALTER FUNCTION public.f() OWNER TO marketplace;" not in lines
    assert b"ALTER TABLE public.users OWNER TO someone_else;" in lines  # a function's text
    assert b"1\tALTER TABLE public.users OWNER TO data;" in lines  # a row of data


@pytest.mark.parametrize(
    "cut", [b"CREATE FUNCTION", b"COPY public.empty", b"\n--\n-- PostgreSQL database dump complete"]
)
def test_a_dump_cut_short_anywhere_is_not_complete(cut: bytes) -> None:
    scan, _ = scan_in_chunks(DUMP[: DUMP.index(cut)], 4096)
    assert not scan.complete


def test_a_statement_after_the_closing_line_makes_it_incomplete() -> None:
    scan, _ = scan_in_chunks(DUMP + b"DROP TABLE public.users;\n", 4096)
    assert not scan.complete


def test_a_psql_meta_command_is_found_with_its_line_but_not_in_copy_data() -> None:
    scan, _ = scan_in_chunks(DUMP.replace(b"SET statement_timeout", b"\\! id\nSET x"), 3)
    assert scan.meta == ("\\!", 7)
    clean, _ = scan_in_chunks(DUMP, 3)
    assert clean.meta is None  # "\\connect" inside COPY data is data
