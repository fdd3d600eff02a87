"""Behaviour of scripts.ops.migrations (inv db.migrate) and scripts.ops.seed (inv db.seed).

Every test works in a scratch database of the test stack, created and dropped here (empty, or
initialised with docker/init-scripts like a fresh stack), so the stack's own database is
never changed. Migration files are written to pytest's tmp_path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from scripts import envfile
from scripts.console import Amount
from scripts.errors import StackError
from scripts.ops import migrations, seed
from scripts.settings import ROOT, Secret, Settings
from tests.integration.helpers import Checkout

Conn = psycopg.Connection[Any]

INIT_SCRIPTS = ROOT / "docker" / "init-scripts"
TABLES = ("users", "ai_agents", "reviews", "transactions")
SEEDED_COUNTS = {"users": 9, "ai_agents": 10, "reviews": 15, "transactions": 10}
DEV_ID_PREFIX = "00000000-0000-4000-a000-"  # every row of the dev seed


# --------------------------------------------------------------------------- #
# fixtures and helpers
# --------------------------------------------------------------------------- #


@pytest.fixture
def scratch(stack: Settings, pg_conn: Conn) -> Iterator[Settings]:
    """Settings for a new, empty database on the test stack; dropped afterwards."""
    name = f"aim_scratch_{uuid.uuid4().hex[:12]}"
    pg_conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlsplit(stack.database_url.reveal())
    settings = dataclasses.replace(
        stack, postgres_db=name, database_url=Secret(urlunsplit(url._replace(path=f"/{name}")))
    )
    try:
        yield settings
    finally:
        pg_conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def seeded(scratch: Settings) -> Settings:
    """A scratch database initialised like a fresh stack: schema and dev seed."""
    with connect(scratch) as conn:
        for script in ("01-init-database.sql", "02-seed-dev-data.sql"):
            conn.execute((INIT_SCRIPTS / script).read_bytes())
    return scratch


def connect(settings: Settings) -> Conn:
    return psycopg.connect(settings.database_url.reveal(), autocommit=True, connect_timeout=10)


def query(settings: Settings, text: Any, params: Any = None) -> list[tuple[Any, ...]]:
    with connect(settings) as conn:
        return conn.execute(text, params).fetchall()


def scalar(settings: Settings, text: Any, params: Any = None) -> Any:
    rows = query(settings, text, params)
    assert len(rows) == 1
    return rows[0][0]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def log_rows(settings: Settings) -> list[tuple[Any, ...]]:
    """schema_migrations in version order, [] when the table does not exist."""
    if scalar(settings, "SELECT to_regclass('schema_migrations') IS NULL"):
        return []
    return query(
        settings,
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version::int",
    )


def table_exists(settings: Settings, table: str) -> bool:
    return bool(scalar(settings, "SELECT to_regclass(%s) IS NOT NULL", [table]))


def column_exists(settings: Settings, table: str, column: str) -> bool:
    return bool(
        scalar(
            settings,
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = %s AND column_name = %s",
            [table, column],
        )
    )


def fingerprints(settings: Settings, where: str = "true") -> dict[str, tuple[int, str]]:
    """Row count and md5 over every row's text, per table (optionally of some rows only)."""
    result = {}
    for table in TABLES:
        text = sql.SQL(
            "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t.id)), '') "
            "FROM {} AS t WHERE {}"
        ).format(sql.Identifier(table), sql.SQL(where))
        count, digest = query(settings, text)[0]
        result[table] = (int(count), str(digest))
    return result


def counts(settings: Settings) -> dict[str, int]:
    return {table: count for table, (count, _) in fingerprints(settings).items()}


def rating_mismatches(settings: Settings) -> int:
    return int(
        scalar(
            settings,
            """
            SELECT count(*) FROM ai_agents AS a
              LEFT JOIN (SELECT agent_id, count(*) AS n, round(avg(rating), 2) AS average
                           FROM reviews GROUP BY agent_id) AS r ON r.agent_id = a.id
             WHERE (a.rating_count, a.rating_average)
                   IS DISTINCT FROM (coalesce(r.n, 0), coalesce(r.average, 0))
            """,
        )
    )


