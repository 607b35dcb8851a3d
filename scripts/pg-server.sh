#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and the benchmark: initdb in a
# fresh directory, listening on 127.0.0.1 only, on a free port, password
# authentication over TCP (so the tests exercise the password paths).
#
#   eval "$(scripts/pg-server.sh start)"   prints PG_DIR=… PG_PID=… PG_URL=…
#   scripts/pg-server.sh stop "$PG_DIR"    stops it by its PID and removes it
#
# PostgreSQL refuses to run as root: as root, the server runs as the
# `postgres` user (Debian's package creates it), in a directory it owns.
#
# PG_SYNCHRONOUS_COMMIT=off starts it with commits that do not wait for the
# WAL's fsync, to measure what that wait costs (bench/FINDINGS.md).
set -euo pipefail

bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ]; then
    echo "pg-server.sh: no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)" >&2
    exit 1
  fi
  echo "$dir"
}

# Runs a command as the user the server runs as.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local bin dir port password sync=${PG_SYNCHRONOUS_COMMIT:-on}
  case "$sync" in
    on|off) ;;
    *) echo "pg-server.sh: PG_SYNCHRONOUS_COMMIT must be on or off" >&2; exit 1 ;;
  esac
  bin=$(bindir)
  dir=$(mktemp -d /tmp/weft-pg.XXXXXX)
  password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
  printf '%s\n' "$password" >"$dir/pwfile"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; fi
  as_pg "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  port=$(free_port)
  # fsync stays on: the benchmark measures durable commits (and, unless
  # PG_SYNCHRONOUS_COMMIT=off, each commit waits for its WAL's fsync).
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=400 -c synchronous_commit=$sync" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  local pid
  pid=$(head -n 1 "$dir/data/postmaster.pid")
  echo "PG_DIR=$dir"
  echo "PG_PID=$pid"
  echo "PG_URL=postgres://postgres:$password@127.0.0.1:$port/postgres"
}

# Stops the server by its PID (SIGINT: PostgreSQL's fast shutdown), waits
# for it to exit (at most 60 s, then SIGQUIT), and removes its directory.
stop() {
  local dir=$1 pid
  if [ -f "$dir/data/postmaster.pid" ]; then
    pid=$(head -n 1 "$dir/data/postmaster.pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 600); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -QUIT "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?pg-server.sh stop DIR}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
