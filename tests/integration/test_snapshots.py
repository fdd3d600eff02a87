"""Snapshots, rollbacks, db.reset and branches, on the live test stack (both backends), through
the `inv` command line and stock clients, as an application and its developer use them."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from scripts import settings as settings_module
from scripts.backends import get_backend
from scripts.settings import Settings
from tests.integration.helpers import ROOT, Inv, ensure_up

Conn = psycopg.Connection[tuple[Any, ...]]
PREFIX = "t-"  # every snapshot and branch these tests make
MIGRATIONS = ROOT / "docker" / "migrations"


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _fails(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    return output


def _current() -> Settings:
    """The settings as the env file says now (a branch switch rewrites it)."""
    return settings_module.load()


def _app_url() -> str:
    """DATABASE_URL as an application reads .env: with python-dotenv, fresh each time."""
    from dotenv import dotenv_values

    url = dotenv_values(os.environ["STACK_ENV_FILE"])["DATABASE_URL"]
    assert url
    return url


def _admin(stack: Settings, dbname: str = "postgres") -> Conn:
    return psycopg.connect(make_conninfo(**stack.pg_conninfo(dbname, admin=True)), autocommit=True)


def _md5s(url: str) -> dict[str, str]:
    """md5 of every table of the database `url` names (sorted in memory: a test may have put
    the database on a disk with no room for temporary files)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET work_mem = '256MB'")
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        found = {}
        for schema, table in tables:
            query = sql.SQL(
                "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} AS t"
            ).format(sql.Identifier(schema, table))
            row = conn.execute(query).fetchone()
            found[f"{schema}.{table}"] = str(row[0] if row else "")
    return found


def _snapshots(inv: Inv) -> dict[str, dict[str, Any]]:
    import json

    listed = json.loads(_ok(inv("db.snapshots", "--json")).stdout)
    return {s["name"]: s for s in listed}


def _databases(stack: Settings) -> set[str]:
    with _admin(stack) as conn:
        return {str(r[0]) for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def _spares_made() -> None:
    """Wait until no spare copy is being made in the background (scripts.ops.spares), so a
    test sees only its own databases come and go."""
    import psutil

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        makers = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "scripts.ops.spares" in (p.info["cmdline"] or [])
        ]
        if not makers:
            return
        time.sleep(0.05)
    pytest.fail("a spare copy was still being made after 120 s")


