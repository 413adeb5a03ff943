#!/usr/bin/env bash
# Start a gateway on the embedded default config (one local center), submit
# examples/hello.yaml, follow its output to the end, show its record, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
if [ -z "${HPCFED_DATA_DIR:-}" ]; then
    HPCFED_DATA_DIR=$(mktemp -d)
    cleanup_dir=$HPCFED_DATA_DIR
fi
export HPCFED_DATA_DIR
mkdir -p "$HPCFED_DATA_DIR"
log="$HPCFED_DATA_DIR/gateway.log"

"$BIN/hpcfed" serve --config configs/gateway.yaml --port 0 >"$log" 2>&1 &
gateway=$!
stop() {
    kill "$gateway" 2>/dev/null && wait "$gateway" 2>/dev/null || true
    if [ -n "${cleanup_dir:-}" ]; then rm -rf "$cleanup_dir"; fi
}
trap stop EXIT

# The gateway writes its URL into the data dir once it is listening.
for _ in $(seq 300); do
    [ -s "$HPCFED_DATA_DIR/gateway-url" ] && break
    kill -0 "$gateway" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
[ -s "$HPCFED_DATA_DIR/gateway-url" ] || { echo "gateway did not start" >&2; cat "$log" >&2; exit 1; }
echo "== gateway at $(cat "$HPCFED_DATA_DIR/gateway-url")"

echo "== centers"
"$BIN/hpcfed" centers
job=$("$BIN/hpcfed" submit examples/hello.yaml)
echo "== submitted examples/hello.yaml as $job; its output:"
"$BIN/hpcfed" logs --follow "$job"
echo "== the job"
"$BIN/hpcfed" status "$job"
state=$("$BIN/hpcfed" --json status "$job" | "$BIN/python" -c 'import json,sys; print(json.load(sys.stdin)["state"])')
[ "$state" = COMPLETED ]
