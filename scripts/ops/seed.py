"""Seed data on the live database: the dev seed re-applied, and scaled data for load tests.

Owns re-running docker/init-scripts/02-seed-dev-data.sql and generating users, agents,
reviews and transactions in bulk inside PostgreSQL (generate_series, no row-by-row Python).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scripts.console import Amount, Progress, display_path
from scripts.errors import StackError, UsageError
from scripts.infra.database import connect, describe
from scripts.settings import ROOT, Settings

if TYPE_CHECKING:
    import psycopg

SEED_FILE = ROOT / "docker" / "init-scripts" / "02-seed-dev-data.sql"
TABLES = ("users", "ai_agents", "reviews", "transactions")
# Login of every generated user: scaled_<n>@example.com / scaled123! (one bcrypt hash for all).
SCALED_PASSWORD = "scaled123!"  # noqa: S105 - a documented dev-only password
# seed_scale() runs take turns on this transaction-level advisory lock.
LOCK_KEY = 0x7363616C6564  # "scaled"

BATCHES = 20  # users, reviews and transactions go in this many batches: progress, an ETA
MIN_BATCH = 5000

# What each batch of generated users adds, at most: the progress total (an estimate from
# the plan; self-reviews and sales of free agents are left out as they are drawn).
_EXPECTED = """
SELECT (SELECT count(*) FROM scaled_users) + (SELECT count(*) FROM scaled_agents)
       + (SELECT coalesce(sum(least(review_count, (SELECT count(*) FROM scaled_listed))), 0)
            FROM scaled_users)
       + (SELECT CASE WHEN EXISTS (SELECT FROM scaled_sellable)
                      THEN coalesce(sum(purchase_count), 0) ELSE 0 END FROM scaled_users)
"""

# Per 100 generated users, on average (random per row, so a run varies a little):
#   5 developers (every 20th user, the first one always) owning 1-7 agents each: ~20 agents,
#   40% free (price 0), 30% one-time, 30% subscription; 75% published, 15% draft, 10% archived;
#   0-6 reviews per user (~300) of distinct published or archived agents of the same run,
#   popular agents favoured, none of a developer's own agents; ratings follow an agent's
#   quality; 0-6 purchases per user (~300 transactions) of paid published or archived agents:
#   85% completed, 4% pending, 6% failed, 5% refunded; USD/EUR/GBP; a Stripe id for card,
#   Apple Pay and Google Pay payments. Timestamps spread over the past year, children after
#   their parents. Generated rows only reference generated rows: the dev seed stays as it is.

_LAST_SCALED = """
SELECT coalesce(max(substring(username FROM '^scaled_([0-9]+)$')::bigint), 0)
  FROM users WHERE username ~ '^scaled_[0-9]+$'
"""

_PLAN_USERS = """
CREATE TEMP TABLE scaled_users ON COMMIT DROP AS
SELECT i, %(last)s::bigint + i AS n, gen_random_uuid() AS id,
       now() - random() * interval '365 days' AS created_at,
       CASE WHEN mod(i, 20) = 1 THEN 1 + floor(random() * 7)::int ELSE 0 END AS agent_count,
       floor(random() * 7)::int AS review_count,
       floor(random() * 7)::int AS purchase_count,
       random() AS taste
  FROM generate_series(1, %(users)s::int) AS i
"""

_INSERT_USERS = """
INSERT INTO users (id, email, username, password_hash, role, is_verified, created_at, updated_at)
SELECT id, 'scaled_' || n || '@example.com', 'scaled_' || n, %(hash)s,
       CASE WHEN agent_count > 0 THEN 'developer' ELSE 'user' END,
       random() < 0.9, created_at, created_at + random() * (now() - created_at)
  FROM scaled_users
 WHERE i BETWEEN %(lo)s AND %(hi)s
 ORDER BY i
