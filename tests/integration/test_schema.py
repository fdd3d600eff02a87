"""Behaviour of docker/init-scripts: the schema (01) and the dev seed data (02).

Runs against a live, freshly seeded database through the ``pg_conn`` fixture
(an autocommit psycopg 3 connection from tests/integration/conftest.py).
Every write happens inside ``pg_conn.transaction(force_rollback=True)``, except
in the re-seed test, which applies the seed file for real and then asserts that
doing so changed nothing. The database is left as it was found.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

Conn = psycopg.Connection[Any]

INIT_SCRIPTS = Path(__file__).resolve().parents[2] / "docker" / "init-scripts"
SEED_FILE = INIT_SCRIPTS / "02-seed-dev-data.sql"

TABLES = ("users", "ai_agents", "reviews", "transactions")

# Fixed ids from 02-seed-dev-data.sql.
ADMIN_ID = uuid.UUID("00000000-0000-4000-a000-000000000101")
ALICE_ID = uuid.UUID("00000000-0000-4000-a000-000000000103")  # developer
DAVE_ID = uuid.UUID("00000000-0000-4000-a000-000000000106")  # user
ERIN_ID = uuid.UUID("00000000-0000-4000-a000-000000000107")  # user
CODEPILOT_ID = uuid.UUID("00000000-0000-4000-a000-000000000201")  # 3 reviews
SQL_WHISPERER_ID = uuid.UUID("00000000-0000-4000-a000-000000000202")  # sold
BLOG_DRAFTER_ID = uuid.UUID("00000000-0000-4000-a000-000000000204")  # not reviewed by dave
PAPER_DIGEST_ID = uuid.UUID("00000000-0000-4000-a000-000000000207")  # no reviews
QUIZ_TUTOR_ID = uuid.UUID("00000000-0000-4000-a000-000000000209")  # no reviews
REVIEW_ID = uuid.UUID("00000000-0000-4000-a000-000000000301")
TRANSACTION_ID = uuid.UUID("00000000-0000-4000-a000-000000000401")

SEED_ROW_IDS = {
    "users": ADMIN_ID,
    "ai_agents": CODEPILOT_ID,
    "reviews": REVIEW_ID,
    "transactions": TRANSACTION_ID,
}

SEEDED_COUNTS = {"users": 9, "ai_agents": 10, "reviews": 15, "transactions": 10}
SEEDED_ROLES = {"admin": 2, "developer": 3, "user": 4}

# (email, password) pairs documented in the seed file's login table.
DEV_LOGINS = [
    ("admin@example.com", "admin123!"),
    ("alice@example.com", "dev123!"),
    ("dave@example.com", "user123!"),
]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def insert(conn: Conn, table: str, row: dict[str, object]) -> None:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(column) for column in row),
        sql.SQL(", ").join(sql.Placeholder() for _ in row),
    )
    conn.execute(query, list(row.values()))


def new_user(**overrides: object) -> dict[str, object]:
    suffix = uuid.uuid4().hex[:12]
    row: dict[str, object] = {
        "email": f"test-{suffix}@example.com",
        "username": f"test_{suffix}",
        "password_hash": "not-a-real-hash",
        "role": "user",
    }
    return row | overrides


def new_agent(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "owner_id": ALICE_ID,
        "name": "Test agent",
        "category": "productivity",
        "price_type": "one_time",
        "price": Decimal("10.00"),
        "status": "draft",
    }
    return row | overrides


def new_review(**overrides: object) -> dict[str, object]:
    # The seed has no review by the admin, so this pair is free.
    row: dict[str, object] = {"agent_id": CODEPILOT_ID, "user_id": ADMIN_ID, "rating": 4}
    return row | overrides


def new_transaction(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "buyer_id": DAVE_ID,
        "seller_id": ALICE_ID,
        "agent_id": CODEPILOT_ID,
        "amount": Decimal("19.99"),
        "currency": "USD",
        "status": "pending",
        "payment_method": "card",
    }
    return row | overrides


def rating_mismatches(conn: Conn) -> list[tuple[Any, ...]]:
    """Agents whose stored rating aggregates differ from their reviews."""
    return conn.execute(
        """
        SELECT a.id, a.rating_count, a.rating_average,
               count(r.id), coalesce(round(avg(r.rating), 2), 0)
          FROM ai_agents AS a
          LEFT JOIN reviews AS r ON r.agent_id = a.id
         GROUP BY a.id
        HAVING a.rating_count <> count(r.id)
            OR a.rating_average <> coalesce(round(avg(r.rating), 2), 0)
        """
    ).fetchall()


def agent_rating(conn: Conn, agent_id: uuid.UUID) -> tuple[int, Decimal]:
    row = conn.execute(
        "SELECT rating_count, rating_average FROM ai_agents WHERE id = %s",
        [agent_id],
    ).fetchone()
    assert row is not None
    return int(row[0]), Decimal(row[1])


def table_fingerprints(conn: Conn) -> dict[str, tuple[int, str]]:
    """Row count and md5 over the full text of every row, per table."""
    fingerprints: dict[str, tuple[int, str]] = {}
    for table in TABLES:
        query = sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))"
            " FROM {} AS t"
        ).format(sql.Identifier(table))
        row = conn.execute(query).fetchone()
        assert row is not None
        fingerprints[table] = (int(row[0]), str(row[1]))
    return fingerprints


# --------------------------------------------------------------------------- #
# structure
# --------------------------------------------------------------------------- #


def test_tables_exist(pg_conn: Conn) -> None:
    rows = pg_conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    ).fetchall()
    assert set(TABLES) <= {row[0] for row in rows}


def test_extensions_installed(pg_conn: Conn) -> None:
    rows = pg_conn.execute("SELECT extname FROM pg_extension").fetchall()
    assert {"uuid-ossp", "pgcrypto"} <= {row[0] for row in rows}
    row = pg_conn.execute("SELECT uuid_generate_v4(), gen_salt('bf')").fetchone()
    assert row is not None and all(value is not None for value in row)


def test_every_foreign_key_is_indexed(pg_conn: Conn) -> None:
    unindexed = pg_conn.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname
          FROM pg_constraint AS c
         WHERE c.contype = 'f'
           AND c.conrelid = ANY (%s::regclass[])
           AND NOT EXISTS (
                 SELECT 1 FROM pg_index AS i
                  WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])
        """,
        [list(TABLES)],
    ).fetchall()
    assert unindexed == []


