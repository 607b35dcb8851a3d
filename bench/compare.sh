#!/usr/bin/env bash
# Runs every benchmark scenario against three servers in one run, on this
# machine: weft (--storage sqlite), the reference Node server
# @y/websocket-server 0.1.1, and weft-bench's null relay; and, in the
# Hocuspocus scenarios, weft's /hocuspocus beside @hocuspocus/server 4.7.0 with
# @hocuspocus/extension-sqlite (bench/hocuspocus, pinned by its lockfile). Servers are pinned
# to core 0, the load generator to core 1.
#
#   bench/compare.sh            full run; writes docs/BENCHMARKS.md and docs/bench/*.svg
#   bench/compare.sh --quick    small sizes, short durations (about 2 min); report in target/bench-quick/
#   bench/compare.sh --only fanout,durable    some scenarios only (report in the output folder)
#   bench/compare.sh --quick --weft-bin /path/to/weft --out target/bench-old    another weft binary
#       (an older commit's, for a before/after); WEFT_BIN does the same
#   bench/compare.sh --only durable,manydocs --store postgres --out target/bench-pg-1
#       weft on PostgreSQL too (a throwaway server started here, pinned with the servers), beside
#       SQLite and none; the median of three such runs goes into docs/BENCHMARKS.md with
#       python3 bench/report.py --postgres target/bench-pg-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md
#   bench/compare.sh --only hostile --out target/bench-hostile-1    the hostile peer (weft only); the
#       median of three such runs goes into docs/BENCHMARKS.md with
#       python3 bench/report.py --hostile target/bench-hostile-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md --svg-dir docs/bench
#   bench/compare.sh --only cluster --out target/bench-cluster-1    three weft nodes (PostgreSQL and
#       Redis, throwaway servers started here on free ports, pinned with the servers, stopped by PID
#       at the end) beside one weft on the same PostgreSQL; the median of three such runs goes in with
#       python3 bench/report.py --cluster target/bench-cluster-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md
#   bench/compare.sh --only joinstorm --out target/bench-storm-1    the join storm: 200 clients join a
#       20 MiB document within 1 s (2 MiB and 50 clients with --quick), weft and the reference
#       (time to the last sync, peak RSS); also part of the full and the quick run
#   bench/compare.sh --only c100k,manyloaded --out target/bench-scale-1    scale on one node: as many
#       connections as the file limits allow (100,000 asked; 10 a document, 1% writing), and 10,000
#       documents of a trace's size loaded at once, then weft restarted under two clients a document; the
#       median of three such runs goes in with
#       python3 bench/report.py --scale target/bench-scale-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md
#   bench/compare.sh --only hocuspocus --out target/bench-hocus-1    weft's /hocuspocus beside
#       @hocuspocus/server (fan-out, many documents, crash); the median of three such runs goes in with
#       python3 bench/report.py --hocuspocus target/bench-hocus-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md --svg-dir docs/bench
#
# Environment: WEFT_TRACE (default tests/data/automerge-paper.json.gz),
# SERVER_CORES (default 0), GEN_CORES (default 1), BENCH_NICE=0 to run at normal priority,
# BENCH_MANYLOADED_DOCS (default 10,000; 100 with --quick) for the many-loaded-documents scenario.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
QUICK=""
ONLY=""
OUT=""
WEFT_BIN=${WEFT_BIN:-}
STORE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK="--quick" ;;
        --only) ONLY="$2"; shift ;;
        --only=*) ONLY="${1#--only=}" ;;
        --out) OUT="$2"; shift ;;
        --weft-bin) WEFT_BIN="$2"; shift ;;
        --weft-bin=*) WEFT_BIN="${1#--weft-bin=}" ;;
        --store) STORE="$2"; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$OUT" ]; then
    if [ -n "$QUICK" ]; then OUT=target/bench-quick; else OUT=target/bench; fi
fi
WEFT_BIN=${WEFT_BIN:-target/release/weft}
[ -x "$WEFT_BIN" ] || [ "$WEFT_BIN" = target/release/weft ] || { echo "--weft-bin: $WEFT_BIN is not an executable" >&2; exit 2; }
SERVER_CORES=${SERVER_CORES:-0}
GEN_CORES=${GEN_CORES:-1}
REF_VERSION=0.1.1

