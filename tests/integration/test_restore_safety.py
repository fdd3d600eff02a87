"""A restore ends in one of two states only: the old database live, or the new one.

Each test is a finding of an adversarial run, run the same way: a dump cut short, a kill at
every step of the swap, a dump of another database, SQL that reaches beyond its database,
a client in the scratch copy, bad --into names. Every check is by the md5 of every table.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from scripts.infra import crashpoints
from scripts.settings import Settings
from tests.integration.helpers import ROOT, Inv, ensure_up, fingerprint

# Every named point of scripts/ops/restore.py and scripts/ops/swap.py, in the order reached.
CRASH_POINTS = (
    "restore.scratch.created",
    "restore.loaded",
    "restore.swap.begun",
    "restore.swap.closed",
    "restore.swap.emptied",
    "restore.swap.set-aside",
    "restore.swap.renamed",
    "restore.swap.dropped",
)


def _app(stack: Settings, dbname: str | None = None) -> str:
    return make_conninfo(**stack.pg_conninfo(dbname))


def _admin(stack: Settings, dbname: str = "postgres") -> str:
    return make_conninfo(**stack.pg_conninfo(dbname, admin=True))


def _live(stack: Settings) -> dict[str, str]:
    """md5 of every table of the live database."""
    return fingerprint(_app(stack))[stack.postgres_db]


def _databases(stack: Settings) -> set[str]:
    with psycopg.connect(_admin(stack), autocommit=True) as conn:
        return {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database")}


def _restore_roles(stack: Settings) -> list[str]:
    with psycopg.connect(_admin(stack), autocommit=True) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'aim_restore_%'")
        return [str(r[0]) for r in rows]


def _refused(result: subprocess.CompletedProcess[str], *names: str) -> str:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in result.stderr.splitlines() if line.startswith("✘")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture
def backups(tmp_path: Path) -> dict[str, str]:
    """The environment of `inv` with BACKUP_DIR in tmp: the tests' backups stay there."""
    return {"BACKUP_DIR": str(tmp_path / "backups")}