@pytest.fixture
def tidy(stack: Settings, inv: Inv) -> Iterator[Settings]:
    """The stack up, on branch main, with no snapshot or branch of these tests afterwards."""
    ensure_up(stack)
    _spares_made()
    yield stack
    _spares_made()
    if _current().postgres_branch != "main":
        _ok(inv("db.branch", "--switch", "main"))
    for name in _snapshots(inv):
        if name.startswith(PREFIX):
            _ok(inv("db.snapshot", "--delete", name))
    with _admin(stack) as conn:
        for name in _databases(stack):
            if name.startswith(f"{stack.postgres_base_db}__{PREFIX}"):
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    with psycopg.connect(_app_url(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS snap_a, snap_b, snap_total, snap_marker")


def _marker(value: str) -> None:
    with psycopg.connect(_app_url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS snap_marker (value text)")
        conn.execute("INSERT INTO snap_marker VALUES (%s)", [value])


def _markers() -> list[str] | None:
    with psycopg.connect(_app_url(), autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('snap_marker') IS NULL").fetchone() == (True,):
            return None
        return [str(r[0]) for r in conn.execute("SELECT value FROM snap_marker ORDER BY 1")]


# --- a snapshot is one moment ---------------------------------------------------------------


class Writer(threading.Thread):
    """An application that commits without pause: each transaction adds one row to snap_a,
    one to snap_b and counts it in snap_total; it reconnects whenever it is cut off."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.committed = 0
        self.reconnects = 0

    def run(self) -> None:
        conn: Conn | None = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(_app_url(), connect_timeout=5)
                with conn.transaction():
                    n = self.committed + 1
                    conn.execute("INSERT INTO snap_a VALUES (%s)", [n])
                    conn.execute("INSERT INTO snap_b VALUES (%s)", [n])
                    conn.execute("UPDATE snap_total SET n = n + 1")
                self.committed = n
            except psycopg.Error:
                self.reconnects += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()


def test_a_snapshot_taken_while_a_writer_commits_is_one_consistent_state(
    tidy: Settings, inv: Inv
) -> None:
    with psycopg.connect(_app_url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE snap_a (n int PRIMARY KEY)")
        conn.execute("CREATE TABLE snap_b (n int PRIMARY KEY)")
        conn.execute("CREATE TABLE snap_total (n int NOT NULL)")
        conn.execute("INSERT INTO snap_total VALUES (0)")
    writer = Writer()
    writer.start()
    try:
        while writer.committed < 50:
            time.sleep(0.01)
        taken = _ok(inv("db.snapshot", f"{PREFIX}moving"))
        assert "Ending 1 connection(s)" in taken.stdout, taken.stdout
        before = writer.committed
        deadline = time.monotonic() + 30
        while writer.committed < before + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.committed >= before + 50, "the writer could not go on after the snapshot"
    assert writer.reconnects >= 1

    _ok(inv("db.rollback", f"{PREFIX}moving"))
    with psycopg.connect(_app_url()) as conn:
        a = conn.execute("SELECT count(*), coalesce(max(n), 0) FROM snap_a").fetchone()
        b = conn.execute("SELECT count(*), coalesce(max(n), 0) FROM snap_b").fetchone()
        total = conn.execute("SELECT n FROM snap_total").fetchone()
    assert a is not None and b is not None and total is not None
    assert a == b == (total[0], total[0]), (a, b, total)
    assert 50 <= total[0] < writer.committed


# --- rollback ---------------------------------------------------------------------------------


def test_rollback_while_the_application_holds_open_connections(tidy: Settings, inv: Inv) -> None:
    _marker("before")
    _ok(inv("db.snapshot", f"{PREFIX}open"))
    _marker("after")
    idle = psycopg.connect(_app_url(), autocommit=True)
    in_transaction = psycopg.connect(_app_url())
    in_transaction.execute("SELECT count(*) FROM snap_marker")  # a transaction left open
    reader = psycopg.connect(_app_url(), autocommit=True)
    try:
        result = _ok(inv("db.rollback", f"{PREFIX}open"))
        assert "ended 3 connection(s)" in result.stdout, result.stdout
        for old in (idle, in_transaction, reader):
            with pytest.raises(psycopg.OperationalError):
                old.execute("SELECT 1")
    finally:
        for conn in (idle, in_transaction, reader):
            conn.close()
    assert _markers() == ["before"]  # a new connection sees the snapshot's state
    assert f"{PREFIX}open" in _snapshots(inv), "the snapshot is kept for another rollback"


def test_a_rollback_can_be_rolled_back(tidy: Settings, inv: Inv) -> None:
    _marker("one")
    _ok(inv("db.snapshot", f"{PREFIX}one"))
    _marker("two")
    at_two = _md5s(_app_url())

    _ok(inv("db.rollback", f"{PREFIX}one"))
    assert _markers() == ["one"]
    undone = _ok(inv("db.rollback", "undo"))
    assert "back to snapshot 'undo'" in undone.stdout
    assert _markers() == ["one", "two"]
    assert _md5s(_app_url()) == at_two
    _ok(inv("db.rollback", "undo"))  # the undo of the undo
    assert _markers() == ["one"]
    _ok(inv("db.rollback", "--latest"))  # t-one, the newest snapshot a user took
    assert _markers() == ["one"]


def test_names_are_checked_and_never_collide(tidy: Settings, inv: Inv) -> None:
    assert "not a snapshot name" in _fails(inv("db.snapshot", "Bad/Name"), code=2)
    assert "stack's own snapshot" in _fails(inv("db.snapshot", "init"), code=2)
    _ok(inv("db.snapshot", f"{PREFIX}same"))
    output = _fails(inv("db.snapshot", f"{PREFIX}same"))
    assert f"Snapshot '{PREFIX}same' exists already" in output
    output = _fails(inv("db.rollback", f"{PREFIX}sam"))
    assert f"did you mean '{PREFIX}same'" in output
    assert "not a branch name" in _fails(inv("db.branch", "feature/x"), code=2)


# --- db.reset -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _kept_init(stack: Settings) -> Iterator[None]:
    """The post-init snapshot as it is, put back afterwards (a test migration goes again)."""
    init = f"{stack.postgres_base_db}__snapshot__init"
    saved = f"{stack.postgres_base_db}__t_saved_init"
    with _admin(stack) as conn:
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [init],
        ).fetchone()
        assert comment is not None, "inv init made no post-init snapshot"
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                sql.Identifier(saved), sql.Identifier(init), sql.Identifier(stack.postgres_user)
            )
        )
    try:
        yield
    finally:
        _spares_made()
        with _admin(stack) as conn:
            for statement in (
                "DROP DATABASE IF EXISTS {spare} WITH (FORCE)",  # of the init put back below
                "DROP DATABASE IF EXISTS {init} WITH (FORCE)",
                "ALTER DATABASE {saved} RENAME TO {init}",
                "ALTER DATABASE {init} WITH ALLOW_CONNECTIONS false",
            ):
                conn.execute(
                    sql.SQL(statement).format(
                        init=sql.Identifier(init),
                        saved=sql.Identifier(saved),
                        spare=sql.Identifier(f"{stack.postgres_base_db}__spare__init"),
                    )
                )
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(init), sql.Literal(comment[0])
                )
            )


def test_db_reset_returns_to_the_post_init_contents_after_a_migration_and_writes(
    tidy: Settings, inv: Inv
) -> None:
    migration = MIGRATIONS / "9001_snapshot_test_labels.sql"
    _ok(inv("db.snapshot", f"{PREFIX}before-reset-test"))
    try:
        with _kept_init(tidy):
            _ok(inv("db.reset"))
            post_init = _md5s(_app_url())

            with psycopg.connect(_app_url(), autocommit=True) as conn:
                conn.execute(
                    "UPDATE users SET is_verified = NOT is_verified WHERE username = 'alice_dev'"
                )
                conn.execute("DELETE FROM reviews")
            result = _ok(inv("db.reset"))
            assert "back to snapshot 'init'" in result.stdout
            assert _md5s(_app_url()) == post_init

            migration.write_text(
                "CREATE TABLE snapshot_test_labels (name text PRIMARY KEY);\n"
                "INSERT INTO snapshot_test_labels VALUES ('kept by db.reset');\n"
            )
            _ok(inv("db.migrate"))
            post_migration = _md5s(_app_url())
            assert post_migration != post_init
            with psycopg.connect(_app_url(), autocommit=True) as conn:
                conn.execute("INSERT INTO snapshot_test_labels VALUES ('a write')")
                conn.execute("DELETE FROM transactions")
            _ok(inv("db.reset"))
            assert _md5s(_app_url()) == post_migration  # schema + seed + migrations, exactly
    finally:
        migration.unlink(missing_ok=True)
        _ok(inv("db.rollback", f"{PREFIX}before-reset-test"))


def test_db_reset_leaves_redis_alone_unless_asked(tidy: Settings, inv: Inv) -> None:
    import redis

    client = redis.Redis.from_url(tidy.redis_url.reveal())
    try:
        client.set("snap:key", "kept")
        _ok(inv("db.snapshot", f"{PREFIX}before-redis-test"))
        _ok(inv("db.reset"))
        assert client.get("snap:key") == b"kept"
        _ok(inv("db.reset", "--with-redis"))
        assert client.get("snap:key") is None
        _ok(inv("db.rollback", "undo", "--with-redis"))  # the reset's undo has Redis too
        assert client.get("snap:key") == b"kept"
        _ok(inv("db.rollback", f"{PREFIX}before-redis-test"))
    finally:
        client.delete("snap:key")
        client.close()


def test_a_snapshot_with_redis_puts_every_key_back(tidy: Settings, inv: Inv) -> None:
    import redis

    client = redis.Redis.from_url(tidy.redis_url.reveal())
    other_db = redis.Redis.from_url(tidy.redis_url.reveal().rsplit("/", 1)[0] + "/3")
    try:
        client.set("snap:str", b"\x00\xffbinary")
        client.set("snap:ttl", "expires", ex=3600)
        client.rpush("snap:list", "a", "b")
        other_db.hset("snap:hash", mapping={"f": "v"})
        _ok(inv("db.snapshot", f"{PREFIX}with-redis", "--with-redis"))
        client.delete("snap:str")
        client.set("snap:new", "x")
        other_db.delete("snap:hash")

        _ok(inv("db.rollback", f"{PREFIX}with-redis", "--with-redis"))
        assert client.get("snap:str") == b"\x00\xffbinary"
        assert 3500 < client.ttl("snap:ttl") <= 3600
        assert client.lrange("snap:list", 0, -1) == [b"a", b"b"]
        assert other_db.hgetall("snap:hash") == {b"f": b"v"}
        assert client.get("snap:new") is None
        _ok(inv("db.rollback", "undo", "--with-redis"))
        assert client.get("snap:new") == b"x"
    finally:
        client.delete("snap:str", "snap:ttl", "snap:list", "snap:new")
        other_db.delete("snap:hash")
        client.close()
        other_db.close()


# --- branches -------------------------------------------------------------------------------


def test_branches_create_switch_and_delete(tidy: Settings, inv: Inv) -> None:
    _marker("on main")
    main_url = _app_url()
    created = _ok(inv("db.branch", f"{PREFIX}feature"))
    assert f"Branch '{PREFIX}feature'" in created.stdout
    branch_url = _app_url()
    assert branch_url != main_url
    assert branch_url.endswith(f"/{tidy.postgres_base_db}__{PREFIX}feature")
    assert _markers() == ["on main"]  # a stock client following .env sees the clone
    _marker("on the branch")

    status = _ok(inv("status", "--json"))
    assert f'"branch": "{PREFIX}feature"' in status.stdout
    backup_banner = _ok(inv("db.migrate", "--status")).stdout
    assert f"database {tidy.postgres_base_db}__{PREFIX}feature" in backup_banner

    _ok(inv("db.branch", "--switch", "main"))
    assert _app_url() == main_url
    assert _markers() == ["on main"]
    _ok(inv("db.branch", "--switch", f"{PREFIX}feature"))
    assert _markers() == ["on main", "on the branch"]

    assert "is the current one" in _fails(inv("db.branch", "--delete", f"{PREFIX}feature", "--yes"))
    _ok(inv("db.branch", "--switch", "main"))
    assert "add --yes" in _fails(inv("db.branch", "--delete", f"{PREFIX}feature"))
    _ok(inv("db.branch", "--delete", f"{PREFIX}feature", "--yes"))
    assert f"{tidy.postgres_base_db}__{PREFIX}feature" not in _databases(tidy)
    listed = _ok(inv("db.branch", "--list")).stdout
    assert f"{PREFIX}feature" not in listed and "main" in listed


def test_a_branch_set_by_hand_in_the_env_file_is_named_with_the_fix(
    tidy: Settings, inv: Inv
) -> None:
    """POSTGRES_BRANCH edited in .env (DATABASE_URL left as it was), then a branch that does
    not exist: each gets one sentence naming the fix, and `--switch` puts both right."""
    from scripts import envfile

    env_file = Path(os.environ["STACK_ENV_FILE"])
    original = env_file.read_text()
    _ok(inv("db.branch", f"{PREFIX}edited"))
    _ok(inv("db.branch", "--switch", "main"))
    try:
        envfile.update(env_file, {"POSTGRES_BRANCH": f"{PREFIX}edited"})
        output = _fails(inv("db.migrate"))
        assert "names another database than POSTGRES_BRANCH=t-edited" in output
        assert f"`inv db.branch --switch {PREFIX}edited`" in output
        _ok(inv("db.branch", "--switch", f"{PREFIX}edited"))
        assert _app_url().endswith(f"/{tidy.postgres_base_db}__{PREFIX}edited")
        _ok(inv("db.migrate"))

        envfile.update(env_file, {"POSTGRES_BRANCH": f"{PREFIX}nowhere", "DATABASE_URL": ""})
        output = _fails(inv("db.migrate"))
        assert f"POSTGRES_BRANCH={PREFIX}nowhere names no database" in output
        assert "`inv db.branch --switch main`" in output

        # A typo with DATABASE_URL left as it was: the advice leads out, never round in a
        # circle (--switch to the typo names the way back to main, which works).
        envfile.update(env_file, {"POSTGRES_BRANCH": f"{PREFIX}typo"})
        output = _fails(inv("db.migrate"))
        assert f"`inv db.branch --switch {PREFIX}typo`" in output
        output = _fails(inv("db.branch", "--switch", f"{PREFIX}typo"))
        assert f"There is no branch '{PREFIX}typo'" in output
        assert "`inv db.branch --switch main`" in output
        _ok(inv("db.branch", "--switch", "main"))
        _ok(inv("db.migrate"))
    finally:
        env_file.write_text(original)


def _git(repo: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_follow_git_keeps_a_feature_branch_migration_out_of_main(
    tidy: Settings, inv: Inv, tmp_path: Path
) -> None:
    repo = tmp_path / "app"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    migration = MIGRATIONS / "9002_feature_only_table.sql"
    feature = f"{PREFIX}tags"
    try:
        _ok(inv("db.branch", "--follow-git", "--repo", str(repo)))
        _git(repo, "checkout", "-q", "-b", feature)
        assert _current().postgres_branch == feature
        migration.write_text("CREATE TABLE feature_only (id int);\n")
        applied = _ok(inv("db.migrate"))
        assert "9002" in applied.stdout
        migration.unlink()  # the file is the feature branch's: main's checkout has none

        _git(repo, "checkout", "-q", "main")
        assert _current().postgres_branch == "main"
        with psycopg.connect(_app_url()) as conn:
            assert conn.execute("SELECT to_regclass('feature_only')").fetchone() == (None,)
            logged = conn.execute(
                "SELECT count(*) FROM schema_migrations WHERE version = '9002'"
            ).fetchone()
            assert logged == (0,)
        _git(repo, "checkout", "-q", feature)  # the branch's database again, as it was left
        with psycopg.connect(_app_url()) as conn:
            assert conn.execute("SELECT to_regclass('feature_only')").fetchone() != (None,)
        _git(repo, "checkout", "-q", "main")
    finally:
        migration.unlink(missing_ok=True)
        _ok(inv("db.branch", "--unfollow-git", "--repo", str(repo)))
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()


# --- a full disk ----------------------------------------------------------------------------


DISK_BYTES = 96 * 1024 * 1024


@contextlib.contextmanager
def _database_on_a_small_disk(stack: Settings, inv: Inv) -> Iterator[None]:
    """The live database moved into a tablespace on a tmpfs of DISK_BYTES: a real disk that
    fills up. Native: the tmpfs is where the server can reach it. Compose: mounted inside the
    postgres volume before the container starts, so the container sees it too."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    backend = get_backend(stack)
    if backend.name == "compose":
        name = f"{stack.project}_postgres_data"
        volume = subprocess.run(
            ["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", name],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        mountpoint, inside = Path(volume) / "small_disk", "/var/lib/postgresql/data/small_disk"
        _ok(inv("down"))
    else:  # beside the data dir: where the server's account can reach it
        with _admin(stack) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        mountpoint = Path(str(row[0])).parent / "small_disk"
        inside = str(mountpoint)
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mountpoint)], check=True
    )
    try:
        ensure_up(stack)
        owner = _server_owner(stack, backend.name)
        (mountpoint / "ts").mkdir()
        os.chown(mountpoint / "ts", *owner)
        mountpoint.chmod(0o755)
        with _admin(stack) as conn:
            conn.execute(f"CREATE TABLESPACE t_small LOCATION '{inside}/ts'")
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET TABLESPACE t_small").format(
                    sql.Identifier(stack.postgres_db)
                )
            )
        yield
    finally:
        with _admin(stack) as conn:
            conn.execute(
                sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}"
                ).format(sql.Literal(stack.postgres_db))
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET TABLESPACE pg_default").format(
                    sql.Identifier(stack.postgres_db)
                )
            )
            conn.execute("DROP TABLESPACE IF EXISTS t_small")
        if backend.name == "compose":
            _ok(inv("down"))
        subprocess.run(["umount", str(mountpoint)], check=True)
        mountpoint.rmdir()
        ensure_up(stack)


