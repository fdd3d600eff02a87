-- =============================================================================
-- 01-init-database.sql -- AI Marketplace database schema (local dev stack)
--
-- Owns: extensions, the four tables (users, ai_agents, reviews, transactions),
-- their constraints, indexes, comments and triggers (updated_at maintenance
-- and the rating aggregates on ai_agents).
--
-- Run once by the postgres image's /docker-entrypoint-initdb.d on the first
-- start of an empty data dir (or by the native backend), as the superuser
-- connected to POSTGRES_DB, after 00-roles.sh made the application's role its
-- owner:
--   psql -v ON_ERROR_STOP=1 --no-psqlrc -f 01-init-database.sql
-- Everything is created as that owner (the first statement below), so the
-- application owns its tables, can migrate them, and needs no superuser.
-- Deliberately names no database or role. Objects go to the default schema
-- (public). Every statement is IF NOT EXISTS / OR REPLACE, so an accidental
-- second run is harmless -- but it does not migrate an existing schema.
--
-- Conventions
--   * Allowed values are CHECK constraints, not enum types: a migration can
--     drop and re-add a CHECK in one statement, whereas enum values cannot be
--     removed.
--   * Constraints and indexes are named explicitly: pk_/fk_/uq_/ck_<table>_...
--     and idx_<table>_<cols>.
--   * All timestamps are timestamptz NOT NULL DEFAULT now(); updated_at is
--     maintained by trg_<table>_set_updated_at (function set_updated_at()).
--
-- ON DELETE rules (chosen deliberately)
--   ai_agents.owner_id      -> users      CASCADE   a user's agents go with them
--   reviews.user_id         -> users      CASCADE   a user's reviews go with them
--   reviews.agent_id        -> ai_agents  CASCADE   an agent's reviews go with it
--   transactions.buyer_id   -> users      RESTRICT  transactions are financial
--   transactions.seller_id  -> users      RESTRICT  records and must never
--   transactions.agent_id   -> ai_agents  RESTRICT  disappear as a side effect
--   Consequence: a user (or agent) that took part in any transaction cannot
--   be deleted, also not indirectly through the users -> ai_agents cascade;
--   archive the agent (status = 'archived') or anonymise the user instead.
-- =============================================================================

-- Act as the database's owner for the rest of this session (SET ROLE, in plain
-- SQL): whoever runs the script, the objects belong to the application's role.
SELECT pg_catalog.set_config('role', pg_catalog.pg_get_userbyid(datdba), false)
  FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database();

BEGIN;

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";   -- uuid_generate_v4() etc. for app code
CREATE EXTENSION IF NOT EXISTS pgcrypto;      -- gen_random_uuid(), crypt(), gen_salt()

