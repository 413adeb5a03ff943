#!/usr/bin/env bash
# A center joins the federation, end to end, against the testbed's PBS center
# (run as root from the repository: it starts the testbed if it is not up).
#   1. write its YAML          2. hpcfed center check     3. store its login's key
#   4. the gateway serves it    5. placed jobs refused: not admitted yet
#   6. hpcfed evaluate          7. admitted: a placed job lands there
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
TESTBED=${HPCFED_TESTBED_DIR:-/tmp/hpcfed-testbed}
work=${ONBOARDING_DIR:-$(mktemp -d)}
mkdir -p "$work/centers"

"$BIN/python" -m tests.testbed up >/dev/null
port=22203                                  # the testbed's PBS center, posing as "east"
host_key=$(cut -d' ' -f1,2 "$TESTBED/centerc/host_ed25519.pub")

echo "== 1. the center's file: $work/centers/east.yaml"
sed -e "s|host: login.east.example.org|host: 127.0.0.1|" \
    -e "s|port: 22$|port: $port|" \
    -e "s|login: hpcfed |login: alice  |" \
    -e "s|- ssh-ed25519 .*|- $host_key|" \
    examples/onboarding/center.yaml >"$work/centers/east.yaml"

echo "== 2. hpcfed center check"
"$BIN/hpcfed" center check "$work/centers/east.yaml"

cat >"$work/gateway.yaml" <<YAML
data_dir: $work/data
listen: {host: 127.0.0.1, port: 0}
poll_interval: 0.5s
center_files: [centers/east.yaml]
auth: {bootstrap_user: alice, bootstrap_roles: [researcher, admin]}
computing_power: {cache_ttl: 2s}
YAML
export HPCFED_DATA_DIR=$work/data

echo "== 3. the login's SSH key, into the gateway's encrypted vault"
"$BIN/hpcfed" vault add-key --config "$work/gateway.yaml" --center east --login alice \
    --key-file "$TESTBED/keys/alice_key"

echo "== 4. the gateway"
"$BIN/hpcfed" serve --config "$work/gateway.yaml" >"$work/gateway.log" 2>&1 &
gateway=$!
trap 'kill $gateway 2>/dev/null; wait $gateway 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    [ -s "$work/data/gateway-url" ] && break
    kill -0 "$gateway" 2>/dev/null || { cat "$work/gateway.log" >&2; exit 1; }
    sleep 0.1
done
"$BIN/hpcfed" power east

echo "== 5. before its evaluation, placement sends it nothing"
if "$BIN/hpcfed" submit examples/onboarding/job.yaml; then
    echo "a center that was not admitted received a placed job" >&2; exit 1
fi

echo "== 6. hpcfed evaluate east"
"$BIN/hpcfed" evaluate east --report "$work/evaluation.md" --json "$work/evaluation.json"
"$BIN/hpcfed" centers

echo "== 7. a placed job goes to the admitted center"
"$BIN/hpcfed" submit examples/onboarding/job.yaml --wait
"$BIN/hpcfed" usage
echo "== report: $work/evaluation.md"