@pytest.mark.parametrize("table", TABLES)
def test_update_sets_updated_at(pg_conn: Conn, table: str) -> None:
    row_id = SEED_ROW_IDS[table]
    select = sql.SQL("SELECT updated_at FROM {} WHERE id = %s").format(sql.Identifier(table))
    touch = sql.SQL(
        "UPDATE {} SET created_at = created_at WHERE id = %s RETURNING updated_at, now()"
    ).format(sql.Identifier(table))
    forge = sql.SQL(
        "UPDATE {} SET updated_at = '2000-01-01T00:00:00Z' WHERE id = %s"
        " RETURNING updated_at, now()"
    ).format(sql.Identifier(table))

    with pg_conn.transaction(force_rollback=True):
        before = pg_conn.execute(select, [row_id]).fetchone()
        assert before is not None, f"seed row {row_id} missing from {table}"

        # An ordinary update moves updated_at forward to the transaction time.
        touched = pg_conn.execute(touch, [row_id]).fetchone()
        assert touched is not None
        assert touched[0] == touched[1]
        assert touched[0] > before[0]

        # An explicit stale value is replaced as well.
        forged = pg_conn.execute(forge, [row_id]).fetchone()
        assert forged is not None
        assert forged[0] == forged[1]


# --------------------------------------------------------------------------- #
# seed data
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(("table", "expected"), sorted(SEEDED_COUNTS.items()))
def test_seed_rows_present(pg_conn: Conn, table: str, expected: int) -> None:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    row = pg_conn.execute(query).fetchone()
    assert row is not None
    assert row[0] >= expected