def versions(applied: list[migrations.Applied]) -> list[str]:
    return [a.version for a in applied]


# Three migrations that depend on each other, numbered so that text order would be wrong
# (10000 sorts before 9999 as text), with several statements, a string holding ';' and
# 'COMMIT', and a $$-quoted function body.
FIRST = """\
-- widgets and a helper function
CREATE TABLE widgets (id integer PRIMARY KEY, label text NOT NULL);
INSERT INTO widgets VALUES (1, 'semi;colon'), (2, 'COMMIT; is just text');
CREATE FUNCTION widget_colour(p_id integer) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN CASE WHEN p_id % 2 = 0 THEN 'red' ELSE 'blue' END;  -- ; inside the body
END;
$$;
"""
SECOND = (
    "ALTER TABLE widgets ADD COLUMN colour text;\nUPDATE widgets SET colour = widget_colour(id);\n"
)
THIRD = "CREATE TABLE widget_log (widget_id integer REFERENCES widgets (id));\n"
FOURTH = "INSERT INTO widget_log SELECT id FROM widgets;\n"


def write_chain(directory: Path) -> None:
    write(directory, "0001_create_widgets.sql", FIRST)
    write(directory, "0002_add_colour.sql", SECOND)
    write(directory, "9999_create_log.sql", THIRD)
    write(directory, "10000_fill_log.sql", FOURTH)


# --------------------------------------------------------------------------- #
# migrations
# --------------------------------------------------------------------------- #


def test_migrations_apply_once_in_numeric_order(scratch: Settings, tmp_path: Path) -> None:
    write_chain(tmp_path)
    write(tmp_path, "README.md", "ignored: not a migration")

    applied = migrations.migrate(scratch, tmp_path)

    assert versions(applied) == ["0001", "0002", "9999", "10000"]
    assert [a.name for a in applied] == ["create_widgets", "add_colour", "create_log", "fill_log"]
    for item in applied:
        data = (tmp_path / f"{item.version}_{item.name}.sql").read_bytes()
        assert item.checksum == hashlib.sha256(data).hexdigest()
        assert item.seconds >= 0
    log = log_rows(scratch)
    assert [(v, n, c) for v, n, c, _ in log] == [(a.version, a.name, a.checksum) for a in applied]
    assert [row[3] for row in log] == sorted(row[3] for row in log)  # applied in this order
    assert query(scratch, "SELECT id, label, colour FROM widgets ORDER BY id") == [
        (1, "semi;colon", "blue"),
        (2, "COMMIT; is just text", "red"),
    ]
    assert scalar(scratch, "SELECT count(*) FROM widget_log") == 2

    assert migrations.migrate(scratch, tmp_path) == []
    assert log_rows(scratch) == log
    assert scalar(scratch, "SELECT count(*) FROM widget_log") == 2
    states = [(s.version, s.state) for s in migrations.status(scratch, tmp_path)]
    assert states == [(v, "applied") for v in ("0001", "0002", "9999", "10000")]


def test_new_migration_is_applied_alone(scratch: Settings, tmp_path: Path) -> None:
    write(tmp_path, "0001_create_widgets.sql", FIRST)
    assert versions(migrations.migrate(scratch, tmp_path)) == ["0001"]
    write(tmp_path, "0002_add_colour.sql", SECOND)
    assert [(s.version, s.state) for s in migrations.status(scratch, tmp_path)] == [
        ("0001", "applied"),
        ("0002", "pending"),
    ]
    assert versions(migrations.migrate(scratch, tmp_path)) == ["0002"]
    assert [row[0] for row in log_rows(scratch)] == ["0001", "0002"]


