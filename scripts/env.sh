# Shared by the scripts: an isolated venv, and the libraries' telemetry switched off.
export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export BENTOML_DO_NOT_TRACK=true
export FEAST_USAGE=False
export ORT_DISABLE_TELEMETRY=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The torch the pytorch extra is tested with, and where its CPU build comes from.
MLSTACK_TORCH_VERSION="${MLSTACK_TORCH_VERSION:-2.13.0}"
MLSTACK_TORCH_INDEX="${MLSTACK_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"

MLSTACK_CONSTRAINTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/constraints.txt"

mlstack_venv() {  # mlstack_venv EXTRAS: create .venv if needed and install mlstack into it
  local spec="$1"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  local stamp=".venv/.mlstack-installed-$(cat pyproject.toml "$MLSTACK_CONSTRAINTS" | sha256sum | cut -c1-16)-${spec//[^a-z]/_}"
  if [ ! -f "$stamp" ]; then
    echo "Installing mlstack $spec into .venv (first run takes a minute or two)..." >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    if [[ "$spec" == *pytorch* ]]; then
      # the CPU build first: the pytorch extra's plain `torch` would be a CUDA build of GBs.
      # Only torch itself from the CPU index, asked once (a machine that cannot reach it, with
      # the CPU build in pip's find-links, goes on at once); its dependencies come with the
      # extras below, from the package index.
      .venv/bin/python -m pip install --progress-bar on --no-deps --retries 0 \
        "torch==$MLSTACK_TORCH_VERSION" --extra-index-url "$MLSTACK_TORCH_INDEX"
    fi
    # pip's own progress (one line per package, a bar per download), not minutes of silence
    # scripts/constraints.txt: floors that keep the resolver from backtracking for minutes
    .venv/bin/python -m pip install --progress-bar on -c "$MLSTACK_CONSTRAINTS" -e "$spec"
    touch "$stamp"
  fi
}
