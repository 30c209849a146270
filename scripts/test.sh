#!/usr/bin/env bash
# Install mlstack with its runtime and test extras into .venv, then run the whole test suite.
# Works on a fresh clone: nothing needs to be installed by hand. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mlstack_venv ".[runtime,test]"
exec .venv/bin/python -m pytest "$@"
