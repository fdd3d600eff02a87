"""The running services: each answers, the schema and seed are there, Redis keeps an AOF;
and their security: bound to BIND_ADDRESS, passwords required, least privilege.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import LiteralString

from scripts.errors import StackError
from scripts.infra import net
from scripts.ops.validate.report import Report
from scripts.settings import PORT_KEY_OF, Settings

CORE_TABLES = ("users", "ai_agents", "reviews", "transactions")
PROBE_NOTE = (
    "inv validate: the next two failed logins (a wrong password, then none) are its own checks "
    "that PostgreSQL refuses them"
)
EXTENSIONS = ("uuid-ossp", "pgcrypto")


def check_services(report: Report, settings: Settings) -> None:
    from scripts.ops import swap
    from scripts.ops.stack import probe_for

    for service in ("postgres", "redis"):
        result = probe_for(settings, service)()
        report.add(
            "Services",
            f"{service} answers",
            "pass" if result.ok else "fail",
            result.detail,
            "" if result.ok else "start it with `inv up-core`; see `inv logs`",
        )
        if service == "postgres" and result.ok:
            try:
                _schema(report, settings)
            except StackError as exc:  # e.g. the password changed and up-core has not applied it
                report.add("Services", "schema", "fail", exc.message)
        if service == "redis" and result.ok:
            _redis_aof(report, settings)
    leftover = swap.leftovers_problem(settings)
    report.add(
        "Services",
        "restore leftovers",
        "warn" if leftover else "pass",
        leftover or "no scratch or set-aside database, no temporary role",
    )
    adminer = probe_for(settings, "adminer")()
    if adminer.refused:
        report.add("Services", "adminer answers", "skip", "not started (`inv up` starts it)")
    else:
        report.add(
            "Services",
            "adminer answers",
            "pass" if adminer.ok else "fail",
            adminer.detail,
            "" if adminer.ok else "see `inv logs -s adminer`",
        )


def _redis_aof(report: Report, settings: Settings) -> None:
    from scripts.infra.probes import ProtocolError, RedisError, redis_command

    try:
        reply = redis_command(
            (settings.connect_host, settings.redis_port),
            settings.redis_password.reveal(),
            "CONFIG",
            "GET",
            "appendonly",
        )
    except (OSError, RedisError, ProtocolError) as exc:
        report.add("Services", "redis AOF", "warn", f"CONFIG GET failed: {exc}")
        return
    on = isinstance(reply, list) and b"yes" in reply
    report.add(
        "Services",
        "redis AOF",
        "pass" if on else "fail",
        "appendonly yes" if on else "appendonly is off: data is lost on a crash",
        "" if on else "keep docker/redis/redis.conf's appendonly yes",
    )


_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
_EXTENSIONS = "SELECT extname FROM pg_extension"
_TRIGGERED_TABLES = """
    SELECT c.relname FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE NOT t.tgisinternal AND p.proname = 'set_updated_at'
"""
_UNINDEXED_FOREIGN_KEYS = """
    SELECT c.conrelid::regclass::text || '.' || a.attname
    FROM pg_constraint c
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
    WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
      AND NOT EXISTS (
        SELECT 1 FROM pg_index i
        WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])