TRACE=${WEFT_TRACE:-}
if [ -z "$TRACE" ]; then
    for candidate in "$ROOT/tests/data/automerge-paper.json.gz" "$ROOT/../shared/data/traces/automerge-paper.json.gz"; do
        if [ -f "$candidate" ]; then TRACE=$candidate; break; fi
    done
fi
[ -f "$TRACE" ] || { echo "trace not found; set WEFT_TRACE" >&2; exit 1; }

started=$(date +%s)
# 10,000 idle connections need as many descriptors in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 12000 ] && [ -z "$QUICK" ]; then
    echo "warning: ulimit -n is $(ulimit -n); the idle scenario needs ~10,100" >&2
fi
PIN_GEN=()
# On a machine shared with other work (builds), a higher priority for the load
# generator and the servers it starts (they inherit it) keeps the others' jobs
# from preempting them mid-measurement. Needs root; skipped otherwise.
if [ "$(id -u)" = 0 ] && [ "${BENCH_NICE:-1}" = 1 ]; then
    PIN_GEN=(nice -n -10)
fi
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_GEN+=(taskset -c "$GEN_CORES")
else
    echo "warning: no taskset or a single core: servers and load generator are not pinned" >&2
    SERVER_CORES=""
fi

echo "== building weft and weft-bench (release)" >&2
cargo build --release --quiet -p weft -p weft-bench

echo "== installing @y/websocket-server@$REF_VERSION into a temporary folder" >&2
REF_DIR=$(mktemp -d "${TMPDIR:-/tmp}/weft-reference.XXXXXX")
PG_DIR=""
REDIS_DIR=""
cleanup() {
    rm -rf "$REF_DIR"
    if [ -n "$REDIS_DIR" ]; then scripts/redis-server.sh stop "$REDIS_DIR"; fi
    if [ -n "$PG_DIR" ]; then scripts/pg-server.sh stop "$PG_DIR"; fi
}
trap cleanup EXIT
( cd "$REF_DIR" && npm install --no-audit --no-fund --loglevel=error "@y/websocket-server@$REF_VERSION" >/dev/null )
REF_SERVER="$REF_DIR/node_modules/@y/websocket-server/src/server.js"
[ -f "$REF_SERVER" ] || { echo "the reference server did not install" >&2; exit 1; }

# @hocuspocus/server with its SQLite extension: exact versions from the
# committed lockfile (better-sqlite3 may compile from source the first time).
echo "== installing @hocuspocus/server (bench/hocuspocus, npm ci)" >&2
# Once per lockfile: npm ci starts by deleting node_modules.
if [ ! -f bench/hocuspocus/node_modules/.package-lock.json ] \
    || [ bench/hocuspocus/package-lock.json -nt bench/hocuspocus/node_modules/.package-lock.json ]; then
    ( cd bench/hocuspocus && npm ci --no-audit --no-fund --loglevel=error >/dev/null )
fi
HOCUS_SERVER="$ROOT/bench/hocuspocus/server.js"

# A throwaway PostgreSQL, once, for --store postgres and the cluster scenario.
start_postgres() {
    if [ -n "$PG_DIR" ]; then return; fi
    echo "== starting a throwaway PostgreSQL (scripts/pg-server.sh)" >&2
    pg_env=$(scripts/pg-server.sh start)
    eval "$pg_env"
    # With the servers under test, so that weft on PostgreSQL gets the
    # same cores as weft on SQLite (whose disk work is in its process).
    if [ -n "$SERVER_CORES" ]; then taskset -a -p -c "$SERVER_CORES" "$PG_PID" >/dev/null; fi
}

PG_ARGS=()
case "$STORE" in
    "") ;;
    postgres)
        start_postgres
        PG_ARGS=(--postgres "$PG_URL")
        ;;
    *) echo "--store: only postgres is known" >&2; exit 2 ;;
esac