def _server_owner(stack: Settings, backend: str) -> tuple[int, int]:
    """uid and gid of the account PostgreSQL runs as (on compose: inside the container)."""
    if backend == "compose":
        found = subprocess.run(
            ["docker", "compose", "--project-name", stack.project, "exec", "-T", "postgres",
             "stat", "-c", "%u %g", "/var/lib/postgresql/data/PG_VERSION"],
            capture_output=True, text=True, check=True, cwd=ROOT, env=stack.subprocess_env(),
        ).stdout.split()  # fmt: skip
        return int(found[0]), int(found[1])
    with _admin(stack) as conn:
        row = conn.execute(
            "SELECT setting FROM pg_settings WHERE name = 'data_directory'"
        ).fetchone()
    assert row is not None
    info = Path(str(row[0])).stat()
    return info.st_uid, info.st_gid


def test_a_full_disk_while_taking_a_snapshot_leaves_no_half_snapshot(
    tidy: Settings, inv: Inv
) -> None:
    with _database_on_a_small_disk(tidy, inv):
        with psycopg.connect(_app_url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE snap_marker (value text)")
            conn.execute(  # ~55 MB in rows stored as they are: a copy cannot fit beside it
                "INSERT INTO snap_marker "
                "SELECT repeat(md5(g::text), 60) FROM generate_series(1, 28000) AS g"
            )
        before = _md5s(_app_url())
        databases = _databases(tidy)

        output = _fails(inv("db.snapshot", f"{PREFIX}too-big"))
        assert re.search(r"could not copy .*(No space left|could not extend)", output), output
        assert "nothing was changed" in output

        assert f"{PREFIX}too-big" not in _snapshots(inv)
        assert _databases(tidy) == databases, "a half copy was left"
        assert _md5s(_app_url()) == before
        with psycopg.connect(_app_url(), autocommit=True) as conn:  # it takes connections again
            conn.execute("DROP TABLE snap_marker")


# --- killed at every step ---------------------------------------------------------------------


def _partials(stack: Settings) -> set[str]:
    return {n for n in _databases(stack) if "__snapshotting__" in n}


@pytest.mark.parametrize("point", ["copy.closed", "copy.created", "snapshot.copied"])
def test_a_snapshot_killed_at_any_step_is_no_snapshot_and_the_database_opens_again(
    tidy: Settings, inv: Inv, point: str
) -> None:
    from scripts.infra import crashpoints

    _marker("kept")
    before = _md5s(_app_url())
    killed = inv("db.snapshot", f"{PREFIX}killed", env={crashpoints.VARIABLE: point})
    assert killed.returncode == -9, killed.stdout + killed.stderr

    assert f"{PREFIX}killed" not in _snapshots(inv)  # the next command, whatever it is
    assert _md5s(_app_url()) == before  # and the database takes connections again
    if point == "snapshot.copied":  # the copy was complete, its snapshot name not yet given
        status = _ok(inv("status"))
        assert "Half copies left by killed snapshots" in status.stdout, status.stdout
    _ok(inv("clean"))
    ensure_up(tidy)
    assert _partials(tidy) == set(), "a half copy was left after inv clean"
    _ok(inv("db.snapshot", f"{PREFIX}killed"))  # the name is free


@pytest.mark.parametrize("point", ["rollback.closed", "rollback.set-aside", "rollback.copied"])
def test_a_rollback_killed_at_any_step_leaves_the_old_state_or_the_new_one(
    tidy: Settings, inv: Inv, point: str
) -> None:
    from scripts.infra import crashpoints

    _marker("snapshot state")
    _ok(inv("db.snapshot", f"{PREFIX}target"))
    _marker("live state")
    live_state = _md5s(_app_url())
    _spares_made()  # the rollback renames the spare into place (the copying path: below)
    killed = inv("db.rollback", f"{PREFIX}target", env={crashpoints.VARIABLE: point})
    assert killed.returncode == -9, killed.stdout + killed.stderr

    done = _ok(inv("up-core"))  # what a user runs next
    output = done.stdout + done.stderr
    markers = _markers()
    if point == "rollback.copied":
        assert markers == ["snapshot state"], output
        assert "it was finished" in output
        _ok(inv("db.rollback", "undo"))  # the replaced state was kept as undo
        assert _md5s(_app_url()) == live_state
    else:
        assert markers == ["live state", "snapshot state"], output
        assert "the database is as it was" in output  # and never "finished"
        assert "finished" not in output
        assert _md5s(_app_url()) == live_state
    assert _partials(tidy) == set()
    assert f"{PREFIX}target" in _snapshots(inv)


@pytest.mark.parametrize("point", ["rollback.closed", "rollback.set-aside", "rollback.copied"])
def test_a_rollback_that_copies_killed_at_any_step_leaves_the_old_state_or_the_new_one(
    tidy: Settings, inv: Inv, point: str
) -> None:
    """As above, with no spare copy ready: the rollback copies the snapshot itself."""
    from scripts.infra import crashpoints

    _marker("snapshot state")
    _ok(inv("db.snapshot", f"{PREFIX}target"))
    _spares_made()
    with _admin(tidy) as conn:
        spare = f"{tidy.postgres_base_db}__spare__{PREFIX}target"
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(spare)))
    _marker("live state")
    live_state = _md5s(_app_url())
    killed = inv("db.rollback", f"{PREFIX}target", env={crashpoints.VARIABLE: point})
    assert killed.returncode == -9, killed.stdout + killed.stderr

    done = _ok(inv("up-core"))
    output = done.stdout + done.stderr
    if point == "rollback.copied":
        assert _markers() == ["snapshot state"], output
        assert "it was finished" in output
        _ok(inv("db.rollback", "undo"))
    else:
        assert "the database is as it was" in output
        assert "finished" not in output
    assert _md5s(_app_url()) == live_state
    assert _partials(tidy) == set()


