#!/usr/bin/env bash
# Fails when the committed web-demo/dist is not what a fresh build of
# web-demo/src with the locked dependencies produces.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
node build.mjs --check