def test_edited_applied_migration_is_refused(scratch: Settings, tmp_path: Path) -> None:
    write(tmp_path, "0001_create_widgets.sql", FIRST)
    migrations.migrate(scratch, tmp_path)
    log = log_rows(scratch)
    write(tmp_path, "0001_create_widgets.sql", FIRST + "CREATE TABLE sneaky (id integer);\n")
    write(tmp_path, "0002_add_colour.sql", SECOND)  # pending: must not be applied either

    with pytest.raises(StackError) as refused:
        migrations.migrate(scratch, tmp_path)

    assert "0001_create_widgets.sql" in refused.value.message
    assert "add a new migration instead of editing an applied one" in refused.value.message
    assert log_rows(scratch) == log
    assert not table_exists(scratch, "sneaky")
    assert not column_exists(scratch, "widgets", "colour")
    assert [(s.version, s.state) for s in migrations.status(scratch, tmp_path)] == [
        ("0001", "changed"),
        ("0002", "pending"),
    ]


@pytest.mark.parametrize("change", ["delete", "rename"])
def test_removed_or_renamed_applied_migration_is_refused(
    scratch: Settings, tmp_path: Path, change: str
) -> None:
    first = write(tmp_path, "0001_create_widgets.sql", FIRST)
    migrations.migrate(scratch, tmp_path)
    log = log_rows(scratch)
    if change == "delete":
        first.unlink()
    else:
        first.rename(tmp_path / "0001_make_widgets.sql")
    write(tmp_path, "0002_add_colour.sql", SECOND)

    with pytest.raises(StackError) as refused:
        migrations.migrate(scratch, tmp_path)

    assert "0001_create_widgets.sql" in refused.value.message
    assert log_rows(scratch) == log


def test_failing_migration_leaves_nothing_of_itself(scratch: Settings, tmp_path: Path) -> None:
    write(tmp_path, "0001_create_widgets.sql", FIRST)
    write(
        tmp_path,
        "0002_broken.sql",
        "CREATE TABLE gadgets (id integer);\nINSERT INTO widgets VALUES (3, 'x');\n"
        "INSERT INTO no_such_table VALUES (1);\n",
    )
    write(tmp_path, "0003_create_log.sql", THIRD)

    with pytest.raises(StackError) as failed:
        migrations.migrate(scratch, tmp_path)

    message = failed.value.message
    assert "0002_broken.sql" in message
    assert 'relation "no_such_table" does not exist' in message
    assert "at line 3" in message
    assert "stay applied" in message
    assert [row[0] for row in log_rows(scratch)] == ["0001"]
    assert table_exists(scratch, "widgets")
    assert not table_exists(scratch, "gadgets")
    assert scalar(scratch, "SELECT count(*) FROM widgets") == 2
    assert not table_exists(scratch, "widget_log")  # the run stopped at the failure

    # A file that failed was never applied, so fixing it in place is fine.
    write(tmp_path, "0002_broken.sql", "CREATE TABLE gadgets (id integer);\n")
    assert versions(migrations.migrate(scratch, tmp_path)) == ["0002", "0003"]
    assert table_exists(scratch, "gadgets")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["0001_one.sql", "0001_other.sql"], "share the number 1"),
        (["0007_one.sql", "00007_other.sql"], "share the number 7"),
        (["1_too_short.sql"], "1_too_short.sql does not match"),
        (["0001-dash.sql"], "0001-dash.sql does not match"),
        (["0001_Upper.sql"], "0001_Upper.sql does not match"),
        (["0001_shout.SQL"], "0001_shout.SQL does not match"),
        (["notes.sql"], "notes.sql does not match"),
        (["0001_backup.sql.bak"], "0001_backup.sql.bak does not match"),
    ],
)
def test_bad_file_names_are_refused_before_anything_runs(
    scratch: Settings, tmp_path: Path, files: list[str], expected: str
) -> None:
    write(tmp_path, "0000_valid.sql", "CREATE TABLE would_be_applied (id integer);\n")
    for name in files:
        write(tmp_path, name, "CREATE TABLE bad (id integer);\n")

    with pytest.raises(StackError) as refused:
        migrations.migrate(scratch, tmp_path)

    assert expected in refused.value.message
    assert not table_exists(scratch, "would_be_applied")
    assert not table_exists(scratch, "schema_migrations")


