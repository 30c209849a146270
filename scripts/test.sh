#!/usr/bin/env bash
# Install mlstack with its runtime, test and framework extras into .venv, then run the
# whole test suite. Extra args go to pytest.
# Every test runs: a skipped test fails the run unless tests/skip_allowlist.toml allows it,
# with a reason (tests/skip_policy.py). So the tools the tests run are checked first, and the
# script stops at once, naming each one missing and how to get it:
# - redis-server, PostgreSQL (initdb, pg_ctl), promtool, amtool, prometheus-pushgateway,
#   chromium (the report's browser test), zsh (the completion script's syntax), node (cdktn
#   synthesizes the kubernetes and aws stacks): Debian's packages, installed here when
#   missing (apt-get, as root or sudo -n);
# - terraform or tofu (OpenTofu, installed here where apt-get knows the package), and the
#   hashicorp/aws provider in a local mirror for the offline plans (MLSTACK_TF_PROVIDER_MIRROR,
#   default /opt/tf-plugins): Debian has neither, so they are installed by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

mirror="${MLSTACK_TF_PROVIDER_MIRROR:-/opt/tf-plugins}"
aws_version="$(sed -n 's/^AWS_PROVIDER_VERSION = "\([^"]*\)".*/\1/p' \
  mlstack/codegen/backends/infra_model.py)"

missing_packages() {  # the Debian package of each tool that is not here
  command -v redis-server >/dev/null || echo redis-server
  command -v pg_ctl >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null \
    || echo postgresql
  command -v promtool >/dev/null || echo prometheus
  command -v amtool >/dev/null || echo prometheus-alertmanager
  command -v prometheus-pushgateway >/dev/null || echo prometheus-pushgateway
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || echo chromium
  command -v zsh >/dev/null || echo zsh
  command -v node >/dev/null || echo nodejs
  command -v terraform >/dev/null || command -v tofu >/dev/null || echo tofu
}

how_to_get() {  # how_to_get PACKAGE: what is missing, and where it comes from
  case "$1" in
    postgresql) echo "PostgreSQL's initdb and pg_ctl: Debian's postgresql package" ;;
    prometheus) echo "promtool: Debian's prometheus package" ;;
    prometheus-alertmanager) echo "amtool: Debian's prometheus-alertmanager package" ;;
    prometheus-pushgateway) echo "prometheus-pushgateway: Debian's prometheus-pushgateway" \
      "package" ;;
    nodejs) echo "node: Debian's nodejs package, or Node.js 20+ from https://nodejs.org" ;;
    tofu) echo "terraform or tofu: neither is on PATH (Debian packages neither; apt-get has" \
      "tofu only from OpenTofu's own repository): install Terraform" \
      "(https://developer.hashicorp.com/terraform/install) or OpenTofu" \
      "(https://opentofu.org/docs/intro/install/)" ;;
    *) echo "$1: Debian's $1 package" ;;
  esac
}

mapfile -t missing < <(missing_packages)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null \
    && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo -n)
  "${as_root[@]}" apt-get update -qq || true
  installable=()
  for package in "${missing[@]}"; do
    apt-cache show "$package" >/dev/null 2>&1 && installable+=("$package")
  done
  if [ ${#installable[@]} -gt 0 ]; then
    echo "Installing ${installable[*]} from Debian's packages..." >&2
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq \
      --no-install-recommends "${installable[@]}" >/dev/null || true
  fi
  mapfile -t missing < <(missing_packages)
fi

problems=()
for package in "${missing[@]}"; do
  problems+=("$(how_to_get "$package")")
done
if [ "$(id -u)" = 0 ] && ! getent passwd postgres >/dev/null; then
  problems+=("a postgres user: PostgreSQL refuses to run as root, and the tests run it as \
postgres (Debian's postgresql package creates the user)")
fi
if ! compgen -G "$mirror/registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*" \
    >/dev/null; then
  problems+=("the hashicorp/aws provider in the mirror $mirror (MLSTACK_TF_PROVIDER_MIRROR): \
unzip terraform-provider-aws_${aws_version}_linux_amd64.zip from \
https://releases.hashicorp.com/terraform-provider-aws/$aws_version/ into \
$mirror/registry.terraform.io/hashicorp/aws/$aws_version/linux_amd64/")
fi
if [ ${#problems[@]} -gt 0 ]; then
  echo "The tests need tools that are not here (a test must not skip for want of one):" >&2
  for problem in "${problems[@]}"; do
    echo "  - $problem" >&2
  done
  exit 1
fi

# the model frameworks too, so their tests run rather than skip
mlstack_venv ".[runtime,test,xgboost,lightgbm,pytorch,ray]"
# Two workers (pytest-xdist) share the suite by tests/xdist_plan.py: a file stays on one
# worker, the Ray files share one, the longest start first. The engine tests mostly wait on
# schedules, alert rules and rollouts, so two cores finish well under the serial time.
# MLSTACK_TEST_WORKERS=0 runs it serially.
workers="${MLSTACK_TEST_WORKERS:-2}"
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
