#!/usr/bin/env bash
# Install mlstack with its runtime, test and framework extras into .venv, then run the
# whole test suite.
# Works on a fresh clone: nothing needs to be installed by hand. Extra args go to pytest.
# The engine tests also run real servers and tools from Debian's packages (redis-server,
# PostgreSQL, promtool), and the report's browser test headless Chromium; they are installed
# here when missing; their tests skip, saying why, where that is not possible (no apt-get,
# not root and no sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
  || missing+=(postgresql)
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo -n)
  echo "Installing ${missing[*]} from Debian's packages..." >&2
  { "${as_root[@]}" apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null; } \
    || echo "Could not install ${missing[*]}: the tests that need them will skip." >&2
fi

# the model frameworks too, so their tests run rather than skip
mlstack_venv ".[runtime,test,xgboost,lightgbm,pytorch,ray]"
exec .venv/bin/python -m pytest "$@"
