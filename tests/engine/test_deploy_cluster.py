"""`mlstack deploy` on kubernetes/aws targets, run as a user runs it (the CLI in a child
process): compile, synth in the cached isolated environment, then terraform init + plan
offline against the local provider mirror (the CLI config and fake credentials of the aws
infra tests; provider skip_* settings through --tf-override).

Not exercised: applying (`--auto-approve`, or 'yes' at the prompt) to real AWS: no network
and no account here. What is shown instead is that nothing is applied without approval: no
state is written by a dry run, by a run with no terminal to confirm in and no
--auto-approve, nor by one declined at the terminal prompt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack.codegen.backends.infra_costs import estimate_monthly_cost, infra_resources
from mlstack.diagnostics.errors import UsageError
from mlstack.frontend.analysis import require_system
from mlstack.ops.cluster.deploy import ClusterOptions, required_variables, stack_variables
from mlstack.ops.cluster.terraform import mirror_cli_config
from tests.conftest import BLUEPRINTS
from tests.engine.infra_fixtures import (
    blueprints_of,
    infra_cache,  # noqa: F401  (fixture)
    infra_envs,  # noqa: F401  (fixture)
)
from tests.engine.test_infra_aws import MIRROR, OFFLINE, SUBNETS

pytestmark = [pytest.mark.engine, pytest.mark.slow]
FRAUD = BLUEPRINTS / "fraud-gpu"


def mlstack(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlstack", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def offline_terraform(infra_envs, tmp_path_factory):  # noqa: F811
    """Environment of an offline terraform run (mirror CLI config, fake credentials) and the
    --tf-override file with the aws provider's skip_* settings."""
    if shutil.which("terraform") is None and shutil.which("tofu") is None:
        pytest.skip("neither terraform nor tofu is installed")
    if not any(MIRROR.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*")):
        pytest.skip(f"no hashicorp/aws provider in the local mirror {MIRROR}")
    tmp = tmp_path_factory.mktemp("deploy_terraform")
    override = tmp / "offline.tf.json"
    override.write_text(json.dumps(OFFLINE))
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(mirror_cli_config(MIRROR, tmp / "cli.tfrc")),
           "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE", "AWS_SECRET_ACCESS_KEY": "fake",
           "AWS_EC2_METADATA_DISABLED": "true", "TF_PLUGIN_CACHE_DIR": "",
           "CHECKPOINT_DISABLE": "1", "MLSTACK_HOME": str(tmp / "home")}
    env = {k: v for k, v in env.items() if not k.startswith("TF_VAR_")}
    return env, override


@pytest.fixture(scope="module")
def fraud_dry_run(offline_terraform, tmp_path_factory):
    env, override = offline_terraform
    work = tmp_path_factory.mktemp("deploy")
    shutil.copytree(FRAUD, work / "fraud-gpu")
    done = mlstack("deploy", "fraud-gpu", "--dry-run", "--tf-override", str(override),
                   "--var", "subnet_ids=" + ",".join(SUBNETS), cwd=work, env=env)
    return work / "fraud-gpu", done


def test_dry_run_synthesizes_and_plans_every_resource_of_the_ir(fraud_dry_run):
    project, done = fraud_dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    system = require_system(project / "mlstack.yaml")[0]
    expected = infra_resources(system)
    assert f"Plan: {len(expected)} to add, 0 to change, 0 to destroy" in done.stdout
    listed = [line.strip()[2:] for line in done.stdout.splitlines()
              if line.startswith("  + ")]
    assert listed == sorted(f"{t}.{n}" for t, n in expected)
    assert "Dry run: nothing applied" in done.stdout
    cost = estimate_monthly_cost(system)
    assert f"${cost.monthly_max_usd:,.2f} a month (estimate, price table " in done.stdout
    # progress went to stderr, stage by stage
    for title in ("compile and write", "synth infrastructure (cdktn)", "terraform init + plan"):
        assert title in done.stderr
    stack = project / "build" / "infra" / "cdktf.out" / "stacks" / f"{system.name}-aws"
    assert (stack / "cdk.tf.json").is_file() and (stack / "tfplan").is_file()
    assert not list((project / ".mlstack" / "terraform").glob("*.tfstate"))  # nothing applied


