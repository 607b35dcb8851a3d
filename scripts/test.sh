#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need,
# builds weft, and runs every test against the real binary.
#
#   scripts/test.sh                everything
#   scripts/test.sh --no-browser   skip the headless-Chromium tests
#
# Environment: WEFT_FUZZ_SECS (default 30; 0 skips it) bounds the fuzzing run.
set -euo pipefail
cd "$(dirname "$0")/.."

browser=1
for arg in "$@"; do
  case "$arg" in
    --no-browser) browser=0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
started=$(date +%s)

# Debian packages the tests drive: strace counts weft's fsyncs (--sync full
# against normal), sqlite3 holds the database's lock from another process
# (the y-websocket provider after 4500), curl and jq run README's API
# walkthrough as printed (tests/readme_walkthrough.rs), python3 runs its
# Python token minter (tests/readme_minters.rs) and the layer check,
# PostgreSQL (server and psql) backs the PostgreSQL half of the store tests
# (openssl makes the certificates of its TLS test), redis-server carries
# the cluster tests' streams (tests/cluster.rs),
# Chromium runs the browser tests.
missing=()
command -v strace >/dev/null || missing+=(strace)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v python3 >/dev/null || missing+=(python3)
command -v openssl >/dev/null || missing+=(openssl)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v psql >/dev/null; then
  missing+=(postgresql)
fi
command -v redis-server >/dev/null || missing+=(redis-server)
if [ "$browser" = 1 ] && [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi
if [ "${#missing[@]}" -gt 0 ]; then
  step "Installing ${missing[*]} (Debian packages)"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "Layers: http → session → doc → {weft-core, storage, broker}, leaves below (docs/ARCHITECTURE.md)"
scripts/check-layers.py

step "Web demo: the committed bundle is what web-demo/src builds to"
web-demo/check.sh

step "PostgreSQL: a throwaway server for the tests (127.0.0.1, a free port)"
# The PostgreSQL variants of the store tests fail without it (they never
# skip silently); each test creates its own database on this server.
pg_env=$(scripts/pg-server.sh start)
eval "$pg_env"
trap 'scripts/pg-server.sh stop "$PG_DIR"' EXIT
export WEFT_TEST_POSTGRES="$PG_URL"
echo "PostgreSQL $(psql -X -At -d "$PG_URL" -c 'SHOW server_version') running as pid $PG_PID"

step "Redis: a throwaway server for the cluster tests (127.0.0.1, a free port, appendfsync always)"
# The cluster tests fail without it (they never skip silently). Stopped by
# its PID on exit, success or failure, with PostgreSQL.
redis_env=$(scripts/redis-server.sh start)
eval "$redis_env"
trap 'scripts/redis-server.sh stop "$REDIS_DIR"; scripts/pg-server.sh stop "$PG_DIR"' EXIT
echo "Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') running as pid $REDIS_PID at $WEFT_TEST_REDIS"

# Before the Rust tests: tests/webhooks.rs runs tests/node/webhook-receiver.mjs,
# which verifies signatures with the `standardwebhooks` npm package.
step "Node: npm ci (yjs + y-websocket 3, @y/y 14 + @y/websocket 4, ws, playwright-core, standardwebhooks from the lockfile)"
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

step "Rust: build (release)"
cargo build --release --workspace --locked

step "Rust: unit, integration and property tests (release binary, real SQLite files and PostgreSQL databases, real sockets)"
cargo test --release --workspace --locked

step "Node: the real y-websocket clients (3.x with yjs 13, 4.x with @y/y 14) against weft"
(cd tests/node && WEFT_BIN="$PWD/../../target/release/weft" npm test)

if [ "$browser" = 1 ]; then
  step "Browser: the editor pages (CodeMirror 6, Quill, Monaco bindings) from their lockfile, bundled with esbuild"
  (cd tests/node/editors && npm ci --no-audit --no-fund --loglevel=error && node build.mjs)
  step "Browser: the web demo and the editor bindings in headless Chromium"
  (cd tests/node && WEFT_BIN="$PWD/../../target/release/weft" npm run test:browser)
fi

fuzz_secs=${WEFT_FUZZ_SECS:-30}
if [ "$fuzz_secs" -gt 0 ]; then
  step "Fuzzing: the incoming-frame path with cargo fuzz for ${fuzz_secs} s"
  if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet
  fi
  # New inputs go to a scratch corpus; the committed seeds are only read.
  # A crash leaves its input in fuzz/artifacts/frame/: make it a regression
  # case in tests/fuzz.rs, fix it, and run again.
  corpus=$(mktemp -d)
  (cd fuzz && cargo fuzz run --sanitizer none -O frame "$corpus" corpus/frame -- \
      -max_total_time="$fuzz_secs" -seed=1 -print_final_stats=1 2>&1 | tail -n 12)
  rm -rf "$corpus"
  step "Fuzzing: the Hocuspocus endpoint's frames with cargo fuzz for ${fuzz_secs} s"
  corpus=$(mktemp -d)
  (cd fuzz && cargo fuzz run --sanitizer none -O hocuspocus "$corpus" -- \
      -max_total_time="$fuzz_secs" -seed=1 -print_final_stats=1 2>&1 | tail -n 12)
  rm -rf "$corpus"
fi

echo
echo "all tests passed in $(( $(date +%s) - started )) s"