@pytest.mark.parametrize(
    "text",
    [
        "BEGIN;\nCREATE TABLE t (id integer);\nCOMMIT;\n",
        "CREATE TABLE t (id integer);\ncommit;\n",
        "START TRANSACTION;\nCREATE TABLE t (id integer);\n",
        "CREATE TABLE t (id integer);\n/* done */ ROLLBACK;\n",
        "CREATE TABLE t (id integer); END;",
    ],
)
def test_transaction_commands_are_refused(scratch: Settings, tmp_path: Path, text: str) -> None:
    write(tmp_path, "0001_own_transaction.sql", text)
    with pytest.raises(StackError, match="remove its transaction commands"):
        migrations.migrate(scratch, tmp_path)
    assert not table_exists(scratch, "t")
    assert log_rows(scratch) == []


def test_transaction_words_inside_bodies_strings_and_comments_are_fine(
    scratch: Settings, tmp_path: Path
) -> None:
    write(
        tmp_path,
        "0001_tricky.sql",
        """\
-- COMMIT; in a comment
/* ROLLBACK; /* nested */ BEGIN; */
CREATE TABLE notes (id integer PRIMARY KEY, body text);
INSERT INTO notes VALUES (1, 'BEGIN; COMMIT;'), (2, E'it\\'s; END;'), (3, $q$ROLLBACK;$q$);
DO $$
BEGIN
    INSERT INTO notes VALUES (4, 'from DO');
END
$$;
CREATE FUNCTION notes_count() RETURNS bigint LANGUAGE sql
BEGIN ATOMIC
    SELECT count(*) FROM notes;
END;
SAVEPOINT halfway;
INSERT INTO notes VALUES (5, 'undone');
ROLLBACK TO SAVEPOINT halfway;
RELEASE SAVEPOINT halfway;
""",
    )
    assert versions(migrations.migrate(scratch, tmp_path)) == ["0001"]
    assert query(scratch, "SELECT id, body FROM notes ORDER BY id") == [
        (1, "BEGIN; COMMIT;"),
        (2, "it's; END;"),
        (3, "ROLLBACK;"),
        (4, "from DO"),
    ]
    assert scalar(scratch, "SELECT notes_count()") == 4


def test_concurrent_runs_apply_each_migration_once(scratch: Settings, tmp_path: Path) -> None:
    write(tmp_path, "0001_create_runs.sql", "CREATE TABLE runs (version text NOT NULL);\n")
    write(tmp_path, "0002_slow.sql", "SELECT pg_sleep(0.5);\nINSERT INTO runs VALUES ('0002');\n")
    write(tmp_path, "0003_after.sql", "INSERT INTO runs VALUES ('0003');\n")
    start = threading.Barrier(2)
    results: list[list[migrations.Applied]] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            results.append(migrations.migrate(scratch, tmp_path))
        except BaseException as exc:  # reported below, with the thread's result
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(results) == 2
    assert sorted(v for result in results for v in versions(result)) == ["0001", "0002", "0003"]
    assert [row[0] for row in log_rows(scratch)] == ["0001", "0002", "0003"]
    assert query(scratch, "SELECT version FROM runs ORDER BY version") == [("0002",), ("0003",)]


