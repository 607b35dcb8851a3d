#!/usr/bin/env bash
# Regenerates the README's screenshot, docs/screenshot.png: two pages of the
# web demo co-editing in headless Chromium, composed by the first browser
# test (tests/node/browser/demo.test.mjs). The test suite itself writes the
# picture to a temporary file only; this is the one command that changes the
# tracked one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "needs Debian's Chromium: apt-get install chromium (scripts/test.sh installs it)" >&2
  exit 1
fi
cargo build --release --locked
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/node && WEFT_BIN="$PWD/../../target/release/weft" WEFT_SCREENSHOT="$PWD/../../docs/screenshot.png" \
  node --test --test-name-pattern='^two pages edit one document' browser/demo.test.mjs)
echo "wrote docs/screenshot.png"