"""

_PLAN_AGENTS = """
CREATE TEMP TABLE scaled_agents ON COMMIT DROP AS
SELECT a, id, owner_id, owner_i, owner_n, k, created_at,
       (ARRAY['productivity', 'development', 'data_analysis', 'content_creation',
              'customer_support', 'marketing', 'research', 'education', 'other'])[1 + mod(a, 9)]
           AS category,
       CASE WHEN p < 0.4 THEN 'free' WHEN p < 0.7 THEN 'one_time' ELSE 'subscription' END
           AS price_type,
       (CASE WHEN p < 0.4 THEN 0
             WHEN p < 0.7 THEN (ARRAY[4.99, 9.99, 19.00, 29.50, 49.00, 79.00, 99.00, 199.00])
                               [1 + floor(q * 8)::int]
             ELSE (ARRAY[4.99, 9.99, 14.00, 19.99, 29.00])[1 + floor(q * 5)::int]
        END)::numeric(10,2) AS price,
       CASE WHEN s < 0.75 THEN 'published' WHEN s < 0.9 THEN 'draft' ELSE 'archived' END AS status,
       2.3 + 2.5 * quality AS quality
  FROM (SELECT (row_number() OVER (ORDER BY u.i, k) - 1)::int AS a, gen_random_uuid() AS id,
               u.id AS owner_id, u.i AS owner_i, u.n AS owner_n, k,
               u.created_at + random() * (now() - u.created_at) AS created_at,
               random() AS p, random() AS q, random() AS s, random() AS quality
          FROM scaled_users AS u
         CROSS JOIN LATERAL generate_series(1, u.agent_count) AS k
         WHERE u.agent_count > 0) AS draw
"""

_INSERT_AGENTS = """
INSERT INTO ai_agents (id, owner_id, name, description, category, price_type, price, status,
                       downloads_count, created_at, updated_at)
SELECT id, owner_id,
       initcap(replace(category, '_', ' ')) || ' Agent ' || owner_n || '-' || k,
       'Generated for load tests: a ' || replace(category, '_', ' ') || ' assistant that '
           || (ARRAY['drafts, checks and summarises your work.',
                     'answers questions about your documents in plain language.',
                     'automates the repetitive parts of a daily workflow.',
                     'turns raw data into charts, tables and short reports.',
                     'watches a queue and proposes the next best action.'])[1 + mod(a, 5)],
       category, price_type, price, status,
       CASE WHEN status = 'draft' THEN 0 ELSE floor(random() ^ 3 * 20000)::int END,
       created_at, created_at + random() * (now() - created_at)
  FROM scaled_agents
 ORDER BY a
"""

# Drafts are not on the marketplace: only published and archived agents get reviews and sales.
_PLAN_LISTED = """
CREATE TEMP TABLE scaled_listed ON COMMIT DROP AS
SELECT (row_number() OVER (ORDER BY a) - 1)::int AS l, id, owner_id, owner_i, price_type, price,
       quality, created_at
  FROM scaled_agents
 WHERE status <> 'draft'
"""

_INSERT_REVIEWS = """
INSERT INTO reviews (agent_id, user_id, rating, comment, created_at, updated_at)
SELECT agent_id, user_id, rating,
       CASE WHEN c < 0.35 THEN NULL
            ELSE (ARRAY['Does what it promises.', 'Saved me hours this week.',
                        'Good, but the output needs editing.', 'Setup was confusing.',
                        'Fast and accurate.', 'Not worth the price.',
                        'Great support from the developer.', 'Works well on large inputs.',
                        'Misses edge cases.', 'Exactly what our team needed.'])
                 [1 + mod(floor(c * 1000)::int, 10)]
       END,
       created_at, created_at + random() * (now() - created_at)
  FROM (SELECT a.id AS agent_id, u.id AS user_id,
               least(5, greatest(1, round(a.quality + (random() - 0.5) * 3)))::int AS rating,
               random() AS c,
               greatest(u.created_at, a.created_at)
                   + random() * (now() - greatest(u.created_at, a.created_at)) AS created_at
          FROM scaled_users AS u
         CROSS JOIN (SELECT count(*)::int AS agents FROM scaled_listed) AS t
         CROSS JOIN LATERAL generate_series(0, least(u.review_count, t.agents) - 1) AS j
          JOIN scaled_listed AS a
            ON a.l = mod(floor(t.agents * u.taste ^ 3)::int + j, t.agents)
         WHERE a.owner_i <> u.i AND u.i BETWEEN %(lo)s AND %(hi)s) AS draw
"""

# The reviews trigger is off while the reviews go in: recompute the aggregates once here,
# exactly as refresh_agent_rating() does. Generated reviews only rate generated agents.
_UPDATE_RATINGS = """
UPDATE ai_agents AS g
   SET rating_count = r.count, rating_average = r.average
  FROM (SELECT reviews.agent_id, count(*)::int AS count, round(avg(reviews.rating), 2) AS average
          FROM reviews JOIN scaled_agents AS a ON a.id = reviews.agent_id
         GROUP BY reviews.agent_id) AS r
 WHERE g.id = r.agent_id
