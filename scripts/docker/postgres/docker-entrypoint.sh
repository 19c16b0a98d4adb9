#!/usr/bin/env bash
# The official postgres image's first-start contract, in short: an empty PGDATA is
# initialised (UTF-8, POSTGRES_USER as superuser with POSTGRES_PASSWORD, POSTGRES_DB created),
# then the server runs in the foreground as the user postgres.
set -euo pipefail

if [ "${1:-}" = "postgres" ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = "postgres" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set: the database is reachable over TCP}"
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    # SQL_ASCII (the C locale's default) breaks psycopg's text handling: always UTF-8
    initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -q \
            -c "CREATE DATABASE \"$db\" OWNER \"$user\""
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) . "$f" ;;
            *.sql) psql -v ON_ERROR_STOP=1 -U "$user" -d "$db" -q -f "$f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres stand-in: initialised $PGDATA (database $db, user $user)"
fi

if [ "${1:-}" = "postgres" ]; then
    shift
    exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