def test_a_new_migration_file_and_the_check_gate(scratch: Settings, tmp_path: Path) -> None:
    """`inv db.migration NAME` writes the next numbered file from the template, and
    `inv db.migrate --check` fails while anything is pending or changed: a CI gate. Run in a
    clone (its own docker/migrations), on a scratch database of the test stack."""
    clone = Checkout.clone(tmp_path / "clone")
    folder = clone.root / "docker" / "migrations"
    env_file = tmp_path / "scratch.env"
    env_file.write_bytes(scratch.env_file.read_bytes())
    envfile.update(env_file, {"POSTGRES_DB": scratch.postgres_db, "DATABASE_URL": ""}, mode=0o600)

    def inv(*args: str) -> subprocess.CompletedProcess[str]:
        environ = {**os.environ, "STACK_ENV_FILE": str(env_file)}
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=clone.root,
            env=environ,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    assert inv("db.migrate", "--check").returncode == 0, "nothing to apply: the gate is open"

    made = inv("db.migration", "Add widget table")
    assert made.returncode == 0, made.stdout + made.stderr
    first = folder / "0001_add_widget_table.sql"
    assert made.stdout.strip() == str(first)
    assert "-- 0001_add_widget_table.sql: add widget table" in first.read_text()

    gate = inv("db.migrate", "--check")
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "0001" in gate.stdout and "pending" in gate.stdout
    refusal = gate.stderr.strip().splitlines()[-1]
    assert "0001_add_widget_table pending" in refusal and "`inv db.migrate`" in refusal

    with pytest.raises(StackError, match="has no SQL statement yet"):
        migrations.migrate(scratch, folder)  # the template alone is no migration
    first.write_text(first.read_text() + "CREATE TABLE widgets (id integer PRIMARY KEY);\n")
    assert versions(migrations.migrate(scratch, folder)) == ["0001"]
    opened = inv("db.migrate", "--check")
    assert opened.returncode == 0, opened.stdout + opened.stderr

    assert inv("db.migration", "second").stdout.strip() == str(folder / "0002_second.sql")
    first.write_text(first.read_text() + "-- edited after it was applied\n")
    changed = inv("db.migrate", "--check")
    assert changed.returncode == 1
    assert "0001_add_widget_table changed" in changed.stderr
    assert "0002_second pending" in changed.stderr

    bad = inv("db.migration", "!!!")
    assert bad.returncode == 2 and "gives no file name" in bad.stderr
    assert sorted(p.name for p in folder.glob("*.sql")) == [
        "0001_add_widget_table.sql",
        "0002_second.sql",
    ]


def test_project_migrations_apply_on_a_fresh_stack(seeded: Settings) -> None:
    """The real docker/migrations: valid names, and they apply on top of the init scripts."""
    files = migrations.discover()
    applied = migrations.migrate(seeded)
    assert versions(applied) == [m.version for m in files]
    assert migrations.migrate(seeded) == []
    assert rating_mismatches(seeded) == 0