-- -----------------------------------------------------------------------------
-- updated_at maintenance: one function, one BEFORE UPDATE trigger per table.
-- Always overwrites updated_at with now() (the transaction's start time), so
-- an UPDATE cannot leave or forge a stale value.
-- -----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION set_updated_at() IS
    'BEFORE UPDATE trigger function: sets NEW.updated_at to now().';

-- -----------------------------------------------------------------------------
-- users
-- -----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS users (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    email         text        NOT NULL,
    username      text        NOT NULL,
    password_hash text        NOT NULL,
    role          text        NOT NULL DEFAULT 'user',
    is_verified   boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_username UNIQUE (username),
    CONSTRAINT ck_users_role CHECK (role IN ('user', 'developer', 'admin')),
    CONSTRAINT ck_users_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    CONSTRAINT ck_users_username_length CHECK (char_length(username) BETWEEN 3 AND 50)
);

-- Case-insensitive uniqueness: the original spelling is stored, but
-- 'Alice@Example.com' and 'alice@example.com' cannot both exist. Look users up
-- with WHERE lower(email) = lower($1) so this index is used.
CREATE UNIQUE INDEX IF NOT EXISTS uq_users_email_lower ON users (lower(email));
CREATE INDEX IF NOT EXISTS idx_users_role ON users (role);

CREATE OR REPLACE TRIGGER trg_users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

COMMENT ON TABLE users IS
    'Marketplace accounts. role: user (buyer) / developer (publishes agents) / admin.';
COMMENT ON COLUMN users.email IS
    'Login e-mail; unique case-insensitively (uq_users_email_lower).';
COMMENT ON COLUMN users.password_hash IS
    'bcrypt hash ($2a$/$2b$), e.g. pgcrypto crypt(pw, gen_salt(''bf'')).';

-- -----------------------------------------------------------------------------
-- ai_agents
-- -----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS ai_agents (
    id              uuid          NOT NULL DEFAULT gen_random_uuid(),
    owner_id        uuid          NOT NULL,
    name            text          NOT NULL,
    description     text          NOT NULL DEFAULT '',
    category        text          NOT NULL,
    price_type      text          NOT NULL DEFAULT 'free',
    price           numeric(10,2) NOT NULL DEFAULT 0,
    status          text          NOT NULL DEFAULT 'draft',
    downloads_count integer       NOT NULL DEFAULT 0,
    -- Maintained by trg_reviews_refresh_agent_rating; do not write directly.
    rating_average  numeric(3,2)  NOT NULL DEFAULT 0,
    rating_count    integer       NOT NULL DEFAULT 0,
    created_at      timestamptz   NOT NULL DEFAULT now(),
    updated_at      timestamptz   NOT NULL DEFAULT now(),

    CONSTRAINT pk_ai_agents PRIMARY KEY (id),
    CONSTRAINT fk_ai_agents_owner_id FOREIGN KEY (owner_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT ck_ai_agents_name_length CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    CONSTRAINT ck_ai_agents_category CHECK (category IN (
        'productivity', 'development', 'data_analysis', 'content_creation',
        'customer_support', 'marketing', 'research', 'education', 'other')),
    CONSTRAINT ck_ai_agents_price_type CHECK (price_type IN ('free', 'one_time', 'subscription')),
    CONSTRAINT ck_ai_agents_price_non_negative CHECK (price >= 0),
    CONSTRAINT ck_ai_agents_free_price_zero CHECK (price_type <> 'free' OR price = 0),
    CONSTRAINT ck_ai_agents_status CHECK (status IN ('draft', 'published', 'archived')),
    CONSTRAINT ck_ai_agents_downloads_count_non_negative CHECK (downloads_count >= 0),
    CONSTRAINT ck_ai_agents_rating_average_range CHECK (rating_average BETWEEN 0 AND 5),
    CONSTRAINT ck_ai_agents_rating_count_non_negative CHECK (rating_count >= 0),
    CONSTRAINT ck_ai_agents_no_reviews_zero_average CHECK (rating_count > 0 OR rating_average = 0)
);

CREATE INDEX IF NOT EXISTS idx_ai_agents_owner_id ON ai_agents (owner_id);
CREATE INDEX IF NOT EXISTS idx_ai_agents_category ON ai_agents (category);
CREATE INDEX IF NOT EXISTS idx_ai_agents_status ON ai_agents (status);

CREATE OR REPLACE TRIGGER trg_ai_agents_set_updated_at
    BEFORE UPDATE ON ai_agents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

COMMENT ON TABLE ai_agents IS
    'Agents listed on the marketplace, owned by a developer (owner_id).';
COMMENT ON COLUMN ai_agents.price IS
    'Price in the marketplace base currency; 0 when price_type = ''free''.';
COMMENT ON COLUMN ai_agents.rating_average IS
    'round(avg(reviews.rating), 2); 0 (never NULL) while there are no reviews. Trigger-maintained.';
COMMENT ON COLUMN ai_agents.rating_count IS
    'count(reviews) for this agent. Trigger-maintained.';

-- -----------------------------------------------------------------------------
-- reviews
-- -----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS reviews (
    id         uuid        NOT NULL DEFAULT gen_random_uuid(),
    agent_id   uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    rating     integer     NOT NULL,
    comment    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT pk_reviews PRIMARY KEY (id),
    CONSTRAINT fk_reviews_agent_id FOREIGN KEY (agent_id)
        REFERENCES ai_agents (id) ON DELETE CASCADE,
    CONSTRAINT fk_reviews_user_id FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    -- One review per user per agent. Its index (agent_id, user_id) also serves
    -- every "reviews of agent X" lookup and the agent_id foreign key, so there
    -- is no separate idx_reviews_agent_id.
    CONSTRAINT uq_reviews_agent_user UNIQUE (agent_id, user_id),
    CONSTRAINT ck_reviews_rating_range CHECK (rating BETWEEN 1 AND 5)
);

CREATE INDEX IF NOT EXISTS idx_reviews_user_id ON reviews (user_id);

CREATE OR REPLACE TRIGGER trg_reviews_set_updated_at
    BEFORE UPDATE ON reviews
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

COMMENT ON TABLE reviews IS
    'Star ratings (1-5) and comments; at most one per (agent, user).';

-- -----------------------------------------------------------------------------
-- transactions
-- -----------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS transactions (
    id                uuid          NOT NULL DEFAULT gen_random_uuid(),
    buyer_id          uuid          NOT NULL,
    seller_id         uuid          NOT NULL,
    agent_id          uuid          NOT NULL,
    amount            numeric(10,2) NOT NULL,
    currency          text          NOT NULL DEFAULT 'USD',
    status            text          NOT NULL DEFAULT 'pending',
    payment_method    text          NOT NULL,
    stripe_payment_id text,
    created_at        timestamptz   NOT NULL DEFAULT now(),
    updated_at        timestamptz   NOT NULL DEFAULT now(),

    CONSTRAINT pk_transactions PRIMARY KEY (id),
    CONSTRAINT fk_transactions_buyer_id FOREIGN KEY (buyer_id)
        REFERENCES users (id) ON DELETE RESTRICT,
    CONSTRAINT fk_transactions_seller_id FOREIGN KEY (seller_id)
        REFERENCES users (id) ON DELETE RESTRICT,
    CONSTRAINT fk_transactions_agent_id FOREIGN KEY (agent_id)
        REFERENCES ai_agents (id) ON DELETE RESTRICT,
    -- UNIQUE treats NULLs as distinct: any number of rows without a Stripe id.
    CONSTRAINT uq_transactions_stripe_payment_id UNIQUE (stripe_payment_id),
    CONSTRAINT ck_transactions_amount_non_negative CHECK (amount >= 0),
    -- ISO 4217 style: three upper-case letters (USD, EUR, GBP, ...).
    CONSTRAINT ck_transactions_currency CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT ck_transactions_status CHECK (status IN ('pending', 'completed', 'failed', 'refunded')),
    CONSTRAINT ck_transactions_payment_method CHECK (payment_method IN (
        'card', 'paypal', 'bank_transfer', 'apple_pay', 'google_pay')),
    CONSTRAINT ck_transactions_buyer_not_seller CHECK (buyer_id <> seller_id)
);

CREATE INDEX IF NOT EXISTS idx_transactions_buyer_id ON transactions (buyer_id);
CREATE INDEX IF NOT EXISTS idx_transactions_seller_id ON transactions (seller_id);
CREATE INDEX IF NOT EXISTS idx_transactions_agent_id ON transactions (agent_id);
CREATE INDEX IF NOT EXISTS idx_transactions_status ON transactions (status);
CREATE INDEX IF NOT EXISTS idx_transactions_created_at ON transactions (created_at);

CREATE OR REPLACE TRIGGER trg_transactions_set_updated_at
    BEFORE UPDATE ON transactions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

COMMENT ON TABLE transactions IS
    'Purchases / subscription payments. Financial records: referenced users and agents cannot be deleted (RESTRICT).';
COMMENT ON COLUMN transactions.seller_id IS
    'Agent owner at the time of purchase (kept even if ownership changes later).';

-- -----------------------------------------------------------------------------
-- Rating aggregates on ai_agents, kept exact by the database.
--
-- Every review INSERT / DELETE / UPDATE OF rating, agent_id recomputes
-- rating_count and rating_average of the affected agent(s) from the reviews
-- table (recompute, never increment). A review moved to another agent
-- refreshes both agents.
--
-- Concurrency: the agent row is locked first (FOR NO KEY UPDATE, which does
-- not conflict with the FOR KEY SHARE lock taken by the reviews foreign key
-- check), so concurrent review writes for the same agent serialise here. In
-- READ COMMITTED the following aggregate statement takes a fresh snapshot and
-- therefore sees reviews committed by whoever held the lock before.
-- -----------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION refresh_agent_rating(p_agent_id uuid)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_count   integer;
    v_average numeric(3,2);
BEGIN
    PERFORM 1 FROM ai_agents WHERE id = p_agent_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- agent is gone (e.g. reviews removed by ON DELETE CASCADE)
    END IF;

    SELECT count(*), coalesce(round(avg(rating), 2), 0)
      INTO v_count, v_average
      FROM reviews
     WHERE agent_id = p_agent_id;

    UPDATE ai_agents
       SET rating_count = v_count,
           rating_average = v_average
     WHERE id = p_agent_id
       AND (rating_count, rating_average) IS DISTINCT FROM (v_count, v_average);
END;
$$;

COMMENT ON FUNCTION refresh_agent_rating(uuid) IS
    'Recomputes ai_agents.rating_count / rating_average of one agent from reviews.';

CREATE OR REPLACE FUNCTION reviews_refresh_agent_rating()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM refresh_agent_rating(NEW.agent_id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM refresh_agent_rating(OLD.agent_id);
    ELSIF OLD.agent_id IS DISTINCT FROM NEW.agent_id THEN
        -- Moved to another agent: refresh both, in a fixed order so two
        -- opposite moves cannot deadlock.
        PERFORM refresh_agent_rating(LEAST(OLD.agent_id, NEW.agent_id));
        PERFORM refresh_agent_rating(GREATEST(OLD.agent_id, NEW.agent_id));
    ELSE
        PERFORM refresh_agent_rating(NEW.agent_id);
    END IF;
    RETURN NULL;  -- AFTER trigger: return value ignored
END;
$$;

CREATE OR REPLACE TRIGGER trg_reviews_refresh_agent_rating
    AFTER INSERT OR DELETE OR UPDATE OF agent_id, rating ON reviews
    FOR EACH ROW EXECUTE FUNCTION reviews_refresh_agent_rating();

-- TRUNCATE fires no row triggers: reset every agent's aggregates instead.
CREATE OR REPLACE FUNCTION reviews_reset_agent_ratings()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE ai_agents
       SET rating_count = 0, rating_average = 0
     WHERE rating_count <> 0 OR rating_average <> 0;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER trg_reviews_truncate_reset_agent_ratings
    AFTER TRUNCATE ON reviews
    FOR EACH STATEMENT EXECUTE FUNCTION reviews_reset_agent_ratings();

COMMIT;