@pytest.fixture
def changed(
    stack: Settings, inv: Inv, backups: dict[str, str]
) -> Iterator[tuple[Path, dict[str, str], dict[str, str]]]:
    """A backup of the live database, then a change: (the backup, the old state, the new)."""
    ensure_up(stack)
    made = _ok(inv("db.backup", "--name", f"before-{uuid.uuid4().hex[:8]}", env=backups))
    path = next(Path(backups["BACKUP_DIR"]).glob("before-*.dump"))
    assert path.name in made.stdout
    old = _live(stack)
    marker = uuid.uuid4().hex[:10]
    with psycopg.connect(_app(stack), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email, username, password_hash) VALUES (%s, %s, 'x')",
            (f"{marker}@example.com", f"u_{marker}"),
        )
    new = _live(stack)
    assert new != old
    yield path, old, new
    with psycopg.connect(_app(stack), autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE username = %s", (f"u_{marker}",))


@pytest.mark.destructive
def test_a_backup_dir_that_cannot_be_one_is_a_sentence_and_nothing_changes(
    stack: Settings,
    inv: Inv,
    changed: tuple[Path, dict[str, str], dict[str, str]],
    tmp_path: Path,
) -> None:
    """BACKUP_DIR under a file (a typo): the backup and the restore's safety backup each
    end in one sentence naming the fix (the restore: --no-backup too), the database as it
    was; no traceback."""
    backup, _, before_state = changed
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    bad = {"BACKUP_DIR": str(a_file / "backups")}

    _refused(inv("db.backup", env=bad), "BACKUP_DIR must name a directory")
    refusal = _refused(inv("db.restore", str(backup), "--yes", env=bad), "--no-backup")
    assert "safety backup" in refusal
    assert _live(stack) == before_state
    assert not [d for d in _databases(stack) if "__restoring_" in d]


@pytest.mark.destructive
def test_two_restores_within_a_second_keep_both_safety_backups(
    stack: Settings,
    inv: Inv,
    backups: dict[str, str],
    changed: tuple[Path, dict[str, str], dict[str, str]],
) -> None:
    """A restore's safety backup takes the next free name when one of this second is there
    (restoring the safety backup just made, say), never refusing the restore."""
    import datetime as dt

    backup, restored_state, before_state = changed
    folder = Path(backups["BACKUP_DIR"])
    now = dt.datetime.now(dt.UTC)
    taken = {
        folder / f"before-restore-{(now + dt.timedelta(seconds=s)):%Y%m%d-%H%M%S}.dump": os.urandom(
            8
        )
        for s in range(-1, 30)
    }
    for path, content in taken.items():
        path.write_bytes(content)

    done = _ok(inv("db.restore", str(backup), "--yes", env=backups))
    assert _live(stack) == restored_state
    assert all(path.read_bytes() == content for path, content in taken.items())
    saved = [p for p in folder.glob("before-restore-*-2.dump") if p not in taken]
    assert len(saved) == 1, sorted(p.name for p in folder.iterdir())
    assert saved[0].name in done.stdout
    with psycopg.connect(_admin(stack), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    _ok(inv("db.restore", str(saved[0]), "--yes", "--no-backup", env=backups))
    assert _live(stack) == before_state


@pytest.mark.destructive
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_kill_at_any_step_of_a_restore_leaves_the_old_database_or_the_new(
    stack: Settings,
    inv: Inv,
    backups: dict[str, str],
    changed: tuple[Path, dict[str, str], dict[str, str]],
    point: str,
) -> None:
    backup, restored_state, before_state = changed
    killed = inv(
        "db.restore", str(backup), "--yes", "--no-backup",
        env={**backups, crashpoints.VARIABLE: point},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    after = _ok(inv("status", env=backups))  # the next command, whatever it is
    assert "was interrupted" in after.stderr, after.stderr
    live = _live(stack)
    assert live in (before_state, restored_state), f"neither old nor new after a kill at {point}"
    past_the_rename = CRASH_POINTS.index(point) >= CRASH_POINTS.index("restore.swap.renamed")
    assert live == (restored_state if past_the_rename else before_state)
    assert not [d for d in _databases(stack) if "__restoring_" in d or "__replaced_" in d]
    assert _restore_roles(stack) == []
    with psycopg.connect(_app(stack), autocommit=True) as conn:  # open to connections again
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("compressed", [False, True], ids=["sql", "sql.gz"])
def test_a_plain_sql_dump_cut_at_a_statement_boundary_is_refused(
    stack: Settings, inv: Inv, tmp_path: Path, compressed: bool
) -> None:
    ensure_up(stack)
    full = _dump(stack, "--format=plain")
    lines = full.splitlines(keepends=True)
    cut = max(i for i, line in enumerate(lines[: len(lines) * 2 // 3]) if line.startswith(b"\\."))
    data = b"".join(lines[: cut + 1])  # ends right after a table's data: valid SQL, half a dump
    path = tmp_path / ("cut.sql.gz" if compressed else "cut.sql")
    path.write_bytes(gzip.compress(data) if compressed else data)
    before = fingerprint(_app(stack, "postgres"))

    _refused(inv("db.restore", str(path), "--yes"), "dump complete", "Nothing was changed")
    assert fingerprint(_app(stack, "postgres")) == before


def _dump(stack: Settings, *args: str, database: str | None = None) -> bytes:
    """Stock pg_dump of a database of the stack (inside the container on compose)."""
    from scripts.backends import get_backend

    argv, env = get_backend(stack).pg_command("pg_dump", ["-d", database or stack.postgres_db])
    return subprocess.run([*argv, *args], env=env, capture_output=True, check=True).stdout


@pytest.mark.destructive
def test_a_dump_of_another_database_is_refused_unless_forced(
    stack: Settings, inv: Inv, tmp_path: Path, backups: dict[str, str]
) -> None:
    ensure_up(stack)
    other = f"other_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_app(stack, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(other)))
    try:
        with psycopg.connect(_app(stack, other), autocommit=True) as conn:
            conn.execute("CREATE TABLE things (id int PRIMARY KEY)")
            conn.execute("INSERT INTO things VALUES (1), (2)")
        dump = tmp_path / "other.dump"
        dump.write_bytes(_dump(stack, "--format=custom", database=other))
        before = _live(stack)
        refusal = _refused(
            inv("db.restore", str(dump), "--yes", env=backups),
            f"dumped from database '{other}'",
            "lacks the stack's tables users, ai_agents, reviews, transactions",
            "--force-other-database",
        )
        assert "Nothing was changed" in refusal
        assert _live(stack) == before

        forced = _ok(inv("db.restore", str(dump), "--yes", "--force-other-database", env=backups))
        assert "Safety backup of the replaced database: " in forced.stdout
        assert list(_live(stack)) == ["public.things"]
        safety = next(Path(backups["BACKUP_DIR"]).glob("before-restore-*.dump"))
        _ok(inv("db.restore", str(safety), "--yes", env=backups))  # the printed undo
        assert _live(stack) == before
    finally:
        with psycopg.connect(_app(stack, "postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(other))
            )


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("COPY (SELECT 1) TO PROGRAM 'id > {marker}';", "must be superuser"),
        ("ALTER DATABASE {live} SET statement_timeout = 1;", "must be owner of database"),
        # Refused as a statement of the restore's one transaction, before its rights count:
        # tests/integration/test_privileges.py shows the role could not run it anyway.
        ("ALTER SYSTEM SET work_mem = '1MB';", "ALTER SYSTEM cannot run inside a transaction"),
        ("CREATE ROLE intruder SUPERUSER;", "must be superuser to create superusers"),
    ],
    ids=["copy-to-program", "alter-live-database", "alter-system", "create-role"],
)
def test_a_sql_restore_cannot_act_beyond_its_own_database(
    stack: Settings, inv: Inv, tmp_path: Path, statement: str, error: str
) -> None:
    ensure_up(stack)
    marker = tmp_path / "pwned"
    dump = _dump(stack, "--format=plain")
    at = dump.index(b"-- PostgreSQL database dump complete")
    evil = statement.format(marker=marker, live=f'"{stack.postgres_db}"').encode()
    path = tmp_path / "evil.sql"
    path.write_bytes(dump[:at] + evil + b"\n" + dump[at:])
    before = fingerprint(_admin(stack))
    with psycopg.connect(_admin(stack), autocommit=True) as conn:
        settings_before = conn.execute("SELECT * FROM pg_db_role_setting").fetchall()

    for into in ((), ("--into", f"copy_{uuid.uuid4().hex[:8]}")):
        _refused(inv("db.restore", str(path), "--yes", *into), error, "was not touched")
    assert not marker.exists()
    assert fingerprint(_admin(stack)) == before
    with psycopg.connect(_admin(stack), autocommit=True) as conn:
        assert conn.execute("SELECT * FROM pg_db_role_setting").fetchall() == settings_before
        assert conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'"
        ).fetchone() == (0,)


@pytest.mark.parametrize(
    ("into", "says"),
    [("", "--into needs the name of a new database"), ("x" * 64, "63-byte limit")],
    ids=["empty", "too-long"],
)
def test_a_bad_into_name_is_a_usage_error_before_anything(
    stack: Settings, inv: Inv, into: str, says: str
) -> None:
    before = _databases(stack)
    result = inv("db.restore", "--latest", "--into", into)
    assert result.returncode == 2, result.stdout + result.stderr
    _refused(result, says)
    assert _databases(stack) == before


def test_a_client_in_the_scratch_copy_does_not_stop_the_restore(
    stack: Settings, inv: Inv, tmp_path: Path
) -> None:
    """Someone (an IDE, Adminer) connected to the restore's scratch database: it is ended
    before the rename, and the restore completes."""
    ensure_up(stack)
    source = f"big_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_app(stack, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(source)))
    into = f"copy_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(_app(stack, source), autocommit=True) as conn:
            conn.execute("CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS t "
                         "FROM generate_series(1, 600000) g")  # fmt: skip
        dump = tmp_path / "big.dump"
        dump.write_bytes(_dump(stack, "--format=custom", "-Z", "0", database=source))
        held: list[psycopg.Connection[tuple[object, ...]]] = []
        done = threading.Event()

        def join_the_scratch() -> None:
            while not done.is_set():
                names = _databases(stack)
                scratch = [n for n in names if n.startswith(into) and "__restoring_" in n]
                if scratch:
                    held.append(psycopg.connect(_app(stack, scratch[0]), autocommit=True))
                    return
                time.sleep(0.01)

        watcher = threading.Thread(target=join_the_scratch)
        watcher.start()
        try:
            result = _ok(inv("db.restore", str(dump), "--into", into))
        finally:
            done.set()
            watcher.join()
        assert held, "the test never got into the scratch database: make the dump bigger"
        assert _gone(held[0]), "the client in the scratch copy was not ended"
        assert f"Database '{into}' created" in result.stdout
    finally:
        with psycopg.connect(_app(stack, "postgres"), autocommit=True) as conn:
            for name in (source, into):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def _gone(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_an_interrupted_restore_leaves_no_tool_running(
    stack: Settings, backups: dict[str, str], tmp_path: Path
) -> None:
    """kill -9 of `inv db.restore`: its pg_restore ends with it (native: the tools run
    here; compose: docker exec's client)."""
    ensure_up(stack)
    source = f"slow_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_app(stack, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(source)))
    try:
        with psycopg.connect(_app(stack, source), autocommit=True) as conn:
            conn.execute("CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS t "
                         "FROM generate_series(1, 1500000) g")  # fmt: skip
        dump = tmp_path / "slow.dump"
        dump.write_bytes(_dump(stack, "--format=custom", database=source))
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "db.restore", str(dump), "--into", f"k_{source}"],
            cwd=ROOT,
            env={**os.environ, **backups},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not _loading(proc.pid):
            assert time.monotonic() < deadline and proc.poll() is None, "pg_restore never started"
            time.sleep(0.02)
        tools = _loading(proc.pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in tools):
            assert time.monotonic() < deadline, f"still running after their inv died: {tools}"
            time.sleep(0.05)
    finally:
        recovered = subprocess.run(
            [sys.executable, "-m", "invoke", "status"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert "was interrupted" in recovered.stderr, recovered.stderr
        with psycopg.connect(_admin(stack), autocommit=True) as conn:
            for name in (source, f"k_{source}"):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def _loading(pid: int) -> list[int]:
    """The processes under `pid` loading the backup: pg_restore here (native), or the docker
    client running it in the container (compose); not the archive's copy or its check."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
        return [c.pid for c in children if _loads(c.cmdline())]
    except psutil.NoSuchProcess:
        return []


def _loads(argv: list[str]) -> bool:
    words = {Path(word).name for word in argv}
    return "pg_restore" in words and "--dbname" in words


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