def test_unreachable_database_is_a_user_error_without_the_password(
    stack: Settings, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        unreachable = dataclasses.replace(stack, postgres_port=sock.getsockname()[1])
        with pytest.raises(StackError) as refused:
            migrations.migrate(unreachable, tmp_path)
    assert "inv up-core" in refused.value.message
    assert stack.postgres_password.reveal() not in refused.value.message


def test_migrations_never_follow_database_url_elsewhere(stack: Settings, tmp_path: Path) -> None:
    """DATABASE_URL is the application's: pointed at a port where nothing listens, the tasks
    still reach the stack, from the POSTGRES_* settings."""
    url = urlsplit(stack.database_url.reveal())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        netloc = f"{url.netloc.rsplit(':', 1)[0]}:{sock.getsockname()[1]}"
        elsewhere = dataclasses.replace(
            stack, database_url=Secret(urlunsplit(url._replace(netloc=netloc)))
        )
        assert migrations.migrate(elsewhere, tmp_path) == []  # tmp_path: no migration files
        assert [m.state for m in migrations.status(elsewhere)] == [
            m.state for m in migrations.status(stack)
        ]


# --------------------------------------------------------------------------- #
# seed
# --------------------------------------------------------------------------- #


def test_seed_twice_changes_nothing(seeded: Settings) -> None:
    before = fingerprints(seeded)
    assert seed.seed(seeded) == SEEDED_COUNTS
    after_first = fingerprints(seeded)
    assert seed.seed(seeded) == SEEDED_COUNTS
    assert after_first == before
    assert fingerprints(seeded) == after_first


def test_seed_puts_back_deleted_seed_rows(seeded: Settings) -> None:
    with connect(seeded) as conn:
        conn.execute("DELETE FROM transactions WHERE id = '00000000-0000-4000-a000-000000000401'")
        conn.execute("DELETE FROM reviews WHERE id = '00000000-0000-4000-a000-000000000301'")
    assert counts(seeded)["reviews"] == 14

    assert seed.seed(seeded) == SEEDED_COUNTS
    assert rating_mismatches(seeded) == 0


def test_seed_on_an_empty_schema_then_conflict_rolls_back_whole_file(scratch: Settings) -> None:
    with connect(scratch) as conn:
        conn.execute((INIT_SCRIPTS / "01-init-database.sql").read_bytes())
        # A transaction that takes the Stripe id of the seed's first transaction: the seed's
        # last INSERT fails, after its users, agents and reviews went in.
        conn.execute(
            """
            INSERT INTO users (id, email, username, password_hash, role) VALUES
              ('10000000-0000-4000-a000-000000000001', 'x@example.com', 'x_seller', 'h',
               'developer'),
              ('10000000-0000-4000-a000-000000000002', 'y@example.com', 'y_buyer', 'h', 'user');
            INSERT INTO ai_agents (id, owner_id, name, category)
              VALUES ('10000000-0000-4000-a000-000000000003',
                      '10000000-0000-4000-a000-000000000001', 'X', 'other');
            INSERT INTO transactions (buyer_id, seller_id, agent_id, amount, payment_method,
                                      stripe_payment_id)
              VALUES ('10000000-0000-4000-a000-000000000002',
                      '10000000-0000-4000-a000-000000000001',
                      '10000000-0000-4000-a000-000000000003', 1, 'card',
                      'pi_dev_0000000000000401');
            """
        )
    before = fingerprints(scratch)

    with pytest.raises(StackError) as failed:
        seed.seed(scratch)

    assert "02-seed-dev-data.sql" in failed.value.message
    assert "uq_transactions_stripe_payment_id" in failed.value.message
    assert fingerprints(scratch) == before

    with connect(scratch) as conn:
        conn.execute("DELETE FROM transactions")
    assert seed.seed(scratch) == {
        "users": 11,
        "ai_agents": 11,
        "reviews": 15,
        "transactions": 10,
    }


# --------------------------------------------------------------------------- #
# seed --scale
# --------------------------------------------------------------------------- #


def assert_triggers_enabled(settings: Settings) -> None:
    triggers = query(
        settings,
        "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal "
        "AND tgname IN ('trg_reviews_refresh_agent_rating', 'trg_ai_agents_set_updated_at') "
        "ORDER BY tgname",
    )
    assert triggers == [
        ("trg_ai_agents_set_updated_at", "O"),
        ("trg_reviews_refresh_agent_rating", "O"),
    ]


def assert_scaled_data_valid(settings: Settings, calls: int) -> None:
    """What the schema does not check: aggregates, one password hash per call, timestamps,
    drafts, proportions."""
    assert rating_mismatches(settings) == 0
    assert_triggers_enabled(settings)
    hashes = query(
        settings,
        "SELECT password_hash, crypt('scaled123!', password_hash) = password_hash FROM users "
        "WHERE username LIKE 'scaled\\_%' GROUP BY password_hash",
    )
    assert len(hashes) == calls
    assert all(verified for _, verified in hashes)
    # Rows of generated users (the dev seed has its own, looser story) that break a rule.
    checks = {
        "user timestamps": """
            SELECT count(*) FROM users u WHERE u.username LIKE 'scaled\\_%' AND (
                   u.updated_at < u.created_at OR u.updated_at > now()
                   OR u.created_at < now() - interval '366 days')""",
        "agents": """
            SELECT count(*) FROM ai_agents a JOIN users u ON u.id = a.owner_id
             WHERE u.username LIKE 'scaled\\_%' AND (
                   u.role <> 'developer' OR a.created_at < u.created_at
                   OR a.updated_at < a.created_at OR a.updated_at > now())""",
        "reviews": """
            SELECT count(*) FROM reviews r JOIN ai_agents a ON a.id = r.agent_id
              JOIN users u ON u.id = r.user_id
             WHERE u.username LIKE 'scaled\\_%' AND (
                   a.status = 'draft' OR a.owner_id = u.id
                   OR r.created_at < greatest(a.created_at, u.created_at)
                   OR r.updated_at < r.created_at OR r.updated_at > now())""",
        "transactions": """
            SELECT count(*) FROM transactions t JOIN ai_agents a ON a.id = t.agent_id
              JOIN users u ON u.id = t.buyer_id
             WHERE u.username LIKE 'scaled\\_%' AND (
                   a.status = 'draft' OR a.price_type = 'free' OR t.seller_id <> a.owner_id
                   OR (t.stripe_payment_id IS NOT NULL)
                      <> (t.payment_method IN ('card', 'apple_pay', 'google_pay'))
                   OR t.created_at < greatest(a.created_at, u.created_at)
                   OR t.updated_at < t.created_at OR t.updated_at > now())""",
    }
    assert {name: scalar(settings, text) for name, text in checks.items()} == dict.fromkeys(
        checks, 0
    )
    oldest, newest = query(
        settings,
        "SELECT min(created_at), max(created_at) FROM users WHERE username LIKE 'scaled\\_%'",
    )[0]
    assert newest - oldest > timedelta(days=180)  # spread over the past year


def test_seed_scale_adds_proportional_valid_data(seeded: Settings) -> None:
    dev_rows = fingerprints(seeded, f"t.id::text LIKE '{DEV_ID_PREFIX}%'")
    before = counts(seeded)
    steps: list[Amount] = []
    added = seed.seed_scale(seeded, 200, progress=steps.append)

    after = counts(seeded)
    assert added == {table: after[table] - before[table] for table in TABLES}
    assert added["users"] == 200
    assert 10 <= added["ai_agents"] <= 70  # 10 developers (every 20th user), 1-7 agents each
    assert 400 <= added["reviews"] <= 800  # ~3 per user
    assert 400 <= added["transactions"] <= 800  # ~3 per user
    users = query(
        seeded,
        "SELECT username, email, role FROM users WHERE id::text NOT LIKE %s ORDER BY created_at",
        [f"{DEV_ID_PREFIX}%"],
    )
    assert {u[0] for u in users} == {f"scaled_{n}" for n in range(1, 201)}
    assert all(email == f"{name}@example.com" for name, email, _ in users)
    assert sum(role == "developer" for _, _, role in users) == 10
    assert fingerprints(seeded, f"t.id::text LIKE '{DEV_ID_PREFIX}%'") == dev_rows
    assert_scaled_data_valid(seeded, calls=1)
    # Progress: rows so far of the plan's total (an upper bound: self-reviews and sales of
    # free agents are drawn out), and the database's growth, after each batch.
    assert [s.what for s in steps] == ["users", "ai_agents", "reviews", "transactions"]
    assert [s.done for s in steps] == sorted(s.done for s in steps)
    assert steps[-1].done == sum(added.values())
    assert len({s.total for s in steps}) == 1 and (steps[0].total or 0) >= steps[-1].done
    assert all(s.size is not None for s in steps) and (steps[-1].size or 0) > 0

    # The reviews trigger works again: a new review moves its agent's aggregates.
    with connect(seeded) as conn, conn.transaction(force_rollback=True):
        agent, user = conn.execute(
            """
            SELECT a.id, u.id FROM ai_agents a CROSS JOIN users u
             WHERE u.username LIKE 'scaled\\_%' AND a.status = 'published'
               AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.agent_id = a.id AND r.user_id = u.id)
             LIMIT 1
            """
        ).fetchall()[0]
        count = conn.execute("SELECT rating_count FROM ai_agents WHERE id = %s", [agent])
        old = count.fetchall()[0][0]
        conn.execute(
            "INSERT INTO reviews (agent_id, user_id, rating) VALUES (%s, %s, 5)", [agent, user]
        )
        row = conn.execute("SELECT rating_count FROM ai_agents WHERE id = %s", [agent]).fetchall()
        assert row == [(old + 1,)]

    again = seed.seed_scale(seeded, 200)

    assert again["users"] == 200
    final = counts(seeded)
    assert final == {table: after[table] + again[table] for table in TABLES}
    names = query(seeded, "SELECT username FROM users WHERE username LIKE 'scaled\\_%'")
    assert {n for (n,) in names} == {f"scaled_{n}" for n in range(1, 401)}
    assert_scaled_data_valid(seeded, calls=2)


def test_seed_scale_in_batches_generates_the_same_kind_of_data(
    seeded: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of users (what a large --scale uses): every user is generated once, and each
    batch is reported."""
    monkeypatch.setattr(seed, "MIN_BATCH", 50)
    monkeypatch.setattr(seed, "BATCHES", 4)
    steps: list[Amount] = []
    added = seed.seed_scale(seeded, 200, progress=steps.append)
    assert added["users"] == 200
    assert [s.what for s in steps].count("users") == 4
    assert [s.what for s in steps].count("reviews") == 4
    assert [s.what for s in steps].count("transactions") == 4
    names = query(seeded, "SELECT username FROM users WHERE username LIKE 'scaled\\_%'")
    assert sorted(n for (n,) in names) == sorted(f"scaled_{n}" for n in range(1, 201))
    assert 400 <= added["reviews"] <= 800 and 400 <= added["transactions"] <= 800
    assert_scaled_data_valid(seeded, calls=1)


def test_seed_scale_numbers_after_the_highest_existing_user(seeded: Settings) -> None:
    with connect(seeded) as conn:
        conn.execute(
            "INSERT INTO users (email, username, password_hash) "
            "VALUES ('scaled_41@example.com', 'scaled_41', 'h')"
        )
    assert seed.seed_scale(seeded, 3)["users"] == 3
    names = query(seeded, "SELECT username FROM users WHERE username LIKE 'scaled\\_%'")
    assert {n for (n,) in names} == {"scaled_41", "scaled_42", "scaled_43", "scaled_44"}
    assert rating_mismatches(seeded) == 0


def test_seed_scale_failure_adds_nothing(seeded: Settings) -> None:
    # A constraint the generator does not know about, hit by the last INSERT (transactions),
    # after the reviews trigger was switched off and the aggregates were rewritten.
    with connect(seeded) as conn:
        conn.execute(
            "ALTER TABLE transactions ADD CONSTRAINT ck_test_no_usd "
            "CHECK (currency <> 'USD') NOT VALID"
        )
    before = fingerprints(seeded)

    with pytest.raises(StackError) as failed:
        seed.seed_scale(seeded, 50)

    assert "added nothing" in failed.value.message
    assert "ck_test_no_usd" in failed.value.message
    assert fingerprints(seeded) == before
    assert_triggers_enabled(seeded)


@pytest.mark.parametrize("users", [0, -5, True, 2.5, "100"])
def test_seed_scale_refuses_bad_counts(scratch: Settings, users: Any) -> None:
    # An empty database: a count that got through would fail differently (no tables).
    with pytest.raises(StackError, match="whole number"):
        seed.seed_scale(scratch, users)
