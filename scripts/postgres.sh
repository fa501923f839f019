#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the collector's tests and
# the ingest benchmark, from Debian's postgresql package.
#
#   scripts/postgres.sh start DIR PORT   # prints the URL to use
#   scripts/postgres.sh stop DIR
#
# The cluster lives in DIR (created, trust authentication, role and
# database `kiln`). PostgreSQL refuses to run as root: as root, the server
# runs as the `postgres` user the package creates.
set -euo pipefail
cmd=${1:?usage: scripts/postgres.sh start DIR PORT | stop DIR}
dir=${2:?usage: scripts/postgres.sh start DIR PORT | stop DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "PostgreSQL's server programs are missing: sudo apt-get install postgresql" >&2
  exit 1
fi
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case $cmd in
  start)
    port=${3:?usage: scripts/postgres.sh start DIR PORT}
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir" -U kiln --auth=trust >/dev/null
    fi
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U kiln kiln 2>/dev/null || true
    echo "postgres://kiln@127.0.0.1:$port/kiln"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: scripts/postgres.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