def test_a_snapshot_still_running_is_not_taken_for_a_killed_one(tidy: Settings, inv: Inv) -> None:
    """Commands run meanwhile (listing, status) leave the journal and the temporary copy of a
    command that still holds the stack's lock alone; once the lock is free, the journal is a
    crash's, and the next command puts it in order. Holding the lock here stands in for the
    running command: a kill at copy.created leaves exactly what a snapshot has mid-way."""
    from scripts.infra import crashpoints, lock

    _marker("kept")
    before = _md5s(_app_url())
    journal = tidy.state_dir / "copy.journal"
    killed = inv("db.snapshot", f"{PREFIX}running", env={crashpoints.VARIABLE: "copy.created"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert journal.exists()
    partial = _partials(tidy)
    assert len(partial) == 1
    with lock.held(tidy.state_dir):  # as if that snapshot were still copying
        listed = inv("db.snapshots", "--json")
        assert listed.returncode == 0, listed.stderr
        assert "interrupted" not in listed.stderr, listed.stderr
        status = _ok(inv("status"))
        assert "Another command is changing this stack" in status.stdout, status.stdout
        assert "Half copies" not in status.stdout
        assert journal.exists() and _partials(tidy) == partial  # untouched

    after = inv("db.snapshots", "--json")
    assert after.returncode == 0, after.stderr
    assert "A copy of" in after.stderr and "was interrupted" in after.stderr, after.stderr
    assert not journal.exists()
    assert _partials(tidy) == set()
    assert f"{PREFIX}running" not in _snapshots(inv)
    assert _md5s(_app_url()) == before  # and the database takes connections again


def test_a_spare_copy_makes_the_next_rollback_a_rename(tidy: Settings, inv: Inv) -> None:
    _marker("snapshot state")
    _ok(inv("db.snapshot", f"{PREFIX}spared"))
    _spares_made()
    assert _snapshots(inv)[f"{PREFIX}spared"]["spare"] is True
    _marker("later")

    first = _ok(inv("db.rollback", f"{PREFIX}spared"))
    assert "its spare copy was ready" in first.stdout, first.stdout
    assert _markers() == ["snapshot state"]
    _marker("again later")
    _spares_made()  # made again, for the next rollback
    second = _ok(inv("db.rollback", f"{PREFIX}spared"))
    assert "its spare copy was ready" in second.stdout, second.stdout
    assert _markers() == ["snapshot state"]  # the spare held the snapshot, not a later state

    _spares_made()
    spare = f"{tidy.postgres_base_db}__spare__{PREFIX}spared"
    assert spare in _databases(tidy)
    _ok(inv("db.snapshot", "--delete", f"{PREFIX}spared"))
    assert spare not in _databases(tidy)


# --- reset on a branch ------------------------------------------------------------------------


@pytest.mark.destructive
def test_a_reset_on_a_branch_backs_up_main_and_leaves_main_current(
    tidy: Settings, inv: Inv, tmp_path: Path
) -> None:
    """`inv reset` run on a branch: main is made current first, so the safety backup holds
    main's database (which restores into the stack made again) and a reset killed while it
    deletes (native: at reset.data.set-aside) leaves an env file the stack starts with."""
    from scripts.infra import crashpoints

    _marker("main's own")
    main_state = _md5s(_app_url())
    _ok(inv("db.branch", f"{PREFIX}doomed"))
    _marker("the branch's")
    assert _current().postgres_branch == f"{PREFIX}doomed"

    backups = {"BACKUP_DIR": str(tmp_path / "backups")}
    if tidy.backend == "native":
        killed = inv(
            "reset", "--yes", env={**backups, crashpoints.VARIABLE: "reset.data.set-aside"}
        )
        assert killed.returncode == -9, killed.stdout + killed.stderr
    else:
        _ok(inv("reset", "--yes", env=backups))
    assert _current().postgres_branch == "main"

    _ok(inv("up-core"))  # a new stack from the init scripts, on main
    (saved,) = (tmp_path / "backups").glob("before-reset-*.dump")
    _ok(inv("db.restore", str(saved), "--yes", "--no-backup", env=backups))
    assert _md5s(_app_url()) == main_state
    assert _markers() == ["main's own"]


def test_a_branch_whose_database_was_dropped_is_named_and_wedges_nothing(
    tidy: Settings, inv: Inv
) -> None:
    """The current branch's database dropped by hand: a rollback or a snapshot is one sentence
    with the way back, leaves no journal behind, and every other command still works."""
    _ok(inv("db.snapshot", f"{PREFIX}before"))
    _ok(inv("db.branch", f"{PREFIX}gone"))
    branch_db = _current().postgres_db
    with _admin(tidy) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(branch_db)))

    for command in (("db.rollback", f"{PREFIX}before"), ("db.snapshot", f"{PREFIX}after")):
        refused = inv(*command)
        output = refused.stdout + refused.stderr
        assert refused.returncode == 1, output
        assert "Traceback" not in output, output
        assert f"POSTGRES_BRANCH={PREFIX}gone names no database" in output, output
        assert "--switch main" in output
        assert not (tidy.state_dir / "copy.journal").exists()
    _ok(inv("status"))
    _ok(inv("db.branch", "--switch", "main"))
    _ok(inv("health"))
    assert f"{PREFIX}after" not in _snapshots(inv)


