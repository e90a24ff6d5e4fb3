#!/usr/bin/env bash
# Test-only tools outside Python: the real JavaScript client (npm) and, for the shared cache,
# a real redis-server (Debian). Installed here so that a fresh machine needs nothing by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# node and npm run the real @huggingface/inference client (tests/http/test_live_js.py).
if ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if [ -f tests/js/package.json ] && [ ! -d tests/js/node_modules ]; then
  (cd tests/js && npm ci --no-audit --no-fund --silent 2>/dev/null || npm install --no-audit --no-fund --silent)
fi
# A real redis-server for the shared result-cache tests (tests/cache/test_redis_cache.py).
if ! command -v redis-server >/dev/null 2>&1; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
