-- =============================================================================
-- 02-seed-dev-data.sql -- AI Marketplace DEVELOPMENT seed data
--
-- Owns: the fixed set of dev users, agents, reviews and transactions.
-- Runs after 01-init-database.sql on first init, and can be re-applied at any
-- time on a live database (inv db.seed): every row has a fixed UUID and is
-- inserted with ON CONFLICT (id) DO NOTHING, so a re-run changes nothing that
-- already exists (rows edited since seeding are left alone) and only puts back
-- seed rows that were deleted. Everything runs in one transaction.
--
-- Plain SQL only (no psql meta-commands), so it can also be executed by a
-- driver. rating_average / rating_count on ai_agents are NOT seeded: the
-- reviews trigger computes them.
--
-- DEV-ONLY LOGINS -- never use these passwords anywhere real.
--
--   | email                | username    | password  | role      |
--   |----------------------|-------------|-----------|-----------|
--   | admin@example.com    | admin       | admin123! | admin     |
--   | ops@example.com      | ops_admin   | admin123! | admin     |
--   | alice@example.com    | alice_dev   | dev123!   | developer |
--   | bob@example.com      | bob_dev     | dev123!   | developer |
--   | carol@example.com    | carol_dev   | dev123!   | developer |
--   | dave@example.com     | dave        | user123!  | user      |
--   | erin@example.com     | erin        | user123!  | user      |
--   | frank@example.com    | frank       | user123!  | user      |
--   | grace@example.com    | grace       | user123!  | user      |
--
-- grace@example.com is the only unverified account (is_verified = false).
--
-- Fixed id scheme: users 00000000-0000-4000-a000-0000000001NN,
-- agents ...-0000000002NN, reviews ...-0000000003NN, transactions ...-0000000004NN.
-- =============================================================================

-- As the database's owner, the application's role (see 01-init-database.sql).
SELECT pg_catalog.set_config('role', pg_catalog.pg_get_userbyid(datdba), false)
  FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database();

BEGIN;

-- -----------------------------------------------------------------------------
-- users (2 admins, 3 developers, 4 users). Passwords: bcrypt, cost 8.
-- crypt() runs for conflicting rows too, but DO NOTHING discards the result,
-- so existing users keep their hash.
-- -----------------------------------------------------------------------------
INSERT INTO users (id, email, username, password_hash, role, is_verified, created_at, updated_at)
SELECT v.id::uuid, v.email, v.username, crypt(v.password, gen_salt('bf', 8)), v.role,
       v.is_verified, now() - v.age, now() - v.age
FROM (VALUES
    ('00000000-0000-4000-a000-000000000101', 'admin@example.com', 'admin',     'admin123!', 'admin',     true,  interval '120 days'),
    ('00000000-0000-4000-a000-000000000102', 'ops@example.com',   'ops_admin', 'admin123!', 'admin',     true,  interval '110 days'),
    ('00000000-0000-4000-a000-000000000103', 'alice@example.com', 'alice_dev', 'dev123!',   'developer', true,  interval '100 days'),
    ('00000000-0000-4000-a000-000000000104', 'bob@example.com',   'bob_dev',   'dev123!',   'developer', true,  interval '95 days'),
    ('00000000-0000-4000-a000-000000000105', 'carol@example.com', 'carol_dev', 'dev123!',   'developer', true,  interval '90 days'),
    ('00000000-0000-4000-a000-000000000106', 'dave@example.com',  'dave',      'user123!',  'user',      true,  interval '60 days'),
    ('00000000-0000-4000-a000-000000000107', 'erin@example.com',  'erin',      'user123!',  'user',      true,  interval '45 days'),
    ('00000000-0000-4000-a000-000000000108', 'frank@example.com', 'frank',     'user123!',  'user',      true,  interval '30 days'),
    ('00000000-0000-4000-a000-000000000109', 'grace@example.com', 'grace',     'user123!',  'user',      false, interval '3 days')
) AS v (id, email, username, password, role, is_verified, age)
ON CONFLICT (id) DO NOTHING;