# The cluster scenario (in a full run, --quick, or --only ...cluster...):
# PostgreSQL and Redis (appendfsync always), pinned with the weft nodes.
CLUSTER_ARGS=()
if [ -z "$ONLY" ] || [[ ",$ONLY," == *,cluster,* ]]; then
    start_postgres
    echo "== starting a throwaway Redis (scripts/redis-server.sh)" >&2
    redis_env=$(scripts/redis-server.sh start)
    eval "$redis_env"
    if [ -n "$SERVER_CORES" ]; then taskset -a -p -c "$SERVER_CORES" "$REDIS_PID" >/dev/null; fi
    CLUSTER_ARGS=(--cluster-postgres "$PG_URL" --cluster-postgres-pid "$PG_PID"
        --cluster-redis "$REDIS_URL" --cluster-redis-pid "$REDIS_PID")
fi

mkdir -p "$OUT"
pkg_version() { node -p "require('$REF_DIR/node_modules/$1/package.json').version"; }
cat > "$OUT/versions.json" <<EOF
{
  "weft_commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)",
  "weft_dirty": $(if git diff --quiet HEAD -- . 2>/dev/null; then echo false; else echo true; fi),
  "weft_bin": "$WEFT_BIN",
  "rustc": "$(rustc --version)",
  "node": "$(node --version)",
  "y_websocket_server": "$(pkg_version @y/websocket-server)",
  "yjs": "$(pkg_version yjs)",
  "ws": "$(pkg_version ws)",
  "y_protocols": "$(pkg_version y-protocols)",
  "hocuspocus_server": "$(node -p "require('$ROOT/bench/hocuspocus/node_modules/@hocuspocus/server/package.json').version")",
  "hocuspocus_sqlite": "$(node -p "require('$ROOT/bench/hocuspocus/node_modules/@hocuspocus/extension-sqlite/package.json').version")",
  "trace": "$(basename "$TRACE")",
  "redis_appendfsync": "${REDIS_APPENDFSYNC:-always}",
  "postgres_synchronous_commit": "${PG_SYNCHRONOUS_COMMIT:-on}",
  "redis": "$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p')",
  "postgres": "$(pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1); [ -n "$pg_bin" ] && "$pg_bin/postgres" --version | sed 's/^postgres (PostgreSQL) //')",
  "load_before": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "nice": "$(if [ ${#PIN_GEN[@]} -gt 0 ] && [ "${PIN_GEN[0]}" = nice ]; then echo -10; else echo 0; fi)",
  "cpu_pressure_avg300_before": "$(sed -n 's/^some .*avg300=\([0-9.]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null)"
}
EOF

echo "== running the scenarios (servers on core ${SERVER_CORES:-any}, load generator on core ${GEN_CORES})" >&2
ONLY_ARGS=()
if [ -n "$ONLY" ]; then ONLY_ARGS=(--only "$ONLY"); fi
"${PIN_GEN[@]}" target/release/weft-bench compare \
    --weft "$WEFT_BIN" \
    --reference "$REF_SERVER" \
    --hocuspocus "$HOCUS_SERVER" \
    --trace "$TRACE" \
    --out "$OUT" \
    --server-cores "$SERVER_CORES" \
    $QUICK "${ONLY_ARGS[@]}" "${PG_ARGS[@]}" "${CLUSTER_ARGS[@]}"

elapsed=$(( $(date +%s) - started ))
cat > "$OUT/run.json" <<EOF
{ "total_s": $elapsed, "command": "${BENCH_MANYLOADED_DOCS:+BENCH_MANYLOADED_DOCS=$BENCH_MANYLOADED_DOCS }bench/compare.sh${QUICK:+ $QUICK}${ONLY:+ --only $ONLY}${STORE:+ --store $STORE}" }
EOF

if [ -z "$QUICK" ] && [ -z "$ONLY" ] && [ "$OUT" = target/bench ]; then
    MD=docs/BENCHMARKS.md
    SVG=docs/bench
else
    MD="$OUT/BENCHMARKS.md"
    SVG="$OUT/bench"
fi
python3 bench/report.py --results "$OUT/results.json" --versions "$OUT/versions.json" --run "$OUT/run.json" \
    --md "$MD" --svg-dir "$SVG"
echo "== done in ${elapsed} s; report: $MD" >&2
