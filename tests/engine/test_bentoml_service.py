"""The churn blueprint's generated BentoML service, run with the real BentoML (no mocks).

The fixture copies churn (its data moved to the present: online reads null a value older
than its view's TTL), compiles it and runs its generated Prefect training flow, which applies
and materializes the Feast repo and saves the trained model (and its ONNX export) to a
private BentoML model store. The service must then give, in process and over real HTTP from
`bentoml serve`, the same numbers as the native model on features computed here
independently from the source parquet file (latest row per customer, transform formula
written out by hand): within the ONNX parity tolerance, since ONNX Runtime serves it. It
refuses what it does not accept (400, 413) and its OpenAPI schema says so.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.contract import service_class
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import require_system
from mlstack.workspace.writer import write_tree
from tests.conftest import BLUEPRINTS, redate_project

pytestmark = pytest.mark.engine

CHURN = BLUEPRINTS / "churn"
PACKAGE = "churn_system"
SERVICE_MODULE = "service.service"
FLOWS_MODULE = "_mlstack_bentoml_test_flows"
VIEW_FIELDS = ("tenure_months", "monthly_charges", "support_calls", "is_monthly_contract")
TOLERANCE = 1e-9  # features, and a prediction of the native model
PREDICTION_TOLERANCE = 1e-5  # a prediction of ONNX Runtime (mlstack.runtime.scoring)
READY_TIMEOUT_S = 150


def _forget_modules() -> None:
    """Other tests may have imported another tree's package or service: start from none."""
    prefixes = (PACKAGE, "service")
    for name in [m for m in sys.modules
                 if any(m == p or m.startswith(p + ".") for p in prefixes)
                 or m in (f"{PACKAGE}_feature_repo", FLOWS_MODULE)]:
        del sys.modules[name]