-- -----------------------------------------------------------------------------
-- ai_agents (10): 8 categories, all 3 price types, all 3 statuses,
-- owned by the three developers.
-- -----------------------------------------------------------------------------
INSERT INTO ai_agents (id, owner_id, name, description, category, price_type, price, status,
                       downloads_count, created_at, updated_at)
SELECT v.id::uuid, v.owner_id::uuid, v.name, v.description, v.category, v.price_type,
       v.price::numeric(10,2), v.status, v.downloads_count, now() - v.age, now() - v.age
FROM (VALUES
    ('00000000-0000-4000-a000-000000000201', '00000000-0000-4000-a000-000000000103',
     'CodePilot Reviewer', 'Reviews pull requests and suggests fixes for common bugs.',
     'development', 'subscription', 19.99, 'published', 1520, interval '80 days'),
    ('00000000-0000-4000-a000-000000000202', '00000000-0000-4000-a000-000000000103',
     'SQL Whisperer', 'Turns plain-English questions into SQL and explains the query plan.',
     'data_analysis', 'one_time', 49.00, 'published', 870, interval '75 days'),
    ('00000000-0000-4000-a000-000000000203', '00000000-0000-4000-a000-000000000104',
     'Inbox Zero Assistant', 'Sorts, summarises and drafts replies to your e-mail.',
     'productivity', 'free', 0, 'published', 5310, interval '70 days'),
    ('00000000-0000-4000-a000-000000000204', '00000000-0000-4000-a000-000000000104',
     'Blog Drafter', 'Outlines and drafts long-form blog posts in your own voice.',
     'content_creation', 'subscription', 9.99, 'published', 640, interval '65 days'),
    ('00000000-0000-4000-a000-000000000205', '00000000-0000-4000-a000-000000000105',
     'Support Triage Bot', 'Classifies incoming tickets and proposes first responses.',
     'customer_support', 'one_time', 199.00, 'published', 210, interval '60 days'),
    ('00000000-0000-4000-a000-000000000206', '00000000-0000-4000-a000-000000000105',
     'Meeting Notes Summarizer', 'Turns meeting transcripts into decisions and action items.',
     'productivity', 'free', 0, 'published', 3980, interval '55 days'),
    ('00000000-0000-4000-a000-000000000207', '00000000-0000-4000-a000-000000000103',
     'Paper Digest', 'Summarises research papers and extracts key findings.',
     'research', 'free', 0, 'draft', 0, interval '10 days'),
    ('00000000-0000-4000-a000-000000000208', '00000000-0000-4000-a000-000000000104',
     'Ad Copy Generator', 'Generates ad variants for A/B tests. Superseded by Blog Drafter.',
     'marketing', 'one_time', 29.50, 'archived', 415, interval '200 days'),
    ('00000000-0000-4000-a000-000000000209', '00000000-0000-4000-a000-000000000105',
     'Quiz Tutor', 'Builds practice quizzes from course material.',
     'education', 'subscription', 14.00, 'draft', 0, interval '5 days'),
    ('00000000-0000-4000-a000-000000000210', '00000000-0000-4000-a000-000000000104',
     'Test Generator', 'Writes unit tests for Python and TypeScript code.',
     'development', 'one_time', 79.00, 'published', 1190, interval '40 days')
) AS v (id, owner_id, name, description, category, price_type, price, status,
        downloads_count, age)
ON CONFLICT (id) DO NOTHING;

