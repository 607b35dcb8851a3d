#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need,
# builds weft, and runs every test against the real binary.
#
#   scripts/test.sh            everything
#   scripts/test.sh --no-browser   skip the headless-Chromium tests
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

step "Rust: build (release)"
cargo build --release --workspace --locked

step "Rust: unit and integration tests (release binary, real SQLite files, real sockets)"
cargo test --release --workspace --locked

step "Node: npm ci (yjs, y-websocket, ws, playwright-core from the lockfile)"
(cd tests/node && npm ci --no-audit --no-fund)

step "Node: the real y-websocket client against weft"
(cd tests/node && WEFT_BIN="$PWD/../../target/release/weft" npm test)

echo
echo "all tests passed in $(( $(date +%s) - started )) s"
