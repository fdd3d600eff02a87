"""The entity-relationship diagram of the live schema (inv db.diagram): read from the catalog.

Draws tables, columns with types, primary and foreign keys with Graphviz (SVG, PNG), writes the
same as Mermaid text, and puts that into README.md between markers; sorted, so reproducible.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.console import display_path
from scripts.errors import StackError
from scripts.infra import run
from scripts.settings import ROOT

if TYPE_CHECKING:
    from scripts.settings import Settings

DOCS_DIR = ROOT / "docs"
README = ROOT / "README.md"
STEM = "schema"
START_MARKER = "<!-- schema:start -->"
END_MARKER = "<!-- schema:end -->"
# The migration runner's log is bookkeeping of `inv db.migrate`, not part of the data model.
IGNORED_TABLES = frozenset({"schema_migrations"})
# Long catalog spellings and their usual short names (format_type() spells them out).
_SHORT_TYPES = (
    ("timestamp with time zone", "timestamptz"),
    ("timestamp without time zone", "timestamp"),
    ("time with time zone", "timetz"),
    ("time without time zone", "time"),
    ("character varying", "varchar"),
    ("double precision", "float8"),
    ("bit varying", "varbit"),
    ("character", "char"),
)
_FONT = "Helvetica,Arial,sans-serif"
_HEADER_COLOUR = "#336791"
_LEGEND = (
    "PK primary key · FK foreign key · UK unique · italic: may be NULL · drawn by inv db.diagram"
)

_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (  -- tables that belong to an extension
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
_CONSTRAINTS_SQL = """
SELECT con.conname::text, con.contype::text, con.conrelid, con.confrelid,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
             ORDER BY k.ord),
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
             ORDER BY k.ord)
FROM pg_constraint con
WHERE con.conrelid = ANY(%s::oid[]) AND con.contype IN ('p', 'u', 'f')
"""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as PostgreSQL spells it, shortened: "uuid", "numeric(10,2)", "timestamptz"
    nullable: bool
    keys: tuple[str, ...]  # "PK", "FK", "UK", in that order


@dataclass(frozen=True)
class Table:
    name: str  # unqualified in schema public, else "schema.table"
    columns: tuple[Column, ...]  # in the table's column order


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    optional: bool  # a referencing column may be NULL: zero or one parent
    unique: bool  # the referencing columns are unique: one-to-one


@dataclass(frozen=True)
class Schema:
    tables: tuple[Table, ...]  # sorted by name
    foreign_keys: tuple[ForeignKey, ...]  # sorted by table, then constraint name


@dataclass(frozen=True)
class Written:
    files: list[Path]
    tables: int
    foreign_keys: int
    readme: bool  # whether README.md was updated


# --- reading the catalog --------------------------------------------------------------------


def read_schema(settings: Settings) -> Schema:
    """Tables, columns, primary, unique and foreign keys of the stack's database."""
    from scripts.infra.database import connect

    with connect(settings) as conn:
        tables = conn.execute(_TABLES_SQL).fetchall()
        names = {
            int(oid): (name if schema == "public" else f"{schema}.{name}")
            for oid, schema, name in tables
            if not (schema == "public" and name in IGNORED_TABLES)
        }
        oids = sorted(names)
        columns = conn.execute(_COLUMNS_SQL, [oids]).fetchall()
        constraints = conn.execute(_CONSTRAINTS_SQL, [oids]).fetchall()
    return build_schema(names, columns, constraints)


def build_schema(
    names: dict[int, str],
    columns: Sequence[tuple[int, str, str, bool]],
    constraints: Sequence[tuple[str, str, int, int, list[str], list[str]]],
) -> Schema:
    """The catalog rows as a Schema: every list sorted, so the same schema draws the same."""
    keys: dict[tuple[int, str], set[str]] = {}
    unique_sets: dict[int, set[tuple[str, ...]]] = {}
    fks = []
    for _, kind, relid, _, cols, _ in constraints:
        label = {"p": "PK", "u": "UK", "f": "FK"}[kind]
        if kind == "u" and len(cols) > 1:
            label = ""  # UK marks a column unique by itself; a shared one would mislead
        for col in cols if label else ():
            keys.setdefault((relid, col), set()).add(label)
        if kind in ("p", "u"):
            unique_sets.setdefault(relid, set()).add(tuple(sorted(cols)))
    nullable = {(relid, name): not notnull for relid, name, _, notnull in columns}
    for conname, kind, relid, ref_relid, cols, ref_cols in constraints:
        if kind != "f" or ref_relid not in names:
            continue  # a table we do not draw (an extension's, say): the column keeps "FK"
        fks.append(
            ForeignKey(
                conname,
                names[relid],
                tuple(cols),
                names[ref_relid],
                tuple(ref_cols),
                optional=any(nullable.get((relid, c), False) for c in cols),
                unique=tuple(sorted(cols)) in unique_sets.get(relid, set()),
            )
        )
    by_table: dict[int, list[Column]] = {}
    for relid, name, type_, notnull in columns:
        marks = keys.get((relid, name), set())
        by_table.setdefault(relid, []).append(
            Column(
                name,
                short_type(type_),
                not notnull,
                tuple(k for k in ("PK", "FK", "UK") if k in marks),
            )
        )
    tables = [Table(names[oid], tuple(by_table.get(oid, []))) for oid in names]
    return Schema(
        tuple(sorted(tables, key=lambda t: t.name)),
        tuple(sorted(fks, key=lambda f: (f.table, f.name))),
    )


