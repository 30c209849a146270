"""A project for the `mlstack docs` tests: the churn blueprint, compiled into build/, with a
deploy state fabricated in the real shape (mlstack.ops.local.state's dataclasses, saved by
their own save()): three versions (one verified and stopped, one rolled back after a missed
SLO, one serving), a history, each version's snapshot manifest, and the state files of the
generated flows (training.json, monitoring.json), in the runtime's shapes. Some recorded
strings are hostile HTML: the report must escape them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlstack.cli.main import main
from mlstack.codegen.contract import MANIFEST_FILE, MONITORING_FILE, TRAINING_FILE
from mlstack.ops.local.state import DeploymentState, RouterInfo, Version, VersionStatus

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
T0 = 1_790_000_000.0  # a fixed Unix time: the report shows state times, never the clock


def _rows(p50: float, p95: float, p99: float, ok99: bool, auc: float) -> list[dict]:
    return [
        {"slo": "latency p50", "target": "<= 25 ms", "measured": f"{p50} ms", "ok": True,
         "note": ""},
        {"slo": "latency p95", "target": "<= 60 ms", "measured": f"{p95} ms", "ok": True,
         "note": ""},
        {"slo": "latency p99", "target": "<= 100 ms", "measured": f"{p99} ms", "ok": ok99,
         "note": "" if ok99 else "p99 above the SLO"},
        {"slo": "throughput", "target": ">= 50 rps", "measured": "50 rps", "ok": True,
         "note": ""},
        {"slo": "error rate", "target": "<= 0.001", "measured": "0", "ok": True, "note": ""},
        {"slo": "quality auc", "target": ">= 0.8", "measured": f"{auc}", "ok": auc >= 0.8,
         "note": ""},
    ]


def _load(p50: float, p95: float, p99: float) -> dict:
    return {"requests": 250, "samples": 250, "errors": 0, "error_rate": 0.0, "p50_ms": p50,
            "p95_ms": p95, "p99_ms": p99, "throughput_rps": 50.0,
            "contention": {"cpus": 2, "load_per_cpu_before": 0.4, "load_per_cpu_after": 0.9}}


def fabricate_state(project: Path) -> DeploymentState:
    """The deploy state of three deploys, saved to <project>/.mlstack/deployments.json."""
    state_dir = project / ".mlstack"
    v1 = Version("v1", model_tag="churn:aaaa1111", spec_hash="a" * 64, training_key="d" * 64,
                 port=40001, status=VersionStatus.STOPPED, created_at=T0,
                 metrics={"accuracy": 0.8175, "auc": 0.873562, "f1": 0.834467},
                 slo_report={"load": _load(15.004, 17.294, 19.375),
                             "rows": _rows(15.004, 17.294, 19.375, True, 0.8736)})
    v2 = Version("v2", model_tag="churn:bbbb2222", spec_hash="b" * 64, training_key="d" * 64,
                 status=VersionStatus.ROLLED_BACK, created_at=T0 + 3600,
                 metrics={"accuracy": 0.79, "auc": 0.7712, "f1": 0.80},
                 slo_report={"load": _load(21.5, 70.25, 131.0),
                             "rows": _rows(21.5, 70.25, 131.0, False, 0.7712)},
                 failure=f"rollout: canary step 5%: p99 131 ms > 100 ms {HOSTILE}")
    v3 = Version("v3", model_tag="churn:cccc3333", spec_hash="c" * 64, training_key="e" * 64,
                 port=40003, pid=None, status=VersionStatus.SERVING, created_at=T0 + 7200,
                 metrics={"accuracy": 0.8212, "auc": 0.8811, "f1": 0.8401},
                 slo_report={"load": _load(13.449, 17.834, 21.541),
                             "rows": _rows(13.449, 17.834, 21.541, True, 0.8811)})
    state = DeploymentState(versions=[v1, v2, v3], current="v3", previous="v1",
                            router=RouterInfo(pid=None, port=3000), routes={"v3": 100})
    history = [
        (T0, "deploy-started", {"version": "v1", "reasons": ["nothing is deployed yet"]}),
        (T0 + 60, "deploy-succeeded", {"version": "v1", "model_tag": "churn:aaaa1111"}),
        (T0 + 3600, "deploy-started", {"version": "v2", "reasons": ["model churn: retrain"]}),
        (T0 + 3700, "deploy-failed", {"version": "v2", "stage": "rollout",
                                      "error": f"canary step 5%: breach {HOSTILE}"}),
        (T0 + 7200, "deploy-started", {"version": "v3", "reasons": ["model churn: retrain"]}),
        (T0 + 7300, "deploy-succeeded", {"version": "v3", "model_tag": "churn:cccc3333"}),
        (T0 + 7301, "stop", {"version": "v1", "ok": True}),
    ]
    state.history = [{"event": event, "at": at, **extra} for at, event, extra in history]
    state.save(state_dir / "deployments.json")
    return state


def fabricate_runtime_files(project: Path) -> None:
    runtime = project / ".mlstack" / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    training = {
        "status": "completed", "flow_run_id": "38188e58-bb55-4b7d-9854-0f52773ccebc",
        "model_tag": "churn:cccc3333", "promoted": False, "data_fingerprint": "e" * 64,
        "metrics": {"accuracy": 0.8212, "auc": 0.8811, "f1": 0.8401},
        "gates": [{"metric": "auc", "op": ">=", "threshold": 0.8, "value": 0.8811,
                   "passed": True}],
        "rows": {"sources": {"churn_labels": 2000, "customers": 12000}, "training_set": 2000,
                 "train": 1600, "test": 400}}
    monitoring = {
        "checked_at": "2026-09-21T13:00:00+00:00", "data_fingerprint": "f" * 64,
        "drift": {"method": "psi", "threshold": 0.2, "drifted": ["customer_profile__support_calls"],
                  "features": {
                      "customer_profile__support_calls": {"statistic": 0.31, "drifted": True,
                                                          "rows": 2000},
                      "customer_profile__tenure_months": {"statistic": 0.04, "drifted": False,
                                                          "rows": 2000}}},
        "freshness": {"slo_seconds": 86400, "stale": [], "sources": {
            "customers": {"newest": "2026-09-21T00:00:00+00:00", "age_seconds": 46800.0,
                          "fresh": True}}},
        "staleness": {"model_tag": "churn:cccc3333", "age_seconds": 7200.0,
                      "limit_seconds": 604800, "stale": False},
        "alerts": [f"feature customer_profile__support_calls drifted (psi above 0.2) {HOSTILE}"],
    }
    (runtime / TRAINING_FILE).write_text(json.dumps(training, indent=2, sort_keys=True))
    (runtime / MONITORING_FILE).write_text(json.dumps(monitoring, indent=2, sort_keys=True))


def make_project(root: Path, *, deployed: bool = True) -> Path:
    """An init'd churn project compiled into build/; with `deployed`, the fabricated state,
    v1's and v3's snapshots (v2's is gone) and the runtime state files."""
    project = root / "churn"
    assert main(["init", str(project), "--format", "json"]) == 0
    assert main(["compile", "-C", str(project), "--format", "json"]) == 0
    if deployed:
        fabricate_state(project)
        for version in ("v1", "v3"):
            snapshot = project / ".mlstack" / "versions" / version
            snapshot.mkdir(parents=True)
            shutil.copyfile(project / "build" / MANIFEST_FILE, snapshot / MANIFEST_FILE)
        fabricate_runtime_files(project)
    return project