def test_latest_and_undo_never_bring_another_branch_s_data(tidy: Settings, inv: Inv) -> None:
    """--latest is the current branch's newest snapshot; the undo of a rollback made on
    another branch is refused with the switch that undoes it; a snapshot of another branch
    named outright is used, and the rollback says whose it was."""
    _marker("main")
    _ok(inv("db.snapshot", f"{PREFIX}of-main"))
    _ok(inv("db.branch", f"{PREFIX}b2"))
    _marker("b2")
    _ok(inv("db.snapshot", f"{PREFIX}of-b2"))  # the newest snapshot of all
    _ok(inv("db.rollback", f"{PREFIX}of-b2"))  # on b2: the undo holds b2's state
    _ok(inv("db.branch", "--switch", "main"))
    main_state = _md5s(_app_url())

    refused = inv("db.rollback", "undo")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"`inv db.branch --switch {PREFIX}b2`" in refused.stderr, refused.stderr
    assert _md5s(_app_url()) == main_state

    latest = _ok(inv("db.rollback", "--latest"))
    assert f"{PREFIX}of-main" in latest.stdout, latest.stdout
    assert _markers() == ["main"]

    other = _ok(inv("db.rollback", f"{PREFIX}of-b2"))
    assert f"was taken of branch '{PREFIX}b2'" in other.stdout + other.stderr
    assert _markers() == ["b2", "main"]


