#!/usr/bin/env bash
# Install (if needed) and start a throw-away PostgreSQL cluster on loopback for the tests that
# share an Optuna study between workers. Source it: it exports DLFORGE_TEST_POSTGRES and
# registers a trap that stops the cluster when the calling script exits.
set -euo pipefail
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=${DLFORGE_PG_PORT:-54329}
PGDATA=$(mktemp -d /tmp/dlforge-pg.XXXXXX)
as_pg() {  # PostgreSQL refuses to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
    -o "-p $PGPORT -k $PGDATA -c listen_addresses=127.0.0.1" start >/dev/null
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -q -c "CREATE DATABASE dlforge" >/dev/null
export DLFORGE_TEST_POSTGRES="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/dlforge"
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PGDATA"' EXIT
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT for the tests"
