#!/usr/bin/env bash
# Regenerate the README's pictures from the churn blueprint, for real:
#   docs/images/churn-graph.svg   mlstack graph --format svg
#   docs/images/churn-report.png  the SLO page of `mlstack docs` after two local deploys (the
#                                 second a canary rollout of a retrained model) and one run of
#                                 the generated monitoring flow, as headless Chromium draws it
# Takes a few minutes (two deploys); needs the runtime extra and chromium. Everything it
# starts is stopped (mlstack down) before it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mlstack_venv ".[runtime,test]"
repo=$PWD
py="$repo/.venv/bin/python"
port=${MLSTACK_IMAGES_PORT:-3917}
work=$(mktemp -d)
project="$work/churn"
cleanup() { "$py" -m mlstack down -C "$project" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p docs/images
"$py" -m mlstack graph blueprints/churn --format svg > docs/images/churn-graph.svg
"$py" -m mlstack init "$project" --blueprint churn >/dev/null
"$py" -m mlstack deploy -C "$project" --port "$port"
sed -i 's/n_estimators: 150/n_estimators: 120/' "$project/mlstack.yaml"
"$py" -m mlstack deploy -C "$project" --port "$port"
# the monitoring flow, run as the deploy runs generated code (its environment, the serving
# version's tree), so the report has drift and freshness results
current=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['current'])" \
  "$project/.mlstack/deployments.json")
(cd "$project/.mlstack/versions/$current" && "$py" -c "
import os, subprocess, sys
from mlstack.ops.paths import ProjectPaths
env = ProjectPaths.for_spec(sys.argv[1]).environment(code_dir=os.getcwd())
subprocess.run([sys.executable, '-m', 'pipelines.monitoring'], env=env, check=True,
               stdout=subprocess.DEVNULL)" "$project/mlstack.yaml")
"$py" -m mlstack docs -C "$project"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,1000 \
  --screenshot="$repo/docs/images/churn-report.png" \
  "file://$project/build/docs/slos.html" 2>/dev/null
ls -l docs/images/
