#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for tests and benchmarks (Debian's packages, installed when
# missing). `scripts/postgres.sh start [DIR] [PORT]` prints the URL to use; `scripts/postgres.sh stop [DIR]`.
# Runs as the `postgres` user when started as root (initdb refuses root).
set -euo pipefail
action=${1:-start}
dir=${2:-/tmp/slipway-postgres}
port=${3:-55432}

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$found" ] && echo "$found"
}

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$action" in
start)
    if [ -z "$(bindir)" ]; then
        [ "$(id -u)" -eq 0 ] || { echo "PostgreSQL is missing: sudo apt-get install postgresql" >&2; exit 1; }
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    bin=$(bindir)
    if [ ! -f "$dir/PG_VERSION" ]; then
        mkdir -p "$dir"
        [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
        as_owner "$bin/initdb" -D "$dir" -U slipway --auth=trust -E UTF8 >/dev/null
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        # fsync stays on: the tests kill servers and expect what was committed to be there.
        as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null
    fi
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U slipway -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'slipway'" | grep -q 1 \
        || as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U slipway slipway
    echo "postgres://slipway@127.0.0.1:$port/slipway"
    ;;
stop)
    bin=$(bindir)
    as_owner "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
    ;;
*)
    echo "usage: scripts/postgres.sh start|stop [DIR] [PORT]" >&2
    exit 2
    ;;
esac
