"""Backups and restores as a developer lives them: round trips, damage, interruptions, full disks.

Runs against the isolated stack of `nox -s integration`, on either backend; BACKUP_DIR is tmp.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from scripts.backends import get_backend
from scripts.infra import probes
from scripts.infra.probes import pg_login
from scripts.settings import Settings
from tests.integration.helpers import ROOT, Inv, connect, ensure_up, run_inv
from tests.support.net import free_ports

TABLES = ("users", "ai_agents", "reviews", "transactions")
PREFIX = "bk_"  # every row these tests add belongs to a user whose username starts with it
SCRATCH_LIKE = "%\\_\\_restoring\\_%"
Conn = psycopg.Connection[tuple[Any, ...]]
Checksums = dict[str, tuple[int, str]]
Result = subprocess.CompletedProcess[str]


# --- running inv ----------------------------------------------------------------------------


def _env(backup_dir: Path) -> dict[str, str]:
    """Every backup of these tests goes to a directory of its own, never to the repo's."""
    return {"BACKUP_DIR": str(backup_dir)}


def _ok(result: Result) -> Result:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


def _assert_refused(result: Result, *names: str) -> str:
    """A non-zero exit with one line of explanation that names each of `names`; no traceback.
    Warnings before it (lines starting with "!", e.g. a URL in the env file that a test's
    override makes disagree) are no part of the explanation."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("! ")]
    assert len(lines) == 1, f"expected a one-line message, got:\n{result.stderr}"
    for name in names:
        assert name in lines[0], f"{name!r} is not named in: {lines[0]}"
    return lines[0]


def _shown(path: Path) -> str:
    """A path as `inv` prints it: relative to the repository (its working directory) when
    below it, else absolute."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


def _listed(inv: Inv, backup_dir: Path) -> dict[str, str]:
    """`inv db.backups` as a user reads it: backup name -> its row of the table."""
    result = _ok(inv("db.backups", env=_env(backup_dir)))
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) >= 6 and cells[1] and cells[1] != "Name":
            rows[cells[1]] = line
    return rows


# --- looking at the database ----------------------------------------------------------------


def _checksums(stack: Settings, database: str | None = None) -> Checksums:
    """Row count and md5 over every row's text, in id order, of each marketplace table."""
    conninfo = make_conninfo(stack.database_url.reveal(), dbname=database or stack.postgres_db)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        found = {}
        for table in TABLES:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) "
                    "FROM {} AS t"
                ).format(sql.Identifier(table))
            ).fetchone()
            assert row is not None
            found[table] = (int(row[0]), str(row[1]))
        return found


def _counts(sums: Checksums) -> dict[str, int]:
    return {table: count for table, (count, _) in sums.items()}


_SCHEMA = """
SELECT x FROM (
    SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' '
           || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT 'function ' || oid::regprocedure || ' ' || md5(prosrc)
      FROM pg_proc WHERE pronamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' '
           || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' '
           || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' '
           || coalesce(col_description(c.oid, a.attnum), '')
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
       AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'comment ' || c.relname || ' ' || coalesce(obj_description(c.oid, 'pg_class'), '')
      FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
) AS s (x)
ORDER BY x
"""


def _schema(stack: Settings) -> list[str]:
    """Tables, columns, constraints, indexes, triggers, functions, extensions and comments."""
    with connect(stack) as conn:
        return [str(row[0]) for row in conn.execute(_SCHEMA).fetchall()]


def _admin(stack: Settings) -> Conn:
    conninfo = make_conninfo(stack.database_url.reveal(), dbname="postgres")
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)


def _databases(stack: Settings) -> set[str]:
    with _admin(stack) as conn:
        return {str(row[0]) for row in conn.execute("SELECT datname FROM pg_database")}


def _scratch_databases(stack: Settings) -> list[str]:
    with _admin(stack) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_LIKE,)
        ).fetchall()
    return [str(row[0]) for row in rows]


