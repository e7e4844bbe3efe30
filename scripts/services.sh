#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer, starting them if they
# are installed but stopped. Fails loudly otherwise: the service tests need both, never skip.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # name port
    for _ in $(seq 1 60); do
        port_open "$2" && return 0
        sleep 0.5
    done
    echo "services: $1 did not come up on 127.0.0.1:$2" >&2
    return 1
}

if ! port_open 5432; then
    if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
        version="$(ls /etc/postgresql | sort -V | tail -1)"
        echo "services: starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
        wait_for PostgreSQL 5432
    else
        echo "services: PostgreSQL is not running on 127.0.0.1:5432 and is not installed here" >&2
        exit 1
    fi
fi
if command -v pg_isready >/dev/null; then
    for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { echo "services: PostgreSQL does not accept connections" >&2; exit 1; }
fi

if ! port_open 6379; then
    if command -v redis-server >/dev/null; then
        echo "services: starting Redis"
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
        wait_for Redis 6379
    else
        echo "services: Redis is not running on 127.0.0.1:6379 and is not installed here" >&2
        exit 1
    fi
fi
echo "services: PostgreSQL and Redis are up"