def short_type(spelled: str) -> str:
    for long, short in _SHORT_TYPES:
        if spelled == long or spelled.startswith((long + "(", long + "[")):
            return short + spelled[len(long) :]
    return spelled


# --- Mermaid --------------------------------------------------------------------------------


def mermaid(schema: Schema) -> str:
    """The schema as a Mermaid erDiagram (what GitHub renders in a ```mermaid block)."""
    lines = ["erDiagram"]
    for table in schema.tables:
        lines.append(f"    {_mermaid_name(table.name)} {{")
        for column in table.columns:
            word = _mermaid_type(column.type)
            line = f"        {word} {_mermaid_word(column.name)}"
            if column.keys:
                line += " " + ", ".join(column.keys)
            if word != column.type:  # Mermaid types take no commas or blanks: keep the real one
                line += f' "{column.type.replace(chr(34), chr(39))}"'
            lines.append(line)
        lines.append("    }")
    for fk in schema.foreign_keys:
        parent = "|o" if fk.optional else "||"
        child = "o|" if fk.unique else "o{"
        lines.append(
            f"    {_mermaid_name(fk.ref_table)} {parent}--{child} {_mermaid_name(fk.table)} : "
            f'"{", ".join(fk.columns)}"'
        )
    return "\n".join(lines) + "\n"


def _mermaid_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _mermaid_word(name: str) -> str:
    word = re.sub(r"[^A-Za-z0-9_()\[\]-]", "_", name)
    return word if re.match(r"[A-Za-z_*]", word) else f"_{word}"


def _mermaid_type(spelled: str) -> str:
    return _mermaid_word(re.sub(r"\(.*?\)", "", spelled).replace(" ", "_"))


# --- Graphviz -------------------------------------------------------------------------------