def _drop_database(stack: Settings, name: str) -> None:
    with _admin(stack) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# --- rows the tests add and change ----------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """Rows in all four tables that only these tests add: three users, two agents of the
    first, four reviews and two transactions between them."""

    tag: str
    users: list[str]
    agents: list[str]


def _fetch_id(conn: Conn, query: str, params: tuple[Any, ...]) -> str:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return str(row[0])


def _add_rows(stack: Settings) -> Marker:
    tag = uuid.uuid4().hex[:10]
    with connect(stack) as conn, conn.transaction():
        users = [
            _fetch_id(
                conn,
                "INSERT INTO users (email, username, password_hash, role, is_verified) "
                "VALUES (%s, %s, %s, %s, true) RETURNING id",
                (f"{PREFIX}{tag}_{i}@example.com", f"{PREFIX}{tag}_{i}", f"$2b$08$x{tag}", role),
            )
            for i, role in enumerate(("developer", "user", "user"))
        ]
        agents = [
            _fetch_id(
                conn,
                "INSERT INTO ai_agents (owner_id, name, description, category, price_type, "
                "price, status) VALUES (%s, %s, %s, %s, 'one_time', %s, 'published') "
                "RETURNING id",
                (
                    users[0],
                    f"Agent {tag} {i}",
                    f"«quoted» 'text', a\ttab, a back\\slash,\na new line and ✓ {tag}",
                    category,
                    f"{i + 1}9.99",
                ),
            )
            for i, category in enumerate(("research", "education"))
        ]
        for n, (agent, user) in enumerate((a, u) for a in agents for u in users[1:]):
            conn.execute(
                "INSERT INTO reviews (agent_id, user_id, rating, comment) VALUES (%s, %s, %s, %s)",
                (agent, user, n % 5 + 1, f'review {n} of {tag}: "fine"; -- not SQL'),
            )
        conn.execute(
            "INSERT INTO transactions (buyer_id, seller_id, agent_id, amount, status, "
            "payment_method, stripe_payment_id) "
            "VALUES (%s, %s, %s, 19.99, 'completed', 'card', %s)",
            (users[1], users[0], agents[0], f"pi_{tag}"),
        )
        conn.execute(
            "INSERT INTO transactions (buyer_id, seller_id, agent_id, amount, currency, "
            "payment_method) VALUES (%s, %s, %s, 29.99, 'EUR', 'paypal')",
            (users[2], users[0], agents[1]),
        )
    return Marker(tag, users, agents)


def _change_rows(stack: Settings, marker: Marker) -> None:
    """What happens after a backup: rows deleted and updated (seed rows too), rows added."""
    with connect(stack) as conn, conn.transaction():
        conn.execute("DELETE FROM transactions WHERE buyer_id = %s", (marker.users[2],))
        conn.execute("DELETE FROM reviews WHERE user_id = %s", (marker.users[1],))
        conn.execute("UPDATE ai_agents SET name = 'renamed' WHERE id = %s", (marker.agents[0],))
        conn.execute("UPDATE users SET is_verified = NOT is_verified WHERE username = 'grace'")
        conn.execute("DELETE FROM reviews WHERE id = (SELECT min(id::text)::uuid FROM reviews)")
        conn.execute("UPDATE transactions SET status = 'refunded' WHERE status = 'completed'")
    _add_rows(stack)


def _remove_rows(stack: Settings) -> None:
    """Delete every row the tests added (users cascade to their agents and reviews)."""
    with connect(stack) as conn, conn.transaction():
        mine = "SELECT id FROM users WHERE starts_with(username, %(p)s)"
        conn.execute(
            f"DELETE FROM transactions WHERE buyer_id IN ({mine}) OR seller_id IN ({mine})",  # noqa: S608
            {"p": PREFIX},
        )
        conn.execute("DELETE FROM users WHERE starts_with(username, %s)", (PREFIX,))


@contextlib.contextmanager
def _big_table(stack: Settings, rows: int, *, random_bytes: int = 0) -> Iterator[str]:
    """A scratch table that makes the database (and its dumps) big: `rows` rows of 64 hex
    characters, or of `random_bytes` random bytes in base64 (which compresses badly)."""
    name = f"{PREFIX}big_{uuid.uuid4().hex[:8]}"
    text = (
        sql.SQL("encode(gen_random_bytes({}), 'base64')").format(sql.Literal(random_bytes))
        if random_bytes
        else sql.SQL("md5(g::text) || md5(random()::text)")
    )
    with connect(stack) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} AS SELECT g AS id, {} AS t FROM generate_series(1, {}) g"
            ).format(sql.Identifier(name), text, sql.Literal(rows))
        )
    try:
        yield name
    finally:
        with connect(stack) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


# --- backup files ---------------------------------------------------------------------------


def _manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + ".manifest.json")


def _finished(backup_dir: Path) -> list[Path]:
    """Backups under a final name: everything but manifests and hidden (temporary) files."""
    if not backup_dir.is_dir():
        return []
    return sorted(
        p
        for p in backup_dir.iterdir()
        if not p.name.startswith(".") and not p.name.endswith(".manifest.json")
    )


def _only_backup(backup_dir: Path) -> Path:
    found = _finished(backup_dir)
    assert len(found) == 1, found
    return found[0]


def _sha256(path: Path) -> tuple[str, int]:
    """The manifest's definition: a file's sha256 and size; for a directory, sha256 over each
    file's name, a NUL and its content, in name order, and the sum of the sizes."""
    digest = hashlib.sha256()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest(), sum(f.stat().st_size for f in files)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _check_manifest(stack: Settings, backup: Path, fmt: str, counts: dict[str, int]) -> None:
    manifest = json.loads(_manifest_path(backup).read_text())
    digest, size = _sha256(backup)
    assert manifest["file"] == backup.name
    assert manifest["format"] == fmt
    assert (manifest["sha256"], manifest["size"]) == (digest, size)
    assert manifest["database"] == stack.postgres_db
    assert manifest["server_version"].startswith("15.")
    assert {t: manifest["tables"].get(t) for t in TABLES} == counts
    assert _mode(_manifest_path(backup)) == 0o600
    if backup.is_dir():
        assert _mode(backup) == 0o700
        assert all(_mode(f) == 0o600 for f in backup.iterdir())
    else:
        assert _mode(backup) == 0o600


