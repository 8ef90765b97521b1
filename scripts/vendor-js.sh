#!/usr/bin/env bash
# Vendor third-party browser/test files from the npm registry (run by a maintainer when
# upgrading; the results are committed, so users and CI need no build step and no npm):
#
#   exchange_server/accesshttp/static/lightweight-charts.standalone.production.js (+ LICENSE)
#       TradingView's charting library (Apache-2.0), used by the market page;
#   tests/data/openrpc-meta-schema.json (+ LICENSE)
#       the OpenRPC meta-schema (Apache-2.0), used by tests/integration/test_openrpc.py.
#
# Usage: scripts/vendor-js.sh [LIGHTWEIGHT_CHARTS_VERSION] [META_SCHEMA_VERSION]
set -euo pipefail

LWC_VERSION="${1:-5.2.1}"
META_VERSION="${2:-1.14.9}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATIC="$ROOT/exchange_server/accesshttp/static"
DATA="$ROOT/tests/data"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

command -v npm >/dev/null || { echo "vendor-js.sh: npm is required (apt-get install npm)" >&2; exit 1; }
command -v node >/dev/null || { echo "vendor-js.sh: node is required" >&2; exit 1; }

cd "$TMP"
npm pack --silent "lightweight-charts@$LWC_VERSION" "@open-rpc/meta-schema@$META_VERSION" >/dev/null

mkdir lwc meta
tar -xzf "lightweight-charts-$LWC_VERSION.tgz" -C lwc
tar -xzf "open-rpc-meta-schema-$META_VERSION.tgz" -C meta

mkdir -p "$STATIC" "$DATA"
cp lwc/package/dist/lightweight-charts.standalone.production.js "$STATIC/"
cp lwc/package/LICENSE "$STATIC/lightweight-charts.LICENSE.txt"
printf 'lightweight-charts %s from the npm registry (dist/lightweight-charts.standalone.production.js)\n' \
    "$LWC_VERSION" > "$STATIC/lightweight-charts.VERSION.txt"

node -e '
const m = require(process.argv[1]);
process.stdout.write(JSON.stringify(m.openrpcDocument || m.default || m, null, 1) + "\n");
' "$TMP/meta/package/index.js" > "$DATA/openrpc-meta-schema.json"
cp meta/package/LICENSE.md "$DATA/openrpc-meta-schema.LICENSE.md"
printf '@open-rpc/meta-schema %s from the npm registry (index.js, exported as JSON)\n' \
    "$META_VERSION" > "$DATA/openrpc-meta-schema.VERSION.txt"

echo "vendored lightweight-charts $LWC_VERSION into $STATIC"
echo "vendored @open-rpc/meta-schema $META_VERSION into $DATA"