def test_variables_are_checked_against_the_synthesized_stack(fraud_dry_run):
    project, _ = fraud_dry_run
    [stack_json] = (project / "build" / "infra" / "cdktf.out" / "stacks").glob("*/cdk.tf.json")
    stack = json.loads(stack_json.read_text())
    assert list(required_variables(stack)) == ["subnet_ids"]
    with pytest.raises(UsageError, match=r"needs values for 1 variable\(s\): subnet_ids"):
        stack_variables(stack, ClusterOptions(), environ={})
    assert stack_variables(stack, ClusterOptions(), environ={"TF_VAR_subnet_ids": "[]"}) == {}
    given = ClusterOptions(variables=(("subnet_ids", "subnet-a, subnet-b"),))
    assert stack_variables(stack, given, environ={}) == {"subnet_ids": ["subnet-a", "subnet-b"]}
    as_json = ClusterOptions(variables=(("subnet_ids", '["subnet-a"]'),))
    assert stack_variables(stack, as_json, environ={}) == {"subnet_ids": '["subnet-a"]'}
    with pytest.raises(UsageError, match="declares no variable vpc_idd"):
        stack_variables(stack, ClusterOptions(variables=(("vpc_idd", "x"),)), environ={})


def test_without_approval_nothing_is_applied(fraud_dry_run, offline_terraform):
    """No --dry-run, no --auto-approve and no terminal (stdin is /dev/null): planned, not
    applied, exit 1."""
    project, _ = fraud_dry_run
    env, override = offline_terraform
    done = mlstack("deploy", ".", "--tf-override", str(override), "--var",
                   f"subnet_ids={json.dumps(SUBNETS)}", cwd=project, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Plan: " in done.stdout and "Not applied: no terminal to confirm in" in done.stdout
    assert "terraform apply" not in done.stderr
    assert not list((project / ".mlstack" / "terraform").glob("*.tfstate"))


def test_declined_in_a_terminal_nothing_is_applied(fraud_dry_run, offline_terraform):
    """stdin is a terminal (a pty): the plan is shown, the question asked, 'no' answered."""
    import pty

    project, _ = fraud_dry_run
    env, override = offline_terraform
    main_fd, terminal = pty.openpty()
    try:
        os.write(main_fd, b"no\n")  # waits in the terminal's buffer until read
        done = subprocess.run(
            [sys.executable, "-m", "mlstack", "deploy", ".", "--tf-override", str(override),
             "--var", "subnet_ids=" + ",".join(SUBNETS)], cwd=project, env=env,
            stdin=terminal, capture_output=True, text=True, timeout=900)
    finally:
        os.close(terminal)
        os.close(main_fd)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Apply this plan? Only 'yes' applies it:" in done.stderr
    assert "Not applied: declined." in done.stdout
    assert "terraform apply" not in done.stderr
    assert not list((project / ".mlstack" / "terraform").glob("*.tfstate"))


@pytest.mark.skipif(not blueprints_of("kubernetes"), reason="no kubernetes blueprint")
def test_without_terraform_deploy_stops_after_synth(infra_envs, tmp_path):  # noqa: F811
    name = blueprints_of("kubernetes")[0]
    shutil.copytree(BLUEPRINTS / name, tmp_path / name)
    bin_dir = tmp_path / "bin"  # node (cdktn needs it), no terraform or tofu
    bin_dir.mkdir()
    os.symlink(shutil.which("node"), bin_dir / "node")
    env = {**os.environ, "PATH": str(bin_dir)}
    done = mlstack("deploy", name, "--dry-run", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "neither terraform nor tofu is on PATH" in done.stderr
    system = require_system(tmp_path / name / "mlstack.yaml")[0]
    stack = (tmp_path / name / "build" / "infra" / "cdktf.out" / "stacks"
             / f"{system.name}-kubernetes" / "cdk.tf.json")
    assert stack.is_file() and str(stack.parent) in done.stderr  # the hint: where to run it
    assert done.stdout == ""


def test_cluster_options_are_refused_on_a_local_target(tmp_path):
    shutil.copytree(BLUEPRINTS / "churn", tmp_path / "churn")
    done = mlstack("deploy", "churn", "--dry-run", cwd=tmp_path,
                   env={**os.environ, "MLSTACK_HOME": str(tmp_path / "home")})
    assert done.returncode == 2
    assert "are for kubernetes and aws targets" in done.stderr