def _cut(path: Path, keep: int) -> None:
    with path.open("r+b") as handle:
        handle.truncate(keep)


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _pg_run(stack: Settings, tool: str, args: list[str], **kwargs: Any) -> Result:
    """Run a stock PostgreSQL client tool against the stack the way its backend does."""
    argv, env = get_backend(stack).pg_command(tool, args)
    return subprocess.run(argv, env=env, text=True, check=False, timeout=300, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- fixtures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pristine:
    backup: Path
    checksums: Checksums
    schema: list[str]
    databases: set[str]

    def differences(self, stack: Settings) -> list[str]:
        found = []
        if _checksums(stack) != self.checksums:
            found.append("rows")
        if _schema(stack) != self.schema:
            found.append("tables or schema")
        if extra := _databases(stack) - self.databases:
            found.append(f"databases {sorted(extra)}")
        return found


@pytest.fixture(scope="module")
def pristine(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """The database as the module found it (the seed), and a backup to put it back with."""
    ensure_up(stack)
    with connect(stack) as conn:  # left over by an interrupted earlier run, if any
        for (table,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND starts_with(tablename, %s)",
            (PREFIX,),
        ).fetchall():
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    _remove_rows(stack)
    backup_dir = tmp_path_factory.mktemp("pristine")
    _ok(run_inv("db.backup", "--name", "pristine", env=_env(backup_dir)))
    return Pristine(
        backup_dir / "pristine.dump", _checksums(stack), _schema(stack), _databases(stack)
    )


@pytest.fixture(autouse=True)
def _seed_kept(stack: Settings, pristine: Pristine) -> Iterator[None]:
    """Each test must leave the database as it found it (the seed) and no database behind;
    when one does not, put the pristine copy back for the next test and fail this one."""
    yield
    ensure_up(stack)
    differences = pristine.differences(stack)
    if not differences:
        return
    for name in _databases(stack) - pristine.databases:
        _drop_database(stack, name)
    put_back = run_inv("db.restore", str(pristine.backup), "--yes")
    pytest.fail(
        f"the test left these changed: {', '.join(differences)}; putting the pristine copy "
        f"back {'worked' if put_back.returncode == 0 else 'failed: ' + put_back.stderr}",
        pytrace=False,
    )


@dataclass(frozen=True)
class Archives:
    """One backup in each format of a database with a scratch table of ~400 kB of random
    text: the middle of each file lies in table data, not in the table of contents."""

    custom: Path
    sql: Path
    directory: Path
    filler: str


@pytest.fixture(scope="module")
def archives(
    stack: Settings, pristine: Pristine, tmp_path_factory: pytest.TempPathFactory
) -> Archives:
    backup_dir = tmp_path_factory.mktemp("archives")
    with _big_table(stack, 300, random_bytes=1024) as filler:
        for fmt in ("custom", "sql", "directory"):
            _ok(run_inv("db.backup", "--format", fmt, "--name", fmt, env=_env(backup_dir)))
    return Archives(
        backup_dir / "custom.dump", backup_dir / "sql.sql.gz", backup_dir / "directory.dir", filler
    )


def _copy(source: Path, target_dir: Path, *, manifest: bool) -> Path:
    target = target_dir / source.name
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)
    if manifest:
        shutil.copyfile(_manifest_path(source), _manifest_path(target))
    return target


# --- 1. round trips -------------------------------------------------------------------------


ROUND_TRIPS = {
    "custom": ([], ".dump"),
    "sql": (["--format", "sql"], ".sql.gz"),
    "directory": (["--format", "directory", "--jobs", "2"], ".dir"),
}


@pytest.mark.parametrize("fmt", list(ROUND_TRIPS))
def test_round_trip_restores_exactly_what_was_backed_up(
    stack: Settings, inv: Inv, tmp_path: Path, fmt: str
) -> None:
    options, suffix = ROUND_TRIPS[fmt]
    backup_dir = tmp_path / "backups"
    schema = _schema(stack)
    marker = _add_rows(stack)
    try:
        at_backup = _checksums(stack)
        result = _ok(inv("db.backup", *options, env=_env(backup_dir)))
        backup = _only_backup(backup_dir)
        assert backup.name.startswith(f"{stack.postgres_db}-") and backup.name.endswith(suffix)
        assert backup.name in result.stdout
        assert "inv db.restore" in result.stdout
        _check_manifest(stack, backup, fmt, _counts(at_backup))

        _change_rows(stack, marker)
        assert _checksums(stack) != at_backup

        restored = _ok(inv("db.restore", str(backup), "--yes", env=_env(backup_dir)))
        assert f"Database {stack.postgres_db!r} replaced" in restored.stdout
        assert _checksums(stack) == at_backup
        assert _schema(stack) == schema
        assert _scratch_databases(stack) == []
        assert not [d for d in _databases(stack) if "__replaced_" in d]

        rows = _listed(inv, backup_dir)
        assert backup.name in rows, f"{backup.name} not listed in full: {list(rows)}"
        assert "verified" in rows[backup.name]
    finally:
        _remove_rows(stack)


# --- 2. a backup while the application writes -----------------------------------------------


class _Writer(threading.Thread):
    """The application: small transactions that add users, reviews and purchases, change
    ratings and delete users (with their reviews), as fast as it can."""

    def __init__(self, stack: Settings, marker: Marker) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.marker = marker
        self.halt = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.stack) as conn:
                self._write(conn)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _write(self, conn: Conn) -> None:
        owner, agents = self.marker.users[0], self.marker.agents
        n = 0
        while not self.halt.is_set():
            n += 1
            agent = agents[n % len(agents)]
            with conn.transaction():
                name = f"{PREFIX}{self.marker.tag}_w{n}"
                user = _fetch_id(
                    conn,
                    "INSERT INTO users (email, username, password_hash) "
                    "VALUES (%s, %s, 'x') RETURNING id",
                    (f"{name}@example.com", name),
                )
                conn.execute(
                    "INSERT INTO reviews (agent_id, user_id, rating) VALUES (%s, %s, %s)",
                    (agent, user, n % 5 + 1),
                )
                if n % 2:
                    conn.execute(
                        "INSERT INTO transactions (buyer_id, seller_id, agent_id, amount, "
                        "payment_method) VALUES (%s, %s, %s, 9.99, 'card')",
                        (user, owner, agent),
                    )
            with conn.transaction():
                conn.execute(
                    "UPDATE reviews SET rating = %s WHERE id = (SELECT id FROM reviews "
                    "WHERE agent_id = %s ORDER BY random() LIMIT 1)",
                    ((n * 7) % 5 + 1, agent),
                )
            if n % 3 == 0:
                with conn.transaction():
                    conn.execute(
                        "DELETE FROM users WHERE id = (SELECT u.id FROM users u "
                        "WHERE starts_with(u.username, %s) AND NOT EXISTS "
                        "(SELECT FROM transactions t WHERE t.buyer_id = u.id) "
                        "ORDER BY random() LIMIT 1)",
                        (f"{PREFIX}{self.marker.tag}_w",),
                    )
            self.commits += 3 if n % 3 == 0 else 2