-- -----------------------------------------------------------------------------
-- reviews (15), at most one per (agent, user). The trigger fills in
-- ai_agents.rating_count / rating_average; expected result:
--   CodePilot Reviewer 3 / 4.67   SQL Whisperer 2 / 3.50
--   Inbox Zero         4 / 4.25   Blog Drafter  1 / 2.00
--   Support Triage     2 / 4.50   Meeting Notes 1 / 3.00
--   Ad Copy Generator  1 / 1.00   Test Generator 1 / 5.00
--   Paper Digest, Quiz Tutor (drafts): 0 / 0.00
-- -----------------------------------------------------------------------------
INSERT INTO reviews (id, agent_id, user_id, rating, comment, created_at, updated_at)
SELECT v.id::uuid, v.agent_id::uuid, v.user_id::uuid, v.rating, v.comment,
       now() - v.age, now() - v.age
FROM (VALUES
    ('00000000-0000-4000-a000-000000000301', '00000000-0000-4000-a000-000000000201',
     '00000000-0000-4000-a000-000000000106', 5, 'Caught a race condition our team missed.', interval '50 days'),
    ('00000000-0000-4000-a000-000000000302', '00000000-0000-4000-a000-000000000201',
     '00000000-0000-4000-a000-000000000107', 4, 'Good suggestions, a bit noisy on style.', interval '40 days'),
    ('00000000-0000-4000-a000-000000000303', '00000000-0000-4000-a000-000000000201',
     '00000000-0000-4000-a000-000000000108', 5, NULL, interval '20 days'),
    ('00000000-0000-4000-a000-000000000304', '00000000-0000-4000-a000-000000000202',
     '00000000-0000-4000-a000-000000000106', 4, 'Handles joins well.', interval '45 days'),
    ('00000000-0000-4000-a000-000000000305', '00000000-0000-4000-a000-000000000202',
     '00000000-0000-4000-a000-000000000109', 3, 'Struggles with window functions.', interval '2 days'),
    ('00000000-0000-4000-a000-000000000306', '00000000-0000-4000-a000-000000000203',
     '00000000-0000-4000-a000-000000000106', 5, 'Saves me an hour a day.', interval '55 days'),
    ('00000000-0000-4000-a000-000000000307', '00000000-0000-4000-a000-000000000203',
     '00000000-0000-4000-a000-000000000107', 5, NULL, interval '35 days'),
    ('00000000-0000-4000-a000-000000000308', '00000000-0000-4000-a000-000000000203',
     '00000000-0000-4000-a000-000000000108', 4, 'Great, but the summaries are long.', interval '25 days'),
    ('00000000-0000-4000-a000-000000000309', '00000000-0000-4000-a000-000000000203',
     '00000000-0000-4000-a000-000000000103', 3, 'Useful; misfiles newsletters.', interval '15 days'),
    ('00000000-0000-4000-a000-000000000310', '00000000-0000-4000-a000-000000000204',
     '00000000-0000-4000-a000-000000000107', 2, 'Drafts need heavy editing.', interval '30 days'),
    ('00000000-0000-4000-a000-000000000311', '00000000-0000-4000-a000-000000000205',
     '00000000-0000-4000-a000-000000000108', 4, 'Cut our first-response time in half.', interval '28 days'),
    ('00000000-0000-4000-a000-000000000312', '00000000-0000-4000-a000-000000000205',
     '00000000-0000-4000-a000-000000000104', 5, 'Solid triage accuracy.', interval '22 days'),
    ('00000000-0000-4000-a000-000000000313', '00000000-0000-4000-a000-000000000206',
     '00000000-0000-4000-a000-000000000109', 3, NULL, interval '1 day'),
    ('00000000-0000-4000-a000-000000000314', '00000000-0000-4000-a000-000000000208',
     '00000000-0000-4000-a000-000000000106', 1, 'Repetitive output.', interval '150 days'),
    ('00000000-0000-4000-a000-000000000315', '00000000-0000-4000-a000-000000000210',
     '00000000-0000-4000-a000-000000000105', 5, 'Great coverage on edge cases.', interval '12 days')
) AS v (id, agent_id, user_id, rating, comment, age)
ON CONFLICT (id) DO NOTHING;

