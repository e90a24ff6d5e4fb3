#!/usr/bin/env bash
# Test-only tools outside Python: the real JavaScript client (npm), for the shared cache a real
# redis-server, and for the web page a real Chromium (both from Debian). Installed here so that a
# fresh machine needs nothing by hand; each is skipped when already present.
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
# A real headless browser for the web page's tests (tests/http/test_page*.py), driven by the
# playwright package of the test extras (`playwright install` would download a browser build of
# its own from a CDN; Debian's comes from the same apt sources as redis-server).
if [ ! -x /usr/bin/chromium ]; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
