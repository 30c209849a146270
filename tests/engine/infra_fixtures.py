"""Shared set-up of the infra tests: one cache for the isolated environments (cdktn for aws,
cdktn for kubernetes, checkov), created concurrently once per session and reused across runs
on a developer machine; compile + synth of each non-local blueprint (and variants) once.

The cache is $MLSTACK_TEST_CACHE_DIR, else <repo>/.pytest_cache/mlstack (gitignored); CI runs
on a clean checkout, so there it is built on first use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from mlstack.codegen.backends.infra import requirements
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import require_system
from mlstack.ops.cluster.infra_env import ensure_env, synth
from tests.conftest import BLUEPRINTS, REPO

CHECKOV = "checkov==3.3.30"
TIMINGS: dict[str, float] = {}


def infra_test_cache_dir() -> Path:
    return Path(os.environ.get("MLSTACK_TEST_CACHE_DIR") or REPO / ".pytest_cache" / "mlstack")


def non_local_blueprints() -> list[str]:
    names = []
    for spec in sorted(BLUEPRINTS.glob("*/mlstack.yaml")):
        kind = (yaml.safe_load(spec.read_text()).get("target") or {}).get("kind", "local")
        if kind != "local":
            names.append(spec.parent.name)
    return names


def blueprints_of(kind: str) -> list[str]:
    return [n for n in non_local_blueprints()
            if yaml.safe_load((BLUEPRINTS / n / "mlstack.yaml").read_text())["target"]["kind"]
            == kind]


@pytest.fixture(scope="session")
def infra_cache():
    cache = infra_test_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("MLSTACK_CACHE_DIR")
    os.environ["MLSTACK_CACHE_DIR"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("MLSTACK_CACHE_DIR", None)
    else:
        os.environ["MLSTACK_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def infra_envs(infra_cache):
    """{name: InfraEnv} for 'aws', 'kubernetes' and 'checkov', built in parallel."""
    reqs = infra_cache / "requirements"
    reqs.mkdir(exist_ok=True)
    files = {}
    for name, lines in (("aws", requirements("aws")), ("kubernetes", requirements("kubernetes")),
                        ("checkov", (CHECKOV,))):
        files[name] = reqs / f"{name}.txt"
        files[name].write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(ensure_env, path) for name, path in files.items()}
        envs = {name: future.result() for name, future in futures.items()}
    TIMINGS["envs (parallel, wall)"] = time.monotonic() - started
    for name, env in envs.items():
        TIMINGS[f"env {name} ({'created' if env.created else 'reused'})"] = env.seconds
    return envs


def variant_spec(tmp: Path, blueprint: str, name: str, target: dict) -> Path:
    """A copy of a blueprint with its target changed (and its own name)."""
    folder = tmp / name
    shutil.copytree(BLUEPRINTS / blueprint, folder)
    spec = folder / "mlstack.yaml"
    data = yaml.safe_load(spec.read_text())
    data["metadata"]["name"] = name
    data["target"] = {**data["target"], **target}
    data["target"].pop("namespace", None)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec


class Synthesized:
    def __init__(self, spec: Path, out: Path):
        self.system = require_system(spec)[0]
        self.tree = compile_system(self.system)
        for path, content in self.tree.items():
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(content)
        self.out = out
        started = time.monotonic()
        self.result = synth(out)
        TIMINGS[f"synth {self.system.name}"] = time.monotonic() - started
        self.json = json.loads(self.result.path.read_text())

    def resources(self, type_: str | None = None) -> dict:
        res = self.json.get("resource", {})
        return res.get(type_, {}) if type_ else res

    def resource_pairs(self) -> list[tuple[str, str]]:
        return sorted((t, n) for t, named in self.resources().items() for n in named)


def run_checkov(checkov_env, stack_json: Path) -> dict:
    import subprocess

    started = time.monotonic()
    done = subprocess.run(
        [str(checkov_env.path / "bin" / "checkov"), "--framework", "terraform_json",
         "--skip-download", "--quiet", "-o", "json", "-f", str(stack_json)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""})
    TIMINGS[f"checkov {stack_json.parent.name}"] = time.monotonic() - started
    assert done.stdout.strip(), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


SKIP_RE = re.compile(r"checkov:skip=([A-Z0-9_]+):(.+)")


def unaccepted_failures(report: dict) -> list[str]:
    """Failed checks whose resource does not carry `checkov:skip=<id>:<reason>` in its own
    JSON (checkov's terraform_json runner reports such in-file skips as failures, so the
    test reads them from the failing resource's code block)."""
    bad = []
    for failed in report.get("results", {}).get("failed_checks", []):
        accepted = {}
        for _line, text in failed.get("code_block") or []:
            match = SKIP_RE.search(text)
            if match:
                accepted[match.group(1)] = match.group(2).strip().rstrip('",')
        if not accepted.get(failed["check_id"]):
            bad.append(f"{failed['check_id']} {failed['resource']} lines "
                       f"{failed['file_line_range']}: {failed['check_name']}")
    return bad