"""


def _verdict(
    report: Report, name: str, problems: list[str], *, good: str, bad: str, fix: str, level: str
) -> None:
    """One line of the report: `good` when nothing is wrong, else `bad: problem, problem`."""
    detail = f"{bad}: {', '.join(problems)}" if problems else good
    report.add("Services", name, level if problems else "pass", detail, fix if problems else "")


def _schema(report: Report, settings: Settings) -> None:
    from scripts.infra.database import connect

    with connect(settings) as conn:

        def names(query: LiteralString) -> set[str]:
            return {str(r[0]) for r in conn.execute(query).fetchall()}

        tables = names(_TABLES)
        extensions = names(_EXTENSIONS)
        triggered = names(_TRIGGERED_TABLES)
        checks = [
            ("schema tables", [t for t in CORE_TABLES if t not in tables],
             "users, ai_agents, reviews, transactions", "missing",
             "run `inv reset` then `inv init` to recreate the schema", "fail"),
            ("extensions", [e for e in EXTENSIONS if e not in extensions],
             "uuid-ossp, pgcrypto", "missing",
             "CREATE EXTENSION them (see 01-init-database.sql)", "fail"),
            ("updated_at triggers", [t for t in CORE_TABLES if t in tables and t not in triggered],
             "on all 4 tables", "no updated_at trigger on",
             "recreate them (see 01-init-database.sql)", "fail"),
            ("foreign-key indexes", sorted(names(_UNINDEXED_FOREIGN_KEYS)),
             "every foreign key is indexed", "no index on", "add an index (a migration)", "warn"),
        ]  # fmt: skip
        for name, problems, good, bad, fix, level in checks:
            _verdict(report, name, problems, good=good, bad=bad, fix=fix, level=level)
        if "users" in tables:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE email = 'admin@example.com'), count(*) FROM users"
            ).fetchone()
            seeded = row is not None and row[0] > 0
            report.add(
                "Services",
                "seed data",
                "pass" if seeded else "warn",
                f"{row[1] if row else 0} users, dev logins present"
                if seeded
                else "the dev seed is missing",
                "" if seeded else "run `inv db.seed`",
            )


def check_security(report: Report, settings: Settings) -> None:
    _binds(report, settings)
    _password_logins(report, settings)
    _least_privilege(report, settings)
    _redis_auth(report, settings)


def _binds(report: Report, settings: Settings) -> None:
    for service in PORT_KEY_OF:
        port = settings.port(service)
        addresses = _listening(port)
        if not addresses:
            continue
        wrong = sorted(a for a in addresses if a != settings.bind_address)
        report.add(
            "Security",
            f"{service} bind",
            "fail" if wrong else "pass",
            f"listens on {', '.join(wrong)}:{port}, BIND_ADDRESS is {settings.bind_address}"
            if wrong
            else f"listens on {settings.bind_address}:{port} only",
            "restart it (`inv down`, `inv up-core`) so it binds BIND_ADDRESS" if wrong else "",
        )


def _password_logins(report: Report, settings: Settings) -> None:
    """A login with a wrong password, and one with none, must both be refused."""
    from scripts.infra.probes import PgError, PgLogin, ProtocolError, pg_login, pg_query

    # Whoever reads the server's log later sees whose failed logins these are (PostgreSQL
    # logs no application_name before authentication, so the probes cannot say it).
    with contextlib.suppress(OSError, PgError, ProtocolError):
        pg_query(pg_login(settings), f"DO $$BEGIN RAISE LOG '{PROBE_NOTE}'; END$$", timeout=5)

    def rejected(password: str) -> bool | None:
        login = PgLogin(
            settings.connect_host,
            settings.postgres_port,
            settings.postgres_user,
            password,
            settings.postgres_db,
        )
        try:
            pg_query(login, "SELECT 1", timeout=5)
        except PgError as exc:
            return exc.code in ("28P01", "28000")
        except (OSError, ProtocolError):
            return None
        return False

    for what, password in (("wrong password", secrets.token_urlsafe(16)), ("no password", "")):
        verdict = rejected(password)
        if verdict is None:
            report.add("Security", f"postgres {what}", "skip", "PostgreSQL does not answer")
        else:
            report.add(
                "Security",
                f"postgres {what}",
                "pass" if verdict else "fail",
                f"a login with {what} is refused" if verdict else f"a login with {what} gets in",
                "" if verdict else "require scram-sha-256 for every connection in pg_hba.conf",
            )


def _redis_auth(report: Report, settings: Settings) -> None:
    from scripts.infra.probes import ProtocolError, RedisError, redis_command

    name = "redis without password"
    try:
        reply = redis_command((settings.connect_host, settings.redis_port), None, "PING", timeout=5)
    except RedisError as exc:
        refused = "NOAUTH" in str(exc)
        report.add(
            "Security",
            name,
            "pass" if refused else "warn",
            "unauthenticated commands are refused" if refused else str(exc),
        )
    except (OSError, ProtocolError):
        report.add("Security", name, "skip", "Redis does not answer")
    else:
        report.add(
            "Security",
            name,
            "fail",
            f"an unauthenticated PING answers {reply!r}",
            "set requirepass (REDIS_PASSWORD) and restart Redis",
        )


def _least_privilege(report: Report, settings: Settings) -> None:
    from scripts.infra.probes import PgError, ProtocolError, pg_query
    from scripts.infra.probes import pg_login as login

    try:
        rows, _ = pg_query(
            login(settings), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user", 5
        )
    except (OSError, PgError, ProtocolError):
        report.add("Security", "application role", "skip", "PostgreSQL does not answer")
        return
    superuser = bool(rows) and rows[0][0] == "t"
    report.add(
        "Security",
        "application role",
        "fail" if superuser else "pass",
        f"{settings.postgres_user} is a superuser"
        if superuser
        else f"{settings.postgres_user} owns its database and is no superuser",
        "run `inv up-core`: it gives the tasks an admin role and takes superuser away"
        if superuser
        else "",
    )


def _listening(port: int) -> set[str]:
    return net.listening_on(port)