def test_seed_has_every_role(pg_conn: Conn) -> None:
    rows = pg_conn.execute("SELECT role, count(*) FROM users GROUP BY role").fetchall()
    counts = dict(rows)
    for role, expected in SEEDED_ROLES.items():
        assert counts.get(role, 0) >= expected, role


def test_seed_agents_cover_categories_price_types_and_statuses(pg_conn: Conn) -> None:
    row = pg_conn.execute(
        "SELECT count(DISTINCT category), count(DISTINCT price_type), count(DISTINCT status)"
        " FROM ai_agents"
    ).fetchone()
    assert row is not None
    categories, price_types, statuses = row
    assert categories >= 4
    assert price_types == 3
    assert statuses >= 2


@pytest.mark.parametrize(("email", "password"), DEV_LOGINS)
def test_seed_passwords_verify(pg_conn: Conn, email: str, password: str) -> None:
    row = pg_conn.execute(
        "SELECT crypt(%(pw)s, password_hash) = password_hash,"
        "       crypt('wrong-' || %(pw)s, password_hash) = password_hash"
        "  FROM users WHERE email = %(email)s",
        {"pw": password, "email": email},
    ).fetchone()
    assert row == (True, False)


def test_reseed_changes_nothing(pg_conn: Conn) -> None:
    """Apply the seed file for real (as ``inv db.seed`` would) on the seeded DB.

    The file carries its own BEGIN/COMMIT, so it cannot run inside a rolled-back
    transaction; instead every row of every table is fingerprinted before and
    after. If the seed were not idempotent this test fails (and has then
    changed the database, which is exactly the bug it reports).
    """
    before = table_fingerprints(pg_conn)
    try:
        pg_conn.execute(SEED_FILE.read_bytes())
    finally:
        if pg_conn.info.transaction_status != TransactionStatus.IDLE:
            pg_conn.execute("ROLLBACK")
    assert table_fingerprints(pg_conn) == before


# --------------------------------------------------------------------------- #
# constraints
# --------------------------------------------------------------------------- #


def assert_refused(
    conn: Conn,
    table: str,
    row: dict[str, object],
    error: type[psycopg.Error],
    constraint: str,
) -> None:
    with pytest.raises(error) as excinfo, conn.transaction(force_rollback=True):
        insert(conn, table, row)
    assert excinfo.value.diag.constraint_name == constraint


def test_valid_rows_are_accepted(pg_conn: Conn) -> None:
    """The baseline rows used by the refusal tests are themselves valid."""
    with pg_conn.transaction(force_rollback=True):
        insert(pg_conn, "users", new_user())
        insert(pg_conn, "ai_agents", new_agent())
        insert(pg_conn, "ai_agents", new_agent(price_type="free", price=0))
        insert(pg_conn, "reviews", new_review())
        insert(pg_conn, "transactions", new_transaction())


def test_email_unique_case_insensitively(pg_conn: Conn) -> None:
    assert_refused(
        pg_conn,
        "users",
        new_user(email="ALICE@Example.COM"),
        errors.UniqueViolation,
        "uq_users_email_lower",
    )


def test_username_unique(pg_conn: Conn) -> None:
    assert_refused(
        pg_conn,
        "users",
        new_user(username="alice_dev"),
        errors.UniqueViolation,
        "uq_users_username",
    )


def test_second_review_by_same_user_refused(pg_conn: Conn) -> None:
    # dave already reviewed CodePilot Reviewer in the seed.
    assert_refused(
        pg_conn,
        "reviews",
        new_review(user_id=DAVE_ID, rating=3),
        errors.UniqueViolation,
        "uq_reviews_agent_user",
    )