_ORPHANS = """
SELECT
  (SELECT count(*) FROM ai_agents a
    WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = a.owner_id)),
  (SELECT count(*) FROM reviews r
    WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = r.user_id)
       OR NOT EXISTS (SELECT FROM ai_agents a WHERE a.id = r.agent_id)),
  (SELECT count(*) FROM transactions t
    WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = t.buyer_id)
       OR NOT EXISTS (SELECT FROM users u WHERE u.id = t.seller_id)
       OR NOT EXISTS (SELECT FROM ai_agents a WHERE a.id = t.agent_id))
"""

_WRONG_RATINGS = """
SELECT a.id, a.rating_count, a.rating_average, count(r.id), coalesce(round(avg(r.rating), 2), 0)
  FROM ai_agents a LEFT JOIN reviews r ON r.agent_id = a.id
 GROUP BY a.id
HAVING a.rating_count <> count(r.id) OR a.rating_average <> coalesce(round(avg(r.rating), 2), 0)
"""


@pytest.mark.parametrize("options", [[], ["--format", "directory", "--jobs", "2"]])
def test_a_backup_during_writes_restores_consistent(
    stack: Settings, inv: Inv, tmp_path: Path, options: list[str]
) -> None:
    backup_dir = tmp_path / "backups"
    marker = _add_rows(stack)
    writer = _Writer(stack, marker)
    try:
        writer.start()
        while writer.commits < 20 and writer.is_alive():
            time.sleep(0.01)
        before = writer.commits
        _ok(inv("db.backup", *options, env=_env(backup_dir)))
        during = writer.commits - before
        writer.halt.set()
        writer.join(timeout=60)
        assert writer.error is None, writer.error
        assert during >= 10, f"only {during} commits while the backup ran: not concurrent"
        backup = _only_backup(backup_dir)
        manifest = json.loads(_manifest_path(backup).read_text())

        _ok(inv("db.restore", str(backup), "--yes", env=_env(backup_dir)))
        with connect(stack) as conn:
            assert conn.execute(_ORPHANS).fetchone() == (0, 0, 0)
            assert conn.execute(_WRONG_RATINGS).fetchall() == []
        restored = _counts(_checksums(stack))
        assert {t: manifest["tables"][t] for t in TABLES} == restored
    finally:
        writer.halt.set()
        writer.join(timeout=60)
        _remove_rows(stack)


# --- 3. damaged, foreign and missing files are refused --------------------------------------


def _toc_readable(stack: Settings, path: Path) -> bool:
    """Whether the stock `pg_restore --list` reads the archive's table of contents."""
    with get_backend(stack).pg_input(path) as inside:
        return _pg_run(stack, "pg_restore", ["--list", inside], capture_output=True).returncode == 0


