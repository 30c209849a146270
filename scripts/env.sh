# Shared by the scripts: an isolated venv, and the libraries' telemetry switched off.
export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export BENTOML_DO_NOT_TRACK=true
export FEAST_USAGE=False
export ORT_DISABLE_TELEMETRY=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

mlstack_venv() {  # mlstack_venv EXTRAS: create .venv if needed and install mlstack into it
  local spec="$1"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  local stamp=".venv/.mlstack-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${spec//[^a-z]/_}"
  if [ ! -f "$stamp" ]; then
    echo "Installing mlstack $spec into .venv (first run takes a minute or two)..." >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    # pip's own progress (one line per package, a bar per download), not minutes of silence
    .venv/bin/python -m pip install --progress-bar on -e "$spec"
    touch "$stamp"
  fi
}
