#!/usr/bin/env bash
# Run the benchmarks (bench/README.md): install mlstack with its runtime extras into .venv
# if needed (as scripts/test.sh does), then write bench/results.md and bench/results.json.
# Extra args go to `python -m bench` (e.g. --sections 1,2 or --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# ray: section 7, the flow on a local Ray cluster; bench: section 3's expert baseline;
# xgboost, lightgbm, pytorch: the framework blueprints' deploys (pytest -m bench)
mlstack_venv ".[runtime,test,xgboost,lightgbm,pytorch,ray,bench]"
# the tests the test command leaves to the bench (pytest -m bench): speed and memory goals
# (out-of-core training on a Ray cluster, overload recovery with batching off) and the
# framework blueprints' deploys (churn-mlp, fraud-gpu)
.venv/bin/python -m pytest -m bench -q
exec .venv/bin/python -m bench "$@"