def _damaged(stack: Settings, archives: Archives, case: str, directory: Path) -> Path:
    """Make the damaged, foreign or missing file of `case` in `directory`; return its path."""
    if case.startswith("custom"):
        path = _copy(archives.custom, directory, manifest=case.endswith("with manifest"))
        size = path.stat().st_size
        if "truncated" in case:
            _cut(path, size // 2)
        else:
            _flip_byte(path, size // 2)
            if "without manifest" in case:  # the damage is in table data, not in the TOC
                assert _toc_readable(stack, path)
        return path
    if case == "sql.gz truncated":
        path = _copy(archives.sql, directory, manifest=False)
        _cut(path, path.stat().st_size // 2)
        return path
    if case.startswith("directory"):
        path = _copy(archives.directory, directory, manifest=case.endswith("with manifest"))
        if "toc.dat" in case:
            (path / "toc.dat").unlink()
        else:  # the biggest data file: the scratch table's
            max(path.glob("*.dat.gz"), key=lambda p: p.stat().st_size).unlink()
        return path
    contents = {
        "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(3000),
        "random bytes": os.urandom(4096),
        "text, not SQL": b"Shopping list\nmilk\neggs\nbread\n",
        "text that starts like SQL": b"-- notes from the meeting\nbuy milk, call Bob\n",
    }
    names = {"png": "photo.png", "random bytes": "random.dump", "missing": "nothing-here.dump"}
    path = directory / names.get(case, "notes.sql")
    if case != "missing":
        path.write_bytes(contents[case])
    return path


@pytest.mark.parametrize(
    "case",
    [
        "custom truncated, with manifest",
        "custom truncated, without manifest",
        "custom one byte corrupted, with manifest",
        "custom one byte corrupted, without manifest",
        "sql.gz truncated",
        "png",
        "random bytes",
        "text, not SQL",
        "text that starts like SQL",
        "missing",
        "directory without toc.dat, with manifest",
        "directory without toc.dat, without manifest",
        "directory without a data file, without manifest",
    ],
)
def test_a_bad_backup_is_refused_and_the_database_is_untouched(
    stack: Settings, inv: Inv, tmp_path: Path, archives: Archives, case: str
) -> None:
    path = _damaged(stack, archives, case, tmp_path)
    before, databases = _checksums(stack), _databases(stack)

    result = inv("db.restore", str(path), "--yes", env=_env(tmp_path / "backups"))

    message = _assert_refused(result, path.name)
    if case.endswith("with manifest"):  # refused by the checksum, before anything is loaded
        assert "manifest" in message
        assert "pg_restore" not in result.stdout
    assert _checksums(stack) == before
    assert _scratch_databases(stack) == []
    assert _databases(stack) == databases
    with connect(stack) as conn:  # the scratch table of the archives is not restored either
        assert conn.execute("SELECT to_regclass(%s)", (archives.filler,)).fetchone() == (None,)


@pytest.mark.parametrize("case", ["nothing listens", "wrong password"])
def test_a_backup_that_cannot_log_in_says_why_and_writes_nothing(
    stack: Settings, inv: Inv, tmp_path: Path, case: str
) -> None:
    backup_dir = tmp_path / "backups"
    if case == "nothing listens":
        (port,) = free_ports(1)
        override = {"POSTGRES_PORT": str(port)}
        names: tuple[str, ...] = (f"nothing listens on {stack.connect_host}:{port}", "inv up-core")
    else:
        override = {"POSTGRES_PASSWORD": "Not-The-Password-42"}
        names = ("password authentication failed", "POSTGRES_")

    result = inv("db.backup", env={**_env(backup_dir), **override})

    _assert_refused(result, *names)
    assert "Not-The-Password-42" not in result.stdout + result.stderr
    assert not backup_dir.exists() or list(backup_dir.iterdir()) == []


def test_the_snapshot_client_reads_rows_nulls_and_errors_as_postgres_sends_them(
    stack: Settings,
) -> None:
    """The backup's snapshot talks through the tasks' own client, not psycopg: the same
    answers from a real server, and still usable after an error."""
    with probes.PgSession(pg_login(stack), timeout=10, query_timeout=60) as session:
        rows = session.query("SELECT 1, NULL::text, 'it''s' UNION ALL SELECT 2, 'é', ''")
        assert rows == [("1", None, "it's"), ("2", "é", "")]
        with pytest.raises(probes.PgError) as caught:
            session.query("SELECT * FROM no_such_table")
        assert caught.value.code == "42P01"
        assert session.query("SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'") == [
            ("1",)
        ]


def test_the_list_names_every_backup_in_full(inv: Inv, tmp_path: Path) -> None:
    backup_dir = tmp_path / "backups"
    for fmt in ("sql", "directory", "custom"):
        _ok(inv("db.backup", "--format", fmt, env=_env(backup_dir)))
    rows = _listed(inv, backup_dir)
    assert sorted(rows) == [p.name for p in _finished(backup_dir)]
    assert all("verified" in row for row in rows.values()), rows


def test_the_list_flags_a_damaged_backup(inv: Inv, tmp_path: Path, archives: Archives) -> None:
    good = _copy(archives.sql, tmp_path, manifest=True)
    bad = _copy(archives.custom, tmp_path, manifest=True)
    _flip_byte(bad, bad.stat().st_size // 2)
    rows = _listed(inv, tmp_path)
    assert "verified" in rows[good.name]
    assert "DAMAGED" in rows[bad.name]


# --- 4. an interrupted backup ---------------------------------------------------------------


def _wait_for_partial(backup_dir: Path, proc: subprocess.Popen[str], size: int) -> None:
    """Until pg_dump has written `size` bytes into the temporary file; the backup must still
    be running then, or the test proves nothing."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the backup ended before it could be interrupted"
        if any(p.stat().st_size >= size for p in backup_dir.glob(".partial-*") if p.is_file()):
            return
        time.sleep(0.005)
    pytest.fail("the backup wrote nothing within 120 s")


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill"])
def test_an_interrupted_backup_leaves_no_backup(
    stack: Settings, inv: Inv, tmp_path: Path, how: str
) -> None:
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    with _big_table(stack, 300_000):
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "db.backup"],
            cwd=ROOT,
            env={**os.environ, **_env(backup_dir)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a shell gives a command
        )
        try:
            _wait_for_partial(backup_dir, proc, 256 * 1024)
            if how == "ctrl-c":  # the terminal signals the whole foreground process group
                os.killpg(proc.pid, signal.SIGINT)
            elif how == "sigterm":
                proc.terminate()
            else:
                proc.kill()
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        assert proc.returncode != 0
        assert _finished(backup_dir) == []
        left = sorted(p.name for p in backup_dir.iterdir())
        assert all(name.startswith(".partial-") for name in left), left
        if how == "ctrl-c":  # Python sees it: the temporary file goes, no traceback
            assert left == []
            assert "Traceback" not in stderr, stderr
        assert "No backups in" in _ok(inv("db.backups", env=_env(backup_dir))).stdout
        latest = inv("db.restore", "--latest", "--yes", env=_env(backup_dir))
        _assert_refused(latest, "no backup")


# --- 5. a full disk -------------------------------------------------------------------------


DISK_BYTES = 512 * 1024


@dataclass(frozen=True)
class SmallDisk:
    """A BACKUP_DIR with room for DISK_BYTES: a tmpfs of that size where one can be mounted
    (root), else a plain directory and `inv` run under `prlimit --fsize`."""

    path: Path
    mounted: bool

    def inv(self, *args: str) -> Result:
        limit = [] if self.mounted else ["prlimit", f"--fsize={DISK_BYTES}", "--"]
        return subprocess.run(
            [*limit, sys.executable, "-m", "invoke", *args],
            cwd=ROOT,
            env={**os.environ, **_env(self.path)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def _small_disk(path: Path) -> Iterator[SmallDisk]:
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(path)]
    mounted = os.geteuid() == 0 and subprocess.run(mount, check=False).returncode == 0
    try:
        yield SmallDisk(path, mounted)
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


def _assert_out_of_space(result: Result, disk: Path) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert "space" in result.stderr, result.stderr
    assert _shown(disk) in result.stderr, f"the message does not name {disk}: {result.stderr}"


@pytest.mark.parametrize("fmt", ["custom", "sql", "directory"])
def test_a_full_disk_fails_cleanly(stack: Settings, tmp_path: Path, fmt: str) -> None:
    with _big_table(stack, 4000, random_bytes=1024), _small_disk(tmp_path / "disk") as disk:
        result = disk.inv("db.backup", "--format", fmt)
        _assert_out_of_space(result, disk.path)
        assert sorted(p.name for p in disk.path.iterdir()) == [], "something was kept"


def test_a_disk_that_fills_up_at_the_manifest_keeps_nothing(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    """The dump fits exactly; the manifest does not."""
    _ok(inv("db.backup", "--name", "probe", env=_env(tmp_path / "probe")))
    size = (tmp_path / "probe" / "probe.dump").stat().st_size
    with _small_disk(tmp_path / "disk") as disk:
        if not disk.mounted:
            pytest.skip("needs a tmpfs (root): a file size limit cannot fill a disk")
        fs = os.statvfs(disk.path)
        needed = -(-size // fs.f_frsize) * fs.f_frsize
        (disk.path / ".filler").write_bytes(b"\0" * (fs.f_bavail * fs.f_frsize - needed))

        result = disk.inv("db.backup", "--name", "probe")

        _assert_out_of_space(result, disk.path)
        assert sorted(p.name for p in disk.path.iterdir()) == [".filler"], "something was kept"


# --- 6. and 7. stock tools ------------------------------------------------------------------


def test_a_plain_sql_dump_of_the_stock_pg_dump_restores(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    """As the old `make db-backup` made them: `pg_dump -U user db > backups/x.sql`."""
    schema = _schema(stack)
    marker = _add_rows(stack)
    try:
        at_dump = _checksums(stack)
        dump = tmp_path / "x.sql"
        with dump.open("w") as out:
            dumped = _pg_run(
                stack, "pg_dump", [stack.postgres_db], stdout=out, stderr=subprocess.PIPE
            )
        assert dumped.returncode == 0, dumped.stderr
        _change_rows(stack, marker)

        result = _ok(inv("db.restore", str(dump), "--yes", env=_env(tmp_path / "backups")))
        assert "sql backup, checks passed" in result.stdout
        assert _checksums(stack) == at_dump
        assert _schema(stack) == schema
    finally:
        _remove_rows(stack)


def test_our_custom_backup_restores_with_the_stock_pg_restore(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backups"
    marker = _add_rows(stack)
    database = f"{PREFIX}stock_{marker.tag}"
    try:
        at_backup = _checksums(stack)
        _ok(inv("db.backup", env=_env(backup_dir)))
        backup = _only_backup(backup_dir)
        with _admin(stack) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        with get_backend(stack).pg_input(backup) as inside:
            loaded = _pg_run(stack, "pg_restore", ["-d", database, inside], capture_output=True)
        assert loaded.returncode == 0, loaded.stderr
        assert _checksums(stack, database) == at_backup
        manifest = json.loads(_manifest_path(backup).read_text())
        assert {t: manifest["tables"][t] for t in TABLES} == _counts(at_backup)
    finally:
        _drop_database(stack, database)
        _remove_rows(stack)


# --- 8. --into, confirmation, --latest ------------------------------------------------------


def test_restore_into_a_new_database_beside_the_live_one(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backups"
    marker = _add_rows(stack)
    into = f"{PREFIX}into_{marker.tag}"
    try:
        at_backup = _checksums(stack)
        _ok(inv("db.backup", env=_env(backup_dir)))
        backup = _only_backup(backup_dir)
        _remove_rows(stack)
        live = _checksums(stack)
        assert live != at_backup

        result = _ok(inv("db.restore", str(backup), "--into", into, env=_env(backup_dir)))
        assert f"Database {into!r} created" in result.stdout
        assert {stack.postgres_db, into} <= _databases(stack)
        assert _checksums(stack) == live
        assert _checksums(stack, into) == at_backup

        again = inv("db.restore", str(backup), "--into", into, env=_env(backup_dir))
        _assert_refused(again, into)
        assert _checksums(stack, into) == at_backup
        assert _checksums(stack) == live
        assert _scratch_databases(stack) == []
    finally:
        _drop_database(stack, into)
        _remove_rows(stack)


def test_restore_without_yes_and_without_a_terminal_changes_nothing(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backups"
    _ok(inv("db.backup", env=_env(backup_dir)))
    marker = _add_rows(stack)
    try:
        before, databases = _checksums(stack), _databases(stack)
        result = inv("db.restore", str(_only_backup(backup_dir)), env=_env(backup_dir))
        message = _assert_refused(result, "--yes")
        assert stack.postgres_db in message
        assert _checksums(stack) == before
        assert _databases(stack) == databases
        with connect(stack) as conn:
            row = conn.execute("SELECT count(*) FROM users WHERE id = %s", (marker.users[0],))
            assert row.fetchone() == (1,)
    finally:
        _remove_rows(stack)


def test_restore_latest_picks_the_newest_backup(stack: Settings, inv: Inv, tmp_path: Path) -> None:
    backup_dir = tmp_path / "backups"
    try:
        first = _add_rows(stack)
        _ok(inv("db.backup", "--name", "zz-older", env=_env(backup_dir)))
        time.sleep(1.1)  # manifests record the time to the second
        second = _add_rows(stack)
        newest = _checksums(stack)
        _ok(inv("db.backup", "--name", "aa-newer", env=_env(backup_dir)))
        _remove_rows(stack)

        result = _ok(inv("db.restore", "--latest", "--yes", env=_env(backup_dir)))
        assert "aa-newer.dump" in result.stdout
        assert _checksums(stack) == newest
        with connect(stack) as conn:
            for marker in (first, second):
                row = conn.execute("SELECT count(*) FROM users WHERE id = %s", (marker.users[0],))
                assert row.fetchone() == (1,)
    finally:
        _remove_rows(stack)


def test_restore_finds_a_backup_by_the_name_the_list_shows(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    """`inv db.backups` lists names; `inv db.restore NAME` takes them, with or without the
    extension, from any directory the command runs in."""
    backup_dir = tmp_path / "backups"
    at_backup = _checksums(stack)
    _ok(inv("db.backup", "--name", "before-mig", env=_env(backup_dir)))
    assert "before-mig.dump" in _ok(inv("db.backups", env=_env(backup_dir))).stdout
    for name in ("before-mig.dump", "before-mig"):
        into = f"{PREFIX}named_{uuid.uuid4().hex[:8]}"
        try:
            result = _ok(inv("db.restore", name, "--into", into, env=_env(backup_dir)))
            assert "before-mig.dump" in result.stdout
            assert _checksums(stack, into) == at_backup
        finally:
            _drop_database(stack, into)

    typo = inv("db.restore", "befor-mig", "--yes", env=_env(backup_dir))
    message = _assert_refused(typo, "befor-mig", "before-mig.dump", "inv db.backups")
    assert "did you mean" in message
    assert _checksums(stack) == at_backup


def test_a_sql_file_cannot_write_into_the_live_database(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    """A plain SQL file is loaded aside: a psql meta-command in it must not reach the live
    database (hand-written scripts often start with one; `pg_dumpall -a` writes them)."""
    into, table = f"{PREFIX}aside_{uuid.uuid4().hex[:8]}", f"{PREFIX}touched"
    script = tmp_path / "script.sql"
    script.write_text(
        f"-- a script written by hand\n\\connect {stack.postgres_db}\n"
        f"CREATE TABLE {table} (x int);\n"
    )
    before = _checksums(stack)
    try:
        inv("db.restore", str(script), "--into", into, env=_env(tmp_path / "backups"))
        with connect(stack) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,), (
                "restoring beside the live database wrote into it"
            )
        assert _checksums(stack) == before
    finally:
        with connect(stack) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        _drop_database(stack, into)


# --- 9. prune -------------------------------------------------------------------------------


def test_prune_keeps_the_newest_and_asks_first(inv: Inv, tmp_path: Path) -> None:
    backup_dir = tmp_path / "backups"
    made: list[Path] = []
    for fmt in ("directory", "sql", "custom"):  # oldest first
        if made:
            time.sleep(1.1)  # manifests record the time to the second
        _ok(inv("db.backup", "--format", fmt, "--name", f"b-{fmt}", env=_env(backup_dir)))
        made.append(_only_backup_named(backup_dir, f"b-{fmt}"))
    (backup_dir / "notes.txt").write_text("not a backup\n")
    everything = sorted(p.name for p in backup_dir.iterdir())

    refused = inv("db.prune", "--keep", "1", env=_env(backup_dir))
    _assert_refused(refused, "--yes")
    assert sorted(p.name for p in backup_dir.iterdir()) == everything

    _ok(inv("db.prune", "--keep", "1", "--yes", env=_env(backup_dir)))
    newest = made[-1]
    assert sorted(p.name for p in backup_dir.iterdir()) == sorted(
        [newest.name, _manifest_path(newest).name, "notes.txt"]
    )
    assert list(_listed(inv, backup_dir)) == [newest.name]

    again = _ok(inv("db.prune", "--keep", "1", "--yes", env=_env(backup_dir)))
    assert "Nothing to prune" in again.stdout
    assert newest.exists() and _manifest_path(newest).exists()


def _only_backup_named(backup_dir: Path, stem: str) -> Path:
    found = [p for p in _finished(backup_dir) if p.name.startswith(stem + ".")]
    assert len(found) == 1, found
    return found[0]


# --- 10. reset's safety backup --------------------------------------------------------------


@pytest.mark.destructive
def test_reset_takes_a_safety_backup_that_brings_the_data_back(
    running: Settings, inv: Inv, tmp_path: Path
) -> None:
    saved_dir, unsaved_dir = tmp_path / "saved", tmp_path / "unsaved"
    marker = _add_rows(running)
    try:
        before_reset = _checksums(running)

        result = _ok(inv("reset", "--yes", env=_env(saved_dir)))
        safety = _only_backup(saved_dir)
        assert safety.name.startswith("before-reset-") and safety.name.endswith(".dump")
        assert _manifest_path(safety).exists()
        command = result.stdout.split("inv db.restore ", 1)[1].split("`", 1)[0]
        assert (ROOT / command).resolve() == safety.resolve(), result.stdout
        _ok(inv("init", env=_env(saved_dir)))
        assert _checksums(running) != before_reset

        without = _ok(inv("reset", "--yes", "--no-backup", env=_env(unsaved_dir)))
        assert _finished(unsaved_dir) == []
        assert "Safety backup" not in without.stdout
        _ok(inv("init", env=_env(unsaved_dir)))

        _ok(inv("db.restore", str(safety), "--yes", env=_env(saved_dir)))
        assert _checksums(running) == before_reset
        with connect(running) as conn:
            row = conn.execute("SELECT count(*) FROM users WHERE id = %s", (marker.users[0],))
            assert row.fetchone() == (1,)
    finally:
        ensure_up(running)
        _remove_rows(running)


# --- 11. Redis ------------------------------------------------------------------------------


def _rdb_value(rdb: Path, key: str, workdir: Path) -> bytes | None:
    """Load the RDB file into a throwaway redis-server and read `key` from it."""
    server = shutil.which("redis-server")
    assert server is not None
    workdir.mkdir()
    shutil.copyfile(rdb, workdir / "dump.rdb")
    port = _free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    argv += ["--dbfilename", "dump.rdb", "--appendonly", "no", "--save", ""]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert proc.poll() is None, "redis-server did not start on the backup"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.05)
        value = client.get(key)
        client.close()
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_redis_backup_holds_a_key_set_just_before(
    stack: Settings, inv: Inv, redis_client: redis.Redis, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backups"
    key, value = f"bk:{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:12]
    redis_client.set(key, value)
    try:
        keys = redis_client.dbsize()
        result = _ok(inv("redis.backup", env=_env(backup_dir)))
        rdb = _only_backup(backup_dir)
        assert rdb.name.startswith("redis-") and rdb.name.endswith(".rdb")
        assert rdb.name in result.stdout
        assert rdb.read_bytes().startswith(b"REDIS")
        assert key.encode() in rdb.read_bytes()
        manifest = json.loads(_manifest_path(rdb).read_text())
        assert manifest["file"] == rdb.name
        assert (manifest["sha256"], manifest["size"]) == _sha256(rdb)
        assert manifest["keys"] == keys
        assert _mode(rdb) == 0o600 and _mode(_manifest_path(rdb)) == 0o600
        if shutil.which("redis-server"):
            assert _rdb_value(rdb, key, tmp_path / "load") == value.encode()
    finally:
        redis_client.delete(key)
