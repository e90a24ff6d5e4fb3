#!/usr/bin/env bash
# Test-only tools outside Python: the real JavaScript client (npm) and, for the shared cache,
# a real redis-server (Debian). Installed here so that a fresh machine needs nothing by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f tests/js/package.json ] && [ ! -d tests/js/node_modules ]; then
  (cd tests/js && npm ci --no-audit --no-fund --silent 2>/dev/null || npm install --no-audit --no-fund --silent)
fi
