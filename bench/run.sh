#!/usr/bin/env bash
# Run the benchmarks (bench/README.md): install mlstack with its runtime extras into .venv
# if needed (as scripts/test.sh does), then write bench/results.md and bench/results.json.
# Extra args go to `python -m bench` (e.g. --sections 1,2 or --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# ray: section 7, the flow on a local Ray cluster; bench: section 3's expert baseline
mlstack_venv ".[runtime,test,ray,bench]"
# the tests of speed and memory goals the test command leaves to the bench (pytest -m bench:
# out-of-core training on a Ray cluster, overload recovery with batching off)
.venv/bin/python -m pytest -m bench -q
exec .venv/bin/python -m bench "$@"
