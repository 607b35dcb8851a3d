#!/usr/bin/env bash
# A throwaway Redis server for the cluster tests and the benchmark: a fresh
# directory, listening on 127.0.0.1 only, on a free port, with the append-only
# file fsynced on every write (`appendfsync always`: what weft's cluster
# guarantee assumes, see docs/CLUSTER.md).
#
#   eval "$(scripts/redis-server.sh start)"     prints REDIS_DIR=… REDIS_PID=… REDIS_URL=…
#                                               and export WEFT_TEST_REDIS=…
#   scripts/redis-server.sh stop "$REDIS_DIR"   stops it by its PID and removes it
#
# The server's configuration is kept in the directory (redis.conf), so a test
# that kills it can start it again on the same port and data with
# `redis-server "$REDIS_DIR/redis.conf"`.
#
# REDIS_APPENDFSYNC=everysec (or no) starts it with that fsync policy instead,
# to measure what the fsync on every write costs (bench/FINDINGS.md).
set -euo pipefail

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local bin dir port pid
  bin=$(command -v redis-server || true)
  if [ -z "$bin" ]; then
    echo "redis-server.sh: no redis-server on PATH (apt-get install redis-server)" >&2
    exit 1
  fi
  case "${REDIS_APPENDFSYNC:-always}" in
    always|everysec|no) ;;
    *) echo "redis-server.sh: REDIS_APPENDFSYNC must be always, everysec or no" >&2; exit 1 ;;
  esac
  dir=$(mktemp -d /tmp/weft-redis.XXXXXX)
  port=$(free_port)
  cat >"$dir/redis.conf" <<CONF
bind 127.0.0.1
protected-mode yes
port $port
dir $dir
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
appendonly yes
appendfsync ${REDIS_APPENDFSYNC:-always}
save ""
CONF
  "$bin" "$dir/redis.conf" || { cat "$dir/redis.log" >&2 2>/dev/null; exit 1; }
  # daemonize: the pid file appears once the server runs; wait for it to
  # answer (at most 30 s).
  for _ in $(seq 300); do
    if [ -s "$dir/redis.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  if [ ! -s "$dir/redis.pid" ]; then
    cat "$dir/redis.log" >&2 2>/dev/null || true
    echo "redis-server.sh: the server did not start" >&2
    exit 1
  fi
  pid=$(cat "$dir/redis.pid")
  echo "REDIS_DIR=$dir"
  echo "REDIS_PID=$pid"
  echo "REDIS_URL=redis://127.0.0.1:$port"
  echo "export WEFT_TEST_REDIS=redis://127.0.0.1:$port"
}

# Stops the server by its PID (SIGTERM: Redis flushes and exits), waits for
# it to exit (at most 30 s, then SIGKILL), and removes its directory.
stop() {
  local dir=$1 pid
  if [ -s "$dir/redis.pid" ]; then
    pid=$(cat "$dir/redis.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?redis-server.sh stop DIR}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