def _bentoml_home() -> Path:
    """The model store folder this process uses (BentoML fixes it at first use)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get())


def _load_flows(out: Path):
    """The tree's generated pipelines/flows.py, imported under a private name."""
    spec = importlib.util.spec_from_file_location(FLOWS_MODULE, out / "pipelines" / "flows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[FLOWS_MODULE] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def churn(tmp_path_factory, prefect_api):
    """Compiled churn tree, trained by its generated Prefect flow (which applies and
    materializes the features and saves the model to a private BentoML store); yields the
    paths, the environment for subprocesses, the model tag and the service module."""
    out = tmp_path_factory.mktemp("churn_serve_out")
    state = tmp_path_factory.mktemp("churn_serve_state")
    home = tmp_path_factory.mktemp("churn_bentoml_home")
    project = tmp_path_factory.mktemp("churn_serve_project") / "churn"
    shutil.copytree(CHURN, project, ignore=shutil.ignore_patterns("build", ".mlstack"))
    redate_project(project)
    system, _ = require_system(project / "mlstack.yaml")
    options = CompileOptions(project_dir=Path(os.path.relpath(project, out)).as_posix())
    # with its manifest: the model's lineage and /info read the spec hash from it
    write_tree(compile_system(system, options), out, system=system)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLSTACK_STATE_DIR", str(state))
        patch.setenv("BENTOML_HOME", str(home))
        patch.syspath_prepend(str(out))
        _forget_modules()
        result = _load_flows(out).training_flow()
        model_tag = result["model_tag"]
        patch.setenv("MLSTACK_MODEL_TAG", model_tag)
        service = importlib.import_module(SERVICE_MODULE)
        env = {**os.environ, "BENTOML_HOME": str(_bentoml_home()),
               "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "1"}
        yield SimpleNamespace(out=out, system=system, model_tag=model_tag, env=env,
                              service=service, service_class=service_class(system),
                              project=project)
        importlib.import_module(f"{PACKAGE}.store").get_store.cache_clear()
        _forget_modules()


@pytest.fixture(scope="module")
def customers(churn) -> pd.DataFrame:
    return pd.read_parquet(churn.project / "data" / "customers.parquet")


def _chosen_ids(customers: pd.DataFrame, count: int = 24) -> list[int]:
    ids = np.sort(customers["customer_id"].unique())
    picks = np.random.default_rng(3).choice(ids[1:-1], size=count - 2, replace=False)
    return [int(i) for i in [ids[0], *picks, ids[-1]]]


def _expected_frame(customers: pd.DataFrame, ids: list[int], columns) -> pd.DataFrame:
    """The model input computed without mlstack: the latest source row of each customer and
    charges_per_tenure = monthly_charges / (tenure_months + 1)."""
    latest = customers.sort_values("event_timestamp").groupby("customer_id").last().loc[ids]
    frame = pd.DataFrame({f"customer_profile__{f}": latest[f].to_numpy() for f in VIEW_FIELDS})
    frame["charges_per_tenure"] = (latest["monthly_charges"]
                                   / (latest["tenure_months"] + 1)).to_numpy()
    return frame[list(columns)]


def _expected_scores(churn, customers, ids) -> np.ndarray:
    import bentoml

    model = bentoml.sklearn.load_model(churn.model_tag)
    columns = [f.column for f in churn.system.model.features]
    return model.predict_proba(_expected_frame(customers, ids, columns))[:, 1]


def test_generated_files_are_ruff_clean(churn):
    from ruff.__main__ import find_ruff_bin

    # from the tree's root, so ruff sees the shared package as first-party
    result = subprocess.run([find_ruff_bin(), "check", "--isolated", "--no-cache", "service"],
                            cwd=churn.out, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_predict_in_process_equals_the_model_on_source_rows(churn, customers):
    ids = _chosen_ids(customers)
    unknown = int(customers["customer_id"].max()) + 1000
    requested = [ids[5], unknown, *ids]  # unordered, a repeat and an unknown entity
    Row = churn.service.Row
    svc = getattr(churn.service, churn.service_class)()

    def predict(rows):
        # /predict answers with its JSON written (a ready response; BentoML sends it as is)
        answer = asyncio.run(svc.predict(rows))
        assert answer.media_type == "application/json"
        return json.loads(answer.body)

    got = predict([Row(customer_id=i) for i in requested])

    assert got[1] is None  # no online features: null, documented in the service
    expected = dict(zip(ids, _expected_scores(churn, customers, ids), strict=True))
    want = np.array([expected[i] for i in requested if i != unknown])
    have = np.array([v for i, v in zip(requested, got, strict=True) if i != unknown])
    assert svc.model.runtime == "onnx", svc.model.reason
    np.testing.assert_allclose(have, want, rtol=0, atol=PREDICTION_TOLERANCE)
    assert all(isinstance(v, float) for v in have)
    assert predict([]) == []
    assert predict([Row(customer_id=unknown)]) == [None]
    assert svc.predict_rows([{"customer_id": ids[0]}]) == predict([Row(customer_id=ids[0])])

    records = asyncio.run(svc.features([Row(customer_id=i) for i in requested]))
    columns = [f.column for f in churn.system.model.features]
    frame = pd.DataFrame([r for r in records if r["customer_id"] != unknown])
    assert list(frame["customer_id"]) == [i for i in requested if i != unknown]
    pd.testing.assert_frame_equal(
        frame[columns].astype(float),
        _expected_frame(customers, list(frame["customer_id"]), columns).astype(float),
        rtol=0, atol=TOLERANCE)
    assert records[1] == {"customer_id": unknown, **dict.fromkeys(columns)}

    info = svc.info()
    batching = churn.system.serving.batching
    assert info["model_tag"] == churn.model_tag
    assert info["spec_hash"] == churn.system.spec_hash
    assert info["model_metadata"]["spec_hash"] == churn.system.spec_hash
    parity = info["model_metadata"]["serving_runtime"]
    assert parity["runtime"] == "onnx" and parity["max_abs_diff"] <= PREDICTION_TOLERANCE
    assert info["runtime"]["runtime"] == "onnx"
    # the predictions above came through the direct read of the SQLite online store, checked
    # at start to answer as Feast's get_online_features
    assert info["online_read"]["path"] == "direct", info["online_read"]
    assert {k: info["batching"][k] for k in ("enabled", "max_batch_size", "max_latency_ms",
                                             "source")} == {
        "enabled": batching.enabled, "max_batch_size": batching.max_batch_size,
        "max_latency_ms": batching.max_latency_ms, "source": "compiled"}
    assert info["model_columns"] == columns
    assert info["max_request_rows"] == churn.system.serving.max_request_rows


def _metric(line: str) -> float:
    return float(line.rsplit(" ", 1)[1])


def _metric_sum(text: str, name: str) -> float:
    """The sum of a Prometheus series over its labels."""
    return sum(_metric(line) for line in text.splitlines() if line.startswith(name + "{"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers by process group (it was started in its own)."""
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_ready(client, proc, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "bentoml serve exited:\n" + log.read_text()[-4000:]
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail("service not ready in time:\n" + log.read_text()[-4000:])


def test_http_server_serves_the_same_numbers_and_stops(churn, customers, tmp_path):
    import httpx

    port = _free_port()
    log = tmp_path / "serve.log"
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [bentoml_cli, "serve", f"{SERVICE_MODULE}:{churn.service_class}",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=churn.out, env=churn.env, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _wait_ready(client, proc, log)
            assert client.get("/healthz").status_code == 200
            assert client.get("/livez").status_code == 200

            ids = _chosen_ids(customers)
            unknown = int(customers["customer_id"].max()) + 1000
            expected = dict(zip(ids, _expected_scores(churn, customers, ids), strict=True))
            response = client.post("/predict",
                                   json={"rows": [{"customer_id": i} for i in [*ids, unknown]]})
            assert response.status_code == 200, response.text
            got = response.json()
            assert got[-1] is None
            np.testing.assert_allclose(got[:-1], [expected[i] for i in ids], rtol=0,
                                       atol=PREDICTION_TOLERANCE)

            shed = []

            def one(customer_id: int) -> float:
                # the batcher answers 503 for a request still queued max_latency_ms after it
                # arrived (load shedding); a client retries those
                for _ in range(20):
                    r = client.post("/predict", json={"rows": [{"customer_id": customer_id}]})
                    if r.status_code != 503:
                        break
                    shed.append(customer_id)
                    time.sleep(0.05)
                assert r.status_code == 200, r.text
                return r.json()[0]

            # one at a time first: BentoML's batcher measures its cost on its first ~12 calls
            sequential = [one(i) for i in ids[:12]]
            np.testing.assert_allclose(sequential, [expected[i] for i in ids[:12]], rtol=0,
                                       atol=PREDICTION_TOLERANCE)
            assert not shed  # one request at a time is never shed
            with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent: batched together
                concurrent = list(pool.map(one, [*ids, *ids]))
            np.testing.assert_allclose(concurrent, [expected[i] for i in [*ids, *ids]],
                                       rtol=0, atol=PREDICTION_TOLERANCE)

            features = client.post("/features", json={"rows": [{"customer_id": ids[0]}]})
            assert features.status_code == 200, features.text
            columns = [f.column for f in churn.system.model.features]
            np.testing.assert_allclose(
                [features.json()[0][c] for c in columns],
                _expected_frame(customers, [ids[0]], columns).iloc[0].to_numpy(dtype=float),
                rtol=0, atol=TOLERANCE)

            info = client.post("/info", json={})
            assert info.status_code == 200, info.text
            assert info.json()["model_tag"] == churn.model_tag

            bad = client.post("/predict", json={"rows": [{"customer_id": "not a number"}]})
            assert bad.status_code == 400
            extra = client.post("/predict", json={"rows": [{"customer_id": 1, "x": 2}]})
            assert extra.status_code == 400
            # typed exactly: no "1001" or true for an int64 id, no id beyond int64
            for wrong in ("1001", True, 1001.0, 2**63, -(2**63) - 1):
                r = client.post("/predict", json={"rows": [{"customer_id": wrong}]})
                assert r.status_code == 400, (wrong, r.status_code, r.text)
            assert client.post("/predict", json={"rows": [{"customer_id": 2**63 - 1}]}
                               ).json() == [None]
            unknown_key = client.post("/predict", json={"rows": [], "extra": 1})
            assert unknown_key.status_code == 400, unknown_key.text
            assert client.post("/info", json={"verbose": True}).status_code == 400
            limit = churn.system.serving.max_request_rows
            many = client.post("/predict", json={"rows": [{"customer_id": ids[0]}] * (limit + 1)})
            assert many.status_code == 413, many.text
            assert len(client.post("/predict", json={"rows": [{"customer_id": ids[0]}] * limit}
                                   ).json()) == limit
            schema = client.get("/docs.json").json()["components"]["schemas"]
            rows = next(v for k, v in schema.items() if v.get("properties", {}).get("rows"))
            assert rows.get("additionalProperties") is False
            assert rows["properties"]["rows"]["maxItems"] == limit
            row = schema["Row"]
            assert row["additionalProperties"] is False
            assert row["properties"]["customer_id"] == {
                "maximum": 2**63 - 1, "minimum": -(2**63), "title": "Customer Id",
                "type": "integer"}

            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            predict_counts = [
                line for line in metrics.text.splitlines()
                if line.startswith("bentoml_service_request_total")
                and 'endpoint="/predict"' in line and 'http_response_code="200"' in line]
            assert predict_counts, metrics.text[:2000]
            assert sum(_metric(line) for line in predict_counts) >= 13 + 2 * len(ids)
            # the answering worker's own batcher (one per worker process); whether concurrent
            # requests share a call is tested in process (tests/runtime/test_batching.py)
            stats = client.post("/info", json={}).json()["batching"]["stats"]
            assert 0 < stats["calls"] <= stats["rows"] and stats["shed"] == 0
            _check_prediction_log_and_feedback(client, churn, ids, expected)
    finally:
        _stop(proc)
    assert proc.poll() is not None
    assert not _group_alive(proc.pid)


def test_bento_builds_offline(churn):
    import bentoml

    env = {**churn.env, "PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}  # no package index
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    started = time.perf_counter()
    result = subprocess.run(
        [bentoml_cli, "build", "-f", "service/bentofile.yaml", "."], cwd=churn.out, env=env,
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert elapsed < 120

    bento = bentoml.bentos.get(f"{churn.system.name}:latest")
    assert bento.info.labels == {"system": churn.system.name}
    src = Path(bento.path) / "src"
    for path in ("service/service.py", f"{PACKAGE}/features.py", f"{PACKAGE}/transforms.py",
                 f"{PACKAGE}/store.py", "feature_repo/feature_store.yaml"):
        assert (src / path).is_file(), path
    assert (src / "service/service.py").read_bytes() == (
        churn.out / "service/service.py").read_bytes()
    manifest = (Path(bento.path) / "bento.yaml").read_text()
    assert churn.model_tag in manifest  # the model is packed with the bento


def test_multiclass_without_batching_renders_a_plain_api(tmp_path):
    """A multiclass spec with batching off: predict returns classes and is not batchable
    (BentoML refuses max_batch_size 1, so no batching means batchable=False)."""
    project = tmp_path / "project"
    shutil.copytree(CHURN, project, ignore=shutil.ignore_patterns("build", ".mlstack"))
    spec = yaml.safe_load((project / "mlstack.yaml").read_text())
    spec["model"]["task"] = "multiclass_classification"
    spec["evaluation"] = {"metrics": ["accuracy"], "gates": {}}
    spec["slos"].pop("quality", None)
    spec["serving"]["batching"] = {"mode": "off"}
    (project / "mlstack.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    system, _ = require_system(project / "mlstack.yaml")
    out = project / "build"
    for path, content in compile_system(system, CompileOptions(project_dir="..")).items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(content)
    source = (out / "service" / "service.py").read_text()
    assert "async def predict(self, rows: list[Row]) -> list[int | None]:" in source
    assert "predict_proba" not in source

    probe = ("import json, service.service as m; api = m.ChurnService.apis['predict']; "
             "print(json.dumps({'batchable': api.batchable, 'batching': m.BATCHING}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(out)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "batchable": False,
        "batching": {"enabled": False, "max_batch_size": 1, "max_latency_ms": 1,
                     "source": "compiled"}}


def _check_prediction_log_and_feedback(client, churn, ids, expected) -> None:
    """monitoring.prediction_log (on by default locally), over the real server: an answer
    carries X-Request-Id; the log (parquet under the state folder, written by the worker's
    writer thread) holds its rows with the keys, the model input as served and the output;
    POST /feedback stores an outcome once (201), takes it again (200), keeps the first
    against another (409), answers 404 for an id no answer had, and refuses garbage with
    4xx; the stored outcome joins the log."""
    from mlstack.runtime.feedback import joined
    from mlstack.runtime.prediction_log import read_log, request_time

    folder = Path(churn.env["MLSTACK_STATE_DIR"]) / "prediction_log"
    unknown = 10**12
    answer = client.post("/predict", json={"rows": [{"customer_id": ids[0]},
                                                    {"customer_id": unknown}]})
    request_id = answer.headers["x-request-id"]
    assert request_time(request_id) is not None, request_id
    deadline = time.monotonic() + 60
    while (logged := read_log(folder)).empty or request_id not in set(logged["request_id"]):
        assert time.monotonic() < deadline, "the answer was not logged within 60 s"
        time.sleep(0.5)
    rows = logged[logged["request_id"] == request_id].sort_values("row")
    assert rows["customer_id"].tolist() == [ids[0], unknown]
    assert rows["endpoint"].tolist() == ["predict"] * 2
    assert rows["model_tag"].iloc[0] == churn.model_tag
    assert abs(rows["output"].iloc[0] - expected[ids[0]]) <= PREDICTION_TOLERANCE
    assert pd.isna(rows["output"].iloc[1])
    served = client.post("/features", json={"rows": [{"customer_id": ids[0]}]}).json()[0]
    for column in (f.column for f in churn.system.model.features):
        assert abs(rows[f"feature.{column}"].iloc[0] - served[column]) <= TOLERANCE, column
    assert pd.isna(rows[f"feature.{churn.system.model.features[0].column}"].iloc[1])

    def feedback(body):
        return client.post("/feedback", json=body)

    assert feedback({"request_id": request_id, "outcome": 1}).status_code == 201
    again = feedback({"request_id": request_id, "outcome": 1.0})
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
    conflict = feedback({"request_id": request_id, "outcome": 0})
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["detail"][0]["type"] == "conflict"
    old = f"{int((time.time() - 3600) * 1000):012x}7000{'8' + '0' * 15}"
    assert request_time(old) is not None
    assert feedback({"request_id": old, "outcome": 1}).status_code == 404
    for garbage in ({"request_id": "not-an-id", "outcome": 1},
                    {"request_id": request_id},
                    {"request_id": request_id, "outcome": 1, "extra": 2},
                    {"request_id": request_id, "outcome": [1]},
                    {"request_id": request_id, "outcome": "x" * 257}):
        refused = feedback(garbage)
        assert refused.status_code == 400, (garbage, refused.status_code, refused.text)
        assert set(refused.json()) == {"error", "detail"}
    huge = client.post("/feedback", content=b'{"request_id": "' + b"a" * (10 << 20) + b'"}',
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413, huge.text[:200]
    assert client.post("/feedback", content=b"{nope", headers={
        "content-type": "application/json"}).status_code == 400
    outcomes = joined(folder)
    mine = outcomes[outcomes["request_id"] == request_id].sort_values("row")
    assert mine["outcome"].iloc[0] == 1.0 and pd.isna(mine["outcome"].iloc[1])
    document = client.get("/docs.json").json()["paths"]["/feedback"]["post"]["responses"]
    assert {"200", "201", "404", "409", "413"} <= set(document)
    log_stats = client.post("/info", json={}).json()["prediction_log"]
    assert log_stats["dropped"] == 0 and log_stats["write_errors"] == 0
    dropped = [line for line in client.get("/metrics").text.splitlines()
               if line.startswith("mlstack_prediction_log_dropped_rows_total{")]
    assert dropped and all(_metric(line) == 0 for line in dropped), dropped