"""

_PLAN_SELLABLE = """
CREATE TEMP TABLE scaled_sellable ON COMMIT DROP AS
SELECT (row_number() OVER (ORDER BY l) - 1)::int AS p, id, owner_id, owner_i, price, created_at
  FROM scaled_listed
 WHERE price_type <> 'free'
"""

_INSERT_TRANSACTIONS = """
INSERT INTO transactions (id, buyer_id, seller_id, agent_id, amount, currency, status,
                          payment_method, stripe_payment_id, created_at, updated_at)
SELECT id, buyer_id, seller_id, agent_id,
       round(price * CASE currency WHEN 'EUR' THEN 0.92 WHEN 'GBP' THEN 0.79 ELSE 1 END, 2),
       currency, status, payment_method,
       CASE WHEN payment_method IN ('card', 'apple_pay', 'google_pay')
            THEN 'pi_scaled_' || replace(id::text, '-', '') END,
       created_at, least(now(), created_at + random() * interval '2 days')
  FROM (SELECT id, buyer_id, seller_id, agent_id, price, created_at,
               CASE WHEN c < 0.70 THEN 'USD' WHEN c < 0.90 THEN 'EUR' ELSE 'GBP' END AS currency,
               CASE WHEN s < 0.85 THEN 'completed' WHEN s < 0.89 THEN 'pending'
                    WHEN s < 0.95 THEN 'failed' ELSE 'refunded' END AS status,
               CASE WHEN m < 0.60 THEN 'card' WHEN m < 0.75 THEN 'paypal'
                    WHEN m < 0.85 THEN 'apple_pay' WHEN m < 0.93 THEN 'google_pay'
                    ELSE 'bank_transfer' END AS payment_method
          FROM (SELECT gen_random_uuid() AS id, b.id AS buyer_id, s.owner_id AS seller_id,
                       s.id AS agent_id, s.price,
                       greatest(b.created_at, s.created_at)
                           + random() * (now() - greatest(b.created_at, s.created_at))
                           AS created_at,
                       random() AS c, random() AS s, random() AS m
                  FROM (SELECT u.id, u.i, u.created_at,
                               floor(t.sellable * random() ^ 2)::int AS p
                          FROM scaled_users AS u
                         CROSS JOIN (SELECT count(*)::int AS sellable FROM scaled_sellable) AS t
                         CROSS JOIN LATERAL generate_series(1, u.purchase_count) AS j
                         WHERE t.sellable > 0 AND u.i BETWEEN %(lo)s AND %(hi)s) AS b
                  JOIN scaled_sellable AS s ON s.p = b.p
                 WHERE s.owner_i <> b.i) AS draw) AS picked