@pytest.mark.parametrize("point", ["rollback.set-aside", "rollback.copied"])
def test_a_rollback_with_redis_killed_leaves_both_old_or_both_new(
    tidy: Settings, inv: Inv, point: str
) -> None:
    """Killed after its copy, a rollback --with-redis is finished with Redis too; killed
    before, neither the database nor Redis changes."""
    import redis

    from scripts.infra import crashpoints

    client = redis.Redis.from_url(tidy.redis_url.reveal())
    try:
        _marker("snapshot state")
        client.set("snap:pair", "snapshot value")
        _ok(inv("db.snapshot", f"{PREFIX}pair", "--with-redis"))
        _marker("live state")
        client.set("snap:pair", "live value")
        killed = inv(
            "db.rollback", f"{PREFIX}pair", "--with-redis", env={crashpoints.VARIABLE: point}
        )
        assert killed.returncode == -9, killed.stdout + killed.stderr

        _ok(inv("up-core"))
        if point == "rollback.copied":
            assert _markers() == ["snapshot state"]
            assert client.get("snap:pair") == b"snapshot value"
        else:
            assert _markers() == ["live state", "snapshot state"]
            assert client.get("snap:pair") == b"live value"
        pending = list((tidy.state_dir).rglob(".rollback-pending*"))
        assert pending == [], pending
    finally:
        client.delete("snap:pair")
        client.close()