def dot_source(schema: Schema) -> str:
    """The schema as a Graphviz digraph: one HTML-like table per table, crow's-foot edges."""
    lines = [
        "digraph schema {",
        f'    graph [rankdir=LR, nodesep=0.5, ranksep=1.1, bgcolor="white", fontname="{_FONT}"];',
        f'    node [shape=plain, fontname="{_FONT}", fontsize=11];',
        f'    edge [fontname="{_FONT}", color="#555555", dir=both, penwidth=1.2];',
        f'    labelloc=b; fontsize=10; fontcolor="#555555"; label={_q(_LEGEND)};',
    ]
    rows: dict[str, dict[str, int]] = {}
    for table in schema.tables:
        rows[table.name] = {c.name: i for i, c in enumerate(table.columns)}
        cells = [
            f'<TR><TD COLSPAN="3" BGCOLOR="{_HEADER_COLOUR}" ALIGN="LEFT">'
            f'<FONT COLOR="white"><B>{_h(table.name)}</B></FONT></TD></TR>'
        ]
        for i, column in enumerate(table.columns):
            name = _h(column.name)
            if "PK" in column.keys:
                name = f"<B>{name}</B>"
            elif column.nullable:
                name = f"<I>{name}</I>"
            cells.append(
                f'<TR><TD PORT="i{i}" ALIGN="LEFT"><FONT COLOR="#8a5a00">'
                f"{_h(' '.join(column.keys)) or ' '}</FONT></TD>"
                f'<TD ALIGN="LEFT">{name}</TD>'
                f'<TD PORT="o{i}" ALIGN="LEFT"><FONT COLOR="#555555">{_h(column.type)}'
                "</FONT></TD></TR>"
            )
        label = (
            '<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
            + "".join(cells)
            + "</TABLE>"
        )
        lines.append(f"    {_q(table.name)} [id={_q('table-' + table.name)}, label=<{label}>];")
    for fk in schema.foreign_keys:
        parent = rows[fk.ref_table].get(fk.ref_columns[0], 0)
        child = rows[fk.table].get(fk.columns[0], 0)
        where = f"{fk.table}({', '.join(fk.columns)}) → {fk.ref_table}({', '.join(fk.ref_columns)})"
        attributes = ", ".join(
            [
                f"id={_q(f'fk-{fk.table}-{fk.name}')}",
                f"tooltip={_q(f'{fk.name}: {where}')}",
                f"arrowtail={'teeodot' if fk.optional else 'teetee'}",
                f"arrowhead={'teeodot' if fk.unique else 'crowodot'}",
            ]
        )
        lines.append(
            f"    {_q(fk.ref_table)}:o{parent}:e -> {_q(fk.table)}:i{child}:w [{attributes}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(text: str) -> str:
    """Text inside an HTML-like label."""
    return html.escape(text, quote=True)


def dot_binary() -> str | None:
    return shutil.which("dot")


def ensure_graphviz(*, yes: bool) -> str:
    """The `dot` binary; installs Debian's graphviz after asking (or with yes) when missing."""
    from scripts.infra import prerequisites

    found = dot_binary()
    if found:
        return found
    check = prerequisites.Check(
        "Graphviz (dot)", None, "diagram", {"apt": ("graphviz",), "brew": ("graphviz",)}
    )
    prerequisites.install([check], yes=yes, again="inv db.diagram --yes")
    found = dot_binary()
    if not found:
        raise StackError(prerequisites.manual_instructions([check]))
    return found


def render(dot: str, source: str, fmt: str) -> bytes:
    try:
        return run.pipe([dot, f"-T{fmt}"], source.encode())
    except run.CommandError as exc:
        raise StackError(
            f"Graphviz could not draw the {fmt.upper()} ({exc.result.last_line()}): "
            "check that `dot -V` works, or reinstall graphviz."
        ) from None


# --- files ----------------------------------------------------------------------------------


def write(settings: Settings, output: Path | None, *, yes: bool = False) -> Written:
    """Read the live schema and write schema.svg, schema.png and schema.mmd into `output`
    (default docs/); with the default, also the Mermaid block of README.md."""
    directory = DOCS_DIR if output is None else output
    if directory.exists() and not directory.is_dir():
        raise StackError(
            f"{display_path(directory)} is a file: give --output a directory for schema.svg, "
            "schema.png and schema.mmd."
        )
    dot = ensure_graphviz(yes=yes)
    schema = read_schema(settings)
    if not schema.tables:
        raise StackError(
            f"Database {settings.postgres_db!r} has no tables: run `inv init` (or "
            "`inv db.migrate`) first."
        )
    source = dot_source(schema)
    text = mermaid(schema)
    contents = {
        "svg": render(dot, source, "svg"),
        "png": render(dot, source, "png"),
        "mmd": text.encode(),
    }
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for suffix, data in contents.items():
        path = directory / f"{STEM}.{suffix}"
        _write_atomically(path, data)
        files.append(path)
    readme = False
    if output is None or directory.resolve() == DOCS_DIR.resolve():
        readme = update_readme(README, text, f"{DOCS_DIR.name}/{STEM}.svg")
    return Written(files, len(schema.tables), len(schema.foreign_keys), readme)


def readme_block(text: str, image: str) -> str:
    return (
        f"{START_MARKER}\n"
        "<!-- Written by `inv db.diagram` from the live schema: do not edit by hand. -->\n"
        f"![Entity-relationship diagram of the database]({image})\n\n"
        "<details><summary>The same as Mermaid text "
        f"(<code>{image.rsplit('.', 1)[0]}.mmd</code>)</summary>\n\n"
        f"```mermaid\n{text}```\n\n"
        "</details>\n"
        f"{END_MARKER}"
    )


def update_readme(path: Path, text: str, image: str) -> bool:
    """Replace what stands between the schema markers; False when the markers are missing."""
    readme = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START_MARKER) + r".*?" + re.escape(END_MARKER), re.DOTALL)
    if not pattern.search(readme):
        return False
    updated = pattern.sub(lambda _: readme_block(text, image), readme, count=1)
    if updated != readme:
        _write_atomically(path, updated.encode("utf-8"))
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    """Write only when the content changed, through a temporary name: never half a file."""
    if path.is_file() and path.read_bytes() == data:
        return
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    if path.exists():
        partial.chmod(path.stat().st_mode & 0o777)
    partial.replace(path)