"""


def seed(settings: Settings) -> dict[str, int]:
    """Re-apply the dev seed (idempotent: only seed rows that are missing come back).

    Returns the row count of each table afterwards.
    """
    import psycopg
    from psycopg.pq import TransactionStatus

    script = SEED_FILE.read_bytes()
    with connect(settings) as conn:
        try:
            conn.execute(script)  # carries its own BEGIN/COMMIT; several statements
        except psycopg.Error as exc:
            if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise StackError(
                f"The dev seed {display_path(SEED_FILE)} was rolled back ({describe(exc)}): "
                "fix or remove the conflicting rows, or start afresh with `inv reset`."
            ) from None
        return _counts(conn)


def check_scale(users: int, minimum: int = 0) -> None:
    """Refuse a number of users to generate that is not a whole number of `minimum` or more
    (0 is `inv db.seed` without --scale)."""
    if isinstance(users, bool) or not isinstance(users, int) or users < minimum:
        raise UsageError(
            f"The number of users to generate must be a whole number of at least 1, not "
            f"{users!r}: pass e.g. --scale 1000."
        )


def seed_scale(
    settings: Settings, users: int, *, progress: Progress | None = None
) -> dict[str, int]:
    """Add `users` generated users with proportional agents, reviews and transactions.

    Everything is generated by INSERT ... SELECT statements in one transaction, so a failure
    adds nothing; other sessions can read meanwhile, but writes to reviews and ai_agents wait
    until it commits (their triggers are switched off inside it). Users, reviews and
    transactions go in batches of users, each reported to `progress` (rows so far of those
    the plan expects, and the database's growth).
    Users are scaled_<n> / scaled_<n>@example.com, numbered after the highest existing one,
    all with the password scaled123!. Returns the rows added per table.
    """
    import psycopg

    check_scale(users, minimum=1)
    added: dict[str, int] = {}
    with connect(settings) as conn:
        try:
            with conn.transaction():
                _generate(conn, users, added, progress or (lambda _amount: None))
        except psycopg.Error as exc:
            raise StackError(
                f"Generating {users} scaled users failed and added nothing ({describe(exc)}): "
                "bring the schema up to date (`inv db.migrate`), end sessions that hold the "
                "tables, and run it again."
            ) from None
        try:
            conn.execute("VACUUM (ANALYZE) users, ai_agents, reviews, transactions")
        except psycopg.Error as exc:
            raise StackError(
                f"The {users} scaled users were added, but VACUUM ANALYZE failed ({describe(exc)}):"
                " run `inv db.shell -c 'VACUUM ANALYZE'` once the cause is fixed."
            ) from None
    return added


def _generate(
    conn: psycopg.Connection[tuple[Any, ...]], users: int, added: dict[str, int], report: Progress
) -> None:
    # Switching a trigger off locks its table against writers: give up after 30 s rather
    # than queue behind another session's open transaction.
    conn.execute("SET LOCAL lock_timeout = '30s'")
    # The row estimates of generate_series(1, column) are far off; JIT compiling for them
    # costs more than the few expressions it would speed up.
    conn.execute("SET LOCAL jit = off")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
    last = _scalar(conn, _LAST_SCALED)
    password_hash = _scalar(conn, "SELECT crypt(%s, gen_salt('bf', 8))", SCALED_PASSWORD)
    params = {"last": last, "users": users, "hash": password_hash}
    conn.execute(_PLAN_USERS, params)
    conn.execute("CREATE INDEX ON scaled_users (i)")  # each batch reads a range of users
    conn.execute("ANALYZE scaled_users")
    for plan, table in (
        (_PLAN_AGENTS, "scaled_agents"),
        (_PLAN_LISTED, "scaled_listed"),
        (_PLAN_SELLABLE, "scaled_sellable"),
    ):
        conn.execute(plan)
        conn.execute(f"ANALYZE {table}")
    size_before = int(_scalar(conn, "SELECT pg_database_size(current_database())"))
    total = int(_scalar(conn, _EXPECTED))
    batch = max(MIN_BATCH, -(-users // BATCHES))

    def tell(step: str) -> None:
        grown = int(_scalar(conn, "SELECT pg_database_size(current_database())")) - size_before
        report(Amount(sum(added.values()), total, max(0, grown), step))

    def batched(table: str, statement: str) -> None:
        added[table] = 0
        for lo in range(1, users + 1, batch):
            bounds = {**params, "lo": lo, "hi": min(users, lo + batch - 1)}
            added[table] += conn.execute(statement, bounds).rowcount
            tell(table)

    batched("users", _INSERT_USERS)
    added["ai_agents"] = conn.execute(_INSERT_AGENTS).rowcount
    tell("ai_agents")
    # One set-based UPDATE below instead of one aggregate per inserted review.
    conn.execute("ALTER TABLE reviews DISABLE TRIGGER trg_reviews_refresh_agent_rating")
    batched("reviews", _INSERT_REVIEWS)
    # Keep the generated updated_at values: skip set_updated_at() for this UPDATE.
    conn.execute("ALTER TABLE ai_agents DISABLE TRIGGER trg_ai_agents_set_updated_at")
    conn.execute(_UPDATE_RATINGS)
    conn.execute("ALTER TABLE ai_agents ENABLE TRIGGER trg_ai_agents_set_updated_at")
    conn.execute("ALTER TABLE reviews ENABLE TRIGGER trg_reviews_refresh_agent_rating")
    batched("transactions", _INSERT_TRANSACTIONS)


def database_size(settings: Settings) -> int:
    """pg_database_size of the stack's database, in bytes."""
    with connect(settings) as conn:
        return int(_scalar(conn, "SELECT pg_database_size(current_database())"))


def _counts(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
    from psycopg import sql

    return {
        table: int(_scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))))
        for table in TABLES
    }


def _scalar(conn: psycopg.Connection[tuple[Any, ...]], query: Any, *params: object) -> Any:
    row = conn.execute(query, list(params) or None).fetchone()
    if row is None:
        raise StackError("PostgreSQL returned no row for a one-row query: run the command again.")
    return row[0]