-- -----------------------------------------------------------------------------
-- transactions (10): all 4 statuses, USD / EUR / GBP, all 5 payment methods,
-- some with a stripe_payment_id and some without.
-- -----------------------------------------------------------------------------
INSERT INTO transactions (id, buyer_id, seller_id, agent_id, amount, currency, status,
                          payment_method, stripe_payment_id, created_at, updated_at)
SELECT v.id::uuid, v.buyer_id::uuid, v.seller_id::uuid, v.agent_id::uuid,
       v.amount::numeric(10,2), v.currency, v.status, v.payment_method, v.stripe_payment_id,
       now() - v.age, now() - v.age
FROM (VALUES
    ('00000000-0000-4000-a000-000000000401', '00000000-0000-4000-a000-000000000106',
     '00000000-0000-4000-a000-000000000103', '00000000-0000-4000-a000-000000000202',
     49.00, 'USD', 'completed', 'card', 'pi_dev_0000000000000401', interval '46 days'),
    ('00000000-0000-4000-a000-000000000402', '00000000-0000-4000-a000-000000000107',
     '00000000-0000-4000-a000-000000000103', '00000000-0000-4000-a000-000000000201',
     19.99, 'USD', 'completed', 'card', 'pi_dev_0000000000000402', interval '41 days'),
    ('00000000-0000-4000-a000-000000000403', '00000000-0000-4000-a000-000000000108',
     '00000000-0000-4000-a000-000000000105', '00000000-0000-4000-a000-000000000205',
     185.00, 'EUR', 'completed', 'card', 'pi_dev_0000000000000403', interval '29 days'),
    ('00000000-0000-4000-a000-000000000404', '00000000-0000-4000-a000-000000000109',
     '00000000-0000-4000-a000-000000000103', '00000000-0000-4000-a000-000000000202',
     49.00, 'USD', 'pending', 'card', NULL, interval '1 day'),
    ('00000000-0000-4000-a000-000000000405', '00000000-0000-4000-a000-000000000106',
     '00000000-0000-4000-a000-000000000104', '00000000-0000-4000-a000-000000000210',
     79.00, 'USD', 'failed', 'google_pay', 'pi_dev_0000000000000405', interval '14 days'),
    ('00000000-0000-4000-a000-000000000406', '00000000-0000-4000-a000-000000000107',
     '00000000-0000-4000-a000-000000000105', '00000000-0000-4000-a000-000000000205',
     199.00, 'USD', 'refunded', 'card', 'pi_dev_0000000000000406', interval '20 days'),
    ('00000000-0000-4000-a000-000000000407', '00000000-0000-4000-a000-000000000108',
     '00000000-0000-4000-a000-000000000104', '00000000-0000-4000-a000-000000000204',
     8.49, 'GBP', 'completed', 'paypal', NULL, interval '18 days'),
    ('00000000-0000-4000-a000-000000000408', '00000000-0000-4000-a000-000000000104',
     '00000000-0000-4000-a000-000000000103', '00000000-0000-4000-a000-000000000201',
     19.99, 'USD', 'completed', 'bank_transfer', NULL, interval '33 days'),
    ('00000000-0000-4000-a000-000000000409', '00000000-0000-4000-a000-000000000109',
     '00000000-0000-4000-a000-000000000104', '00000000-0000-4000-a000-000000000204',
     8.49, 'GBP', 'pending', 'paypal', NULL, interval '2 hours'),
    ('00000000-0000-4000-a000-000000000410', '00000000-0000-4000-a000-000000000105',
     '00000000-0000-4000-a000-000000000104', '00000000-0000-4000-a000-000000000210',
     79.00, 'USD', 'completed', 'apple_pay', 'pi_dev_0000000000000410', interval '11 days')
) AS v (id, buyer_id, seller_id, agent_id, amount, currency, status, payment_method,
        stripe_payment_id, age)
ON CONFLICT (id) DO NOTHING;

COMMIT;