@pytest.mark.parametrize(
    ("table", "row", "constraint"),
    [
        ("reviews", new_review(rating=0), "ck_reviews_rating_range"),
        ("reviews", new_review(rating=6), "ck_reviews_rating_range"),
        ("users", new_user(role="superuser"), "ck_users_role"),
        ("ai_agents", new_agent(price=Decimal("-0.01")), "ck_ai_agents_price_non_negative"),
        ("ai_agents", new_agent(price_type="free", price=5), "ck_ai_agents_free_price_zero"),
        ("ai_agents", new_agent(price_type="pay_what_you_want"), "ck_ai_agents_price_type"),
        ("ai_agents", new_agent(status="deleted"), "ck_ai_agents_status"),
        ("ai_agents", new_agent(category="astrology"), "ck_ai_agents_category"),
        ("ai_agents", new_agent(downloads_count=-1), "ck_ai_agents_downloads_count_non_negative"),
        (
            "transactions",
            new_transaction(amount=Decimal("-1.00")),
            "ck_transactions_amount_non_negative",
        ),
        ("transactions", new_transaction(status="chargeback"), "ck_transactions_status"),
        ("transactions", new_transaction(currency="usd"), "ck_transactions_currency"),
        ("transactions", new_transaction(currency="US"), "ck_transactions_currency"),
        ("transactions", new_transaction(payment_method="cash"), "ck_transactions_payment_method"),
        ("transactions", new_transaction(buyer_id=ALICE_ID), "ck_transactions_buyer_not_seller"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_check_constraint_refuses(
    pg_conn: Conn, table: str, row: dict[str, object], constraint: str
) -> None:
    assert_refused(pg_conn, table, row, errors.CheckViolation, constraint)


def test_stripe_payment_id_unique_but_nullable(pg_conn: Conn) -> None:
    with pg_conn.transaction(force_rollback=True):
        insert(pg_conn, "transactions", new_transaction(stripe_payment_id=None))
        insert(pg_conn, "transactions", new_transaction(stripe_payment_id=None))
        insert(pg_conn, "transactions", new_transaction(stripe_payment_id="pi_test_dup"))
        duplicate = new_transaction(stripe_payment_id="pi_test_dup")
        # The inner transaction() is a savepoint, rolled back by the error.
        with pytest.raises(errors.UniqueViolation) as excinfo, pg_conn.transaction():
            insert(pg_conn, "transactions", duplicate)
        assert excinfo.value.diag.constraint_name == "uq_transactions_stripe_payment_id"


# --------------------------------------------------------------------------- #
# ON DELETE rules
# --------------------------------------------------------------------------- #


def test_deleting_user_cascades_agents_and_reviews(pg_conn: Conn) -> None:
    developer_id, reviewer_id, agent_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with pg_conn.transaction(force_rollback=True):
        insert(pg_conn, "users", new_user(id=developer_id, role="developer"))
        insert(pg_conn, "users", new_user(id=reviewer_id))
        insert(pg_conn, "ai_agents", new_agent(id=agent_id, owner_id=developer_id))
        insert(pg_conn, "reviews", new_review(agent_id=agent_id, user_id=reviewer_id))
        insert(pg_conn, "reviews", new_review(agent_id=CODEPILOT_ID, user_id=reviewer_id))
        insert(pg_conn, "reviews", new_review(agent_id=agent_id, user_id=DAVE_ID))

        pg_conn.execute("DELETE FROM users WHERE id = %s", [reviewer_id])
        row = pg_conn.execute(
            "SELECT count(*) FROM reviews WHERE user_id = %s", [reviewer_id]
        ).fetchone()
        assert row == (0,)
        assert rating_mismatches(pg_conn) == []

        pg_conn.execute("DELETE FROM users WHERE id = %s", [developer_id])
        row = pg_conn.execute(
            "SELECT (SELECT count(*) FROM ai_agents WHERE id = %(a)s),"
            "       (SELECT count(*) FROM reviews WHERE agent_id = %(a)s)",
            {"a": agent_id},
        ).fetchone()
        assert row == (0, 0)
        assert rating_mismatches(pg_conn) == []


@pytest.mark.parametrize(
    ("statement", "row_id", "constraints"),
    [
        ("DELETE FROM users WHERE id = %s", DAVE_ID, {"fk_transactions_buyer_id"}),
        (
            # alice sold agents: restricted as seller, or via her agents' cascade.
            "DELETE FROM users WHERE id = %s",
            ALICE_ID,
            {"fk_transactions_seller_id", "fk_transactions_agent_id"},
        ),
        ("DELETE FROM ai_agents WHERE id = %s", SQL_WHISPERER_ID, {"fk_transactions_agent_id"}),
    ],
    ids=["buyer", "seller", "agent"],
)
def test_transactions_restrict_deletes(
    pg_conn: Conn, statement: str, row_id: uuid.UUID, constraints: set[str]
) -> None:
    with (
        pytest.raises(errors.ForeignKeyViolation) as excinfo,
        pg_conn.transaction(force_rollback=True),
    ):
        pg_conn.execute(statement, [row_id])
    assert excinfo.value.diag.constraint_name in constraints


# --------------------------------------------------------------------------- #
# rating aggregates
# --------------------------------------------------------------------------- #


def test_seed_rating_aggregates_match_reviews(pg_conn: Conn) -> None:
    assert rating_mismatches(pg_conn) == []
    assert agent_rating(pg_conn, CODEPILOT_ID) == (3, Decimal("4.67"))
    assert agent_rating(pg_conn, PAPER_DIGEST_ID) == (0, Decimal("0.00"))


def test_rating_aggregates_follow_review_changes(pg_conn: Conn) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    with pg_conn.transaction(force_rollback=True):
        insert(
            pg_conn,
            "reviews",
            new_review(id=first, agent_id=PAPER_DIGEST_ID, user_id=DAVE_ID, rating=4),
        )
        assert agent_rating(pg_conn, PAPER_DIGEST_ID) == (1, Decimal("4.00"))
        insert(
            pg_conn,
            "reviews",
            new_review(id=second, agent_id=PAPER_DIGEST_ID, user_id=ERIN_ID, rating=1),
        )
        assert agent_rating(pg_conn, PAPER_DIGEST_ID) == (2, Decimal("2.50"))
        assert rating_mismatches(pg_conn) == []

        pg_conn.execute("UPDATE reviews SET rating = 5 WHERE id = %s", [first])
        assert agent_rating(pg_conn, PAPER_DIGEST_ID) == (2, Decimal("3.00"))
        assert rating_mismatches(pg_conn) == []

        pg_conn.execute("UPDATE reviews SET agent_id = %s WHERE id = %s", [QUIZ_TUTOR_ID, first])
        assert agent_rating(pg_conn, PAPER_DIGEST_ID) == (1, Decimal("1.00"))
        assert agent_rating(pg_conn, QUIZ_TUTOR_ID) == (1, Decimal("5.00"))
        assert rating_mismatches(pg_conn) == []

        pg_conn.execute("DELETE FROM reviews WHERE id = %s", [second])
        assert agent_rating(pg_conn, PAPER_DIGEST_ID) == (0, Decimal("0.00"))
        assert rating_mismatches(pg_conn) == []

        # Multi-row statements, moving rating and agent at once.
        pg_conn.execute("UPDATE reviews SET rating = 6 - rating")
        assert rating_mismatches(pg_conn) == []
        pg_conn.execute(
            "UPDATE reviews SET agent_id = %s, rating = 2 WHERE id = %s",
            [BLOG_DRAFTER_ID, first],
        )
        assert agent_rating(pg_conn, QUIZ_TUTOR_ID) == (0, Decimal("0.00"))
        assert rating_mismatches(pg_conn) == []
        pg_conn.execute("DELETE FROM reviews WHERE agent_id = %s", [CODEPILOT_ID])
        assert agent_rating(pg_conn, CODEPILOT_ID) == (0, Decimal("0.00"))
        assert rating_mismatches(pg_conn) == []


def test_truncating_reviews_resets_aggregates(pg_conn: Conn) -> None:
    with pg_conn.transaction(force_rollback=True):
        pg_conn.execute("TRUNCATE reviews")
        row = pg_conn.execute(
            "SELECT count(*) FROM ai_agents WHERE rating_count <> 0 OR rating_average <> 0"
        ).fetchone()
        assert row == (0,)
