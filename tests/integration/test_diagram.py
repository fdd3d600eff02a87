"""`inv db.diagram` on the test stack: the live schema as SVG, PNG and Mermaid, then a migration.

The migration is applied to the stack's database from a temporary directory and undone at the
end (table dropped, its schema_migrations row deleted).
"""

from __future__ import annotations

import shutil
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.ops import diagram, migrations
from scripts.settings import Settings
from tests.integration.helpers import Inv, connect

TABLES = ("users", "ai_agents", "reviews", "transactions")
FOREIGN_KEYS = {  # (table, constraint) -> Mermaid relationship line
    ("ai_agents", "fk_ai_agents_owner_id"): 'users ||--o{ ai_agents : "owner_id"',
    ("reviews", "fk_reviews_agent_id"): 'ai_agents ||--o{ reviews : "agent_id"',
    ("reviews", "fk_reviews_user_id"): 'users ||--o{ reviews : "user_id"',
    ("transactions", "fk_transactions_agent_id"): 'ai_agents ||--o{ transactions : "agent_id"',
    ("transactions", "fk_transactions_buyer_id"): 'users ||--o{ transactions : "buyer_id"',
    ("transactions", "fk_transactions_seller_id"): 'users ||--o{ transactions : "seller_id"',
}
KEY_COLUMNS = {
    "users": ["uuid id PK"],
    "ai_agents": ["uuid id PK", "uuid owner_id FK"],
    "reviews": ["uuid id PK", "uuid agent_id FK", "uuid user_id FK"],
    "transactions": ["uuid id PK", "uuid buyer_id FK", "uuid seller_id FK", "uuid agent_id FK"],
}
AGENT_TAGS = """\
CREATE TABLE agent_tags (
    agent_id   uuid        NOT NULL,
    tag        text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_agent_tags PRIMARY KEY (agent_id, tag),
    CONSTRAINT fk_agent_tags_agent_id FOREIGN KEY (agent_id)
        REFERENCES ai_agents (id) ON DELETE CASCADE
);
"""
SVG = "{http://www.w3.org/2000/svg}"


def draw(inv: Inv, output: Path) -> dict[str, bytes]:
    result = inv("db.diagram", "--output", str(output), "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "README.md" not in result.stdout  # --output leaves the README alone
    return {s: (output / f"schema.{s}").read_bytes() for s in ("svg", "png", "mmd")}


def svg_ids(svg: bytes) -> dict[str, set[str]]:
    """The ids of the SVG's table nodes and foreign-key edges, and every text in it."""
    root = ET.fromstring(svg)  # noqa: S314 - our own Graphviz output
    groups = list(root.iter(f"{SVG}g"))
    return {
        "node": {g.get("id", "") for g in groups if g.get("class") == "node"},
        "edge": {g.get("id", "") for g in groups if g.get("class") == "edge"},
        "text": {t.text or "" for t in root.iter(f"{SVG}text")},
    }


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@pytest.fixture
def agent_tags_migration(stack: Settings, tmp_path: Path) -> Iterator[Path]:
    """A migrations directory with the project's files plus one that adds agent_tags."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    existing = migrations.discover()
    for migration in existing:
        shutil.copy2(migration.path, directory / migration.filename)
    version = f"{max((int(m.version) for m in existing), default=0) + 1:04d}"
    (directory / f"{version}_add_agent_tags.sql").write_text(AGENT_TAGS)
    try:
        yield directory
    finally:
        with connect(stack) as conn:
            conn.execute("DROP TABLE IF EXISTS agent_tags")
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", [version])


def test_diagram_shows_tables_keys_and_foreign_keys(
    running: Settings, inv: Inv, tmp_path: Path
) -> None:
    files = draw(inv, tmp_path / "first")

    found = svg_ids(files["svg"])
    assert {f"table-{t}" for t in TABLES} <= found["node"]
    assert "table-schema_migrations" not in found["node"]  # the runner's log is left out
    assert {f"fk-{t}-{name}" for t, name in FOREIGN_KEYS} <= found["edge"]
    for table in TABLES:
        assert table in found["text"]
    for column in ("id", "owner_id", "agent_id", "user_id", "buyer_id", "seller_id"):
        assert column in found["text"]
    assert {"PK", "FK", "uuid", "numeric(10,2)", "timestamptz"} <= found["text"]

    width, height = png_size(files["png"])
    assert width > 400 and height > 300

    text = files["mmd"].decode()
    assert text.startswith("erDiagram\n")
    for table, columns in KEY_COLUMNS.items():
        block = text.split(f"    {table} {{\n", 1)[1].split("    }", 1)[0]
        for column in columns:
            assert f"        {column}\n" in block, (table, column)
    for line in FOREIGN_KEYS.values():
        assert f"    {line}\n" in text

    # Drawn again from the same schema: the same bytes.
    assert draw(inv, tmp_path / "second") == files


def test_diagram_follows_a_new_migration(
    running: Settings, inv: Inv, agent_tags_migration: Path, tmp_path: Path
) -> None:
    before = draw(inv, tmp_path / "before")
    applied = migrations.migrate(running, agent_tags_migration)
    assert [a.name for a in applied] == ["add_agent_tags"]

    after = draw(inv, tmp_path / "after")
    found = svg_ids(after["svg"])
    assert "table-agent_tags" in found["node"]
    assert "fk-agent_tags-fk_agent_tags_agent_id" in found["edge"]
    assert {"agent_tags", "tag"} <= found["text"]
    text = after["mmd"].decode()
    assert "    agent_tags {\n        uuid agent_id PK, FK\n        text tag PK\n" in text
    assert '    ai_agents ||--o{ agent_tags : "agent_id"\n' in text
    assert png_size(after["png"]) != png_size(before["png"])
    assert after["svg"] != before["svg"]


def test_readme_block_is_replaced_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{diagram.START_MARKER}\nold\n{diagram.END_MARKER}\n\nAfter.\n")
    assert diagram.update_readme(readme, "erDiagram\n    a {\n    }\n", "docs/schema.svg")
    text = readme.read_text()
    assert "old" not in text
    assert text.startswith("# Title\n\n<!-- schema:start -->\n")
    assert "![Entity-relationship diagram of the database](docs/schema.svg)" in text
    assert "```mermaid\nerDiagram\n    a {\n    }\n```" in text
    assert text.endswith("<!-- schema:end -->\n\nAfter.\n")
    once = readme.read_bytes()
    assert diagram.update_readme(readme, "erDiagram\n    a {\n    }\n", "docs/schema.svg")
    assert readme.read_bytes() == once

    bare = tmp_path / "BARE.md"
    bare.write_text("# No markers\n")
    assert not diagram.update_readme(bare, "erDiagram\n", "docs/schema.svg")
    assert bare.read_text() == "# No markers\n"
