#!/usr/bin/env bash
# =============================================================================
# 00-roles.sh -- the application's own role (runs once, before the schema)
#
# The init scripts run as the stack's superuser: the postgres image's
# POSTGRES_USER, which the stack sets to the env file's POSTGRES_ADMIN_USER.
# The application gets a role of its own, POSTGRES_APP_USER (the env file's
# POSTGRES_USER), that owns POSTGRES_DB but is no superuser: it cannot run
# programs (COPY ... TO PROGRAM), change the server (ALTER SYSTEM) or create
# roles. It may create databases, as test runners of applications do.
#
# The password comes from POSTGRES_APP_PASSWORD through psql's \getenv: it is
# never on a command line, and this session logs no statement.
# =============================================================================
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --quiet \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set app="$POSTGRES_APP_USER" --set db="$POSTGRES_DB" <<'SQL'
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
\getenv app_password POSTGRES_APP_PASSWORD
CREATE ROLE :"app" LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
ALTER DATABASE :"db" OWNER TO :"app";
SQL
