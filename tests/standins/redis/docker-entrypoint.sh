#!/bin/sh
# TEST INFRASTRUCTURE: entrypoint of the local `redis:7` stand-in (see ../README.md).
# Behaves like the official image's docker-entrypoint.sh: `redis-server ARGS...` (or just
# options / a .conf file) runs redis-server; as root it chowns the working dir (/data) to
# `redis` and re-executes itself as `redis`; protected mode is turned off unless the config
# file given as first argument sets it (ours does: protected-mode yes).
set -e

# first arg is `-f` or `--some-option`, or a `something.conf`
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

# allow the container to be started with `--user`
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    # setpriv (util-linux) drops to redis with its groups, like gosu in the official image.
    export HOME=/data
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# Redis files (AOF, RDB) readable by the redis user only, like the official image.
um=$(umask)
if [ "$um" = 0022 ]; then
    umask 0077
fi

if [ "$1" = redis-server ]; then
    # As in the official image: without a config file that sets protected-mode, turn it off,
    # since a container is reached through its published port, never from localhost.
    do_protected_mode=1
    if [ -f "${2:-}" ] && grep -qE '^[[:space:]]*protected-mode' "$2"; then
        do_protected_mode=
    fi
    if [ -n "$do_protected_mode" ]; then
        shift
        set -- redis-server "$@" --protected-mode no
    fi
fi

exec "$@"
