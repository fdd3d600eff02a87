#!/usr/bin/env bash
# TEST INFRASTRUCTURE: entrypoint of the local `postgres:15` stand-in (see ../README.md).
# Mirrors the official image's docker-entrypoint.sh for what this project relies on:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / POSTGRES_INITDB_ARGS (and *_FILE),
# POSTGRES_HOST_AUTH_METHOD, /docker-entrypoint-initdb.d run once on an empty PGDATA by a
# temporary server listening on the Unix socket only, then the real server as `postgres`.
set -Eeo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }
die() { log "error: $*" >&2; exit 1; }

# VAR_FILE support: read VAR from the file named by VAR_FILE (Docker secrets).
file_env() {
    local var=$1 file_var="${1}_FILE" def=${2:-}
    if [ "${!var:-}" ] && [ "${!file_var:-}" ]; then
        die "both $var and $file_var are set (but are exclusive)"
    fi
    local val=$def
    if [ "${!var:-}" ]; then
        val=${!var}
    elif [ "${!file_var:-}" ]; then
        val=$(<"${!file_var}")
    fi
    export "$var"="$val"
    unset "$file_var"
}

setup_env() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=}"
    DATABASE_ALREADY_EXISTS=
    if [ -s "$PGDATA/PG_VERSION" ]; then
        DATABASE_ALREADY_EXISTS=true
    fi
}

create_directories() {
    local user
    user=$(id -u)
    mkdir -p "$PGDATA"
    chmod 00700 "$PGDATA" || :
    mkdir -p /var/run/postgresql || :
    chmod 03775 /var/run/postgresql || :
    if [ "$user" = 0 ]; then
        find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
        find /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
    fi
}

verify_minimum_env() {
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        die "Database is uninitialized and superuser password is not specified.
       Set POSTGRES_PASSWORD to a non-empty value for the superuser, or use
       POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password."
    fi
}

init_database_dir() {
    # initdb reads the password from a pipe: it never appears on a command line.
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a word list on purpose
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        $POSTGRES_INITDB_ARGS "$@"
}

setup_hba_conf() {
    if [ "$1" = postgres ]; then
        shift
    fi
    local auth=$POSTGRES_HOST_AUTH_METHOD
    if [ -z "$auth" ]; then
        # The default of the official image: the server's password_encryption (scram-sha-256).
        auth=$(postgres -C password_encryption "$@")
    fi
    {
        printf '\n'
        if [ "$auth" = trust ]; then
            printf '# warning trust is enabled for all connections\n'
        fi
        printf 'host all all all %s\n' "$auth"
    } >>"$PGDATA/pg_hba.conf"
}

process_sql() {
    local query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password
        --no-psqlrc)
    if [ -n "$POSTGRES_DB" ]; then
        query_runner+=(--dbname "$POSTGRES_DB")
    fi
    PGHOST='' PGHOSTADDR='' "${query_runner[@]}" "$@"
}

setup_db() {
    # psql interpolates :'db' / :"db" only in SQL read from stdin, not in -c.
    local exists
    exists=$(printf '%s\n' "SELECT 1 FROM pg_database WHERE datname = :'db';" |
        POSTGRES_DB='' process_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only)
    if [ -z "$exists" ]; then
        printf '%s\n' 'CREATE DATABASE :"db";' |
            POSTGRES_DB='' process_sql --dbname postgres --set db="$POSTGRES_DB"
        printf '\n'
    fi
}

process_init_files() {
    local f
    printf '\n'
    for f; do
        case "$f" in
            *.sh)
                if [ -x "$f" ]; then
                    log "running $f"
                    "$f"
                else
                    log "sourcing $f"
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql) log "running $f"; process_sql -f "$f"; printf '\n' ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | process_sql; printf '\n' ;;
            *.sql.xz) log "running $f"; xzcat "$f" | process_sql; printf '\n' ;;
            *.sql.zst) log "running $f"; zstd -dc "$f" | process_sql; printf '\n' ;;
            *) log "ignoring $f" ;;
        esac
    done
}

temp_server_start() {
    if [ "$1" = postgres ]; then
        shift
    fi
    # Unix socket only: nothing outside the container can connect before init is complete.
    set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
    PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

temp_server_stop() {
    PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

want_help() {
    local arg
    for arg; do
        case "$arg" in
            -'?' | --help | --describe-config | -V | --version) return 0 ;;
        esac
    done
    return 1
}

main() {
    if [ "${1:0:1}" = - ]; then
        set -- postgres "$@"
    fi

    if [ "$1" = postgres ] && ! want_help "$@"; then
        setup_env
        create_directories
        if [ "$(id -u)" = 0 ]; then
            # Drop to the unprivileged postgres user (setpriv: util-linux, no gosu needed).
            export HOME=/var/lib/postgresql
            exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
        fi

        if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
            verify_minimum_env
            # Fail early on an unreadable init dir, before initdb touches anything.
            ls /docker-entrypoint-initdb.d/ >/dev/null

            init_database_dir
            setup_hba_conf "$@"

            export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
            temp_server_start "$@"
            setup_db
            process_init_files /docker-entrypoint-initdb.d/*
            temp_server_stop
            unset PGPASSWORD

            printf '\n'
            log 'PostgreSQL init process complete; ready for start up.'
            printf '\n'
        else
            printf '\n'
            log 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
            printf '\n'
        fi
    fi

    exec "$@"
}

main "$@"
