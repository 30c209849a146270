#!/usr/bin/env bash
# The main job on the embedded local default, from a fresh clone: install mlstack with its
# runtime extra into .venv, init the churn blueprint into a fresh folder, deploy it locally
# (Feast apply + materialize, the Prefect training flow with its quality gate, the BentoML
# service, skew check, SLO load test), print the SLO report, curl a prediction, then stop
# everything it started. Set MLSTACK_DEMO_DIR to keep the project somewhere else, and
# MLSTACK_PORT to serve on another port than 3000.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
source scripts/env.sh
mlstack_venv ".[runtime]"
mlstack="$repo/.venv/bin/mlstack"
demo="${MLSTACK_DEMO_DIR:-$(mktemp -d)/churn}"
port="${MLSTACK_PORT:-3000}"

# init dates the blueprint's sample to now (its newest feature row), so it serves as shipped
"$mlstack" init "$demo" --blueprint churn
cd "$demo"
trap '"$mlstack" down >/dev/null 2>&1 || true' EXIT
"$mlstack" deploy --port "$port"
echo
echo "A prediction for customer 1001:"
curl -sS -X POST "http://127.0.0.1:$port/predict" -H 'Content-Type: application/json' \
  -d '{"rows": [{"customer_id": 1001}]}'
echo
"$mlstack" status
"$mlstack" down
trap - EXIT
echo "The project is in $demo (mlstack deploy there brings it back up)."
