"""The generated service's OpenAPI tells the truth: schemathesis, all checks, finds nothing.

Serves the churn blueprint's generated service (trained by tests/engine/test_bentoml_service.py's
fixture, not a full deploy) with the real `bentoml serve`, then runs the pinned schemathesis
CLI against its /docs.json: every check, a fixed seed, a bounded number of examples per
operation. The one setting beside the defaults: a negative example is rejected by 413 too,
since the service documents that more rows than max_request_rows get 413 before the rows'
schema is checked (mlstack.runtime.http_contract). Also checks the error shape and the
refusals by hand, so a failure here names the broken promise.

Each test runs twice: against the service, and through the local router in front of it
(mlstack.ops.local.router, as `mlstack deploy` puts it), which must stay inside the same
contract: the same refusals, headers and OpenAPI, and the same zero failures. One service
start serves both. Schemathesis runs against the other local blueprints' services too, each
trained here the same way (its generated training flow, in process; no deploy): search-ranking
(/rank, a small LightGBM ranker; directly and through the router), churn-mlp (the PyTorch MLP
served through ONNX) and fraud-gpu's local variant (XGBoost, gpu: preferred, which falls back
to the CPU; the target block test_deploy_frameworks.py deploys it with). The router's own
refusals of what it cannot forward (400, 408, 414, 431, 505) are answered in the error shape
and documented by every operation of the service's OpenAPI.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.contract import package_name, service_class
from mlstack.codegen.generate import compile_system
from mlstack.frontend.analysis import require_system
from mlstack.ops.local import procs
from mlstack.ops.local.router import write_table
from mlstack.workspace.writer import write_tree
from tests.conftest import BLUEPRINTS, redate_project
from tests.engine.deploy_support import local_target
from tests.engine.test_bentoml_service import (  # the fixture and the server's helpers
    FLOWS_MODULE,
    SERVICE_MODULE,
    _bentoml_home,
    _free_port,
    _group_alive,
    _load_flows,
    _stop,
    _wait_ready,
    churn,
)
from tests.engine.test_deploy_frameworks import LOCAL_TARGET
from tests.test_router import assert_error_shape, raw_answer

pytestmark = [pytest.mark.engine, pytest.mark.slow]

__all__ = ["churn"]  # a fixture, imported to be shared

SEED = 20250
MAX_EXAMPLES = 50
# schemathesis's default statuses for rejected negative data, and 413 (documented first)
NEGATIVE_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "5xx"]
ERROR_KEYS = {"error", "detail"}


def _trained(tmp_path_factory, blueprint: str, prepare=None) -> Iterator[SimpleNamespace]:
    """A blueprint compiled and trained by its generated flow, as `churn` is (its own package,
    so it sits beside churn's; its model in this process's BentoML store). `prepare(spec)`
    edits the copied spec first (a cluster blueprint's local target)."""
    slug = blueprint.replace("-", "_")
    out = tmp_path_factory.mktemp(f"{slug}_serve_out")
    project = tmp_path_factory.mktemp(f"{slug}_serve_project") / blueprint
    shutil.copytree(BLUEPRINTS / blueprint, project,
                    ignore=shutil.ignore_patterns("build", ".mlstack"))
    if prepare is not None:
        prepare(project / "mlstack.yaml")
    redate_project(project)
    system, _ = require_system(project / "mlstack.yaml")
    options = CompileOptions(project_dir=Path(os.path.relpath(project, out)).as_posix())
    write_tree(compile_system(system, options), out, system=system)
    package = package_name(system)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLSTACK_STATE_DIR", str(tmp_path_factory.mktemp(f"{slug}_serve_state")))
        # where BentoML has not fixed its store yet (churn's fixture did not run first)
        patch.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp(f"{slug}_bentoml_home")))
        patch.setenv("CUDA_VISIBLE_DEVICES", "")  # gpu: preferred trains on the CPU here
        patch.syspath_prepend(str(out))
        patch.delitem(sys.modules, FLOWS_MODULE, raising=False)
        model_tag = _load_flows(out).training_flow()["model_tag"]
        patch.setenv("MLSTACK_MODEL_TAG", model_tag)
        env = {**os.environ, "BENTOML_HOME": str(_bentoml_home()),
               "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "1"}
        yield SimpleNamespace(out=out, env=env, service_class=service_class(system))
        importlib.import_module(f"{package}.store").get_store.cache_clear()
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]
        sys.modules.pop(FLOWS_MODULE, None)


@pytest.fixture(scope="module")
def ranking(tmp_path_factory, prefect_api):
    """search-ranking, trained (a small LightGBM ranker)."""
    yield from _trained(tmp_path_factory, "search-ranking")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory, prefect_api):
    """churn-mlp as `mlstack init` ships it, trained (the PyTorch MLP; ONNX serves it)."""
    yield from _trained(tmp_path_factory, "churn-mlp")


@pytest.fixture(scope="module")
def fraud(tmp_path_factory, prefect_api):
    """fraud-gpu's local variant (its target block only; as test_deploy_frameworks deploys
    it), trained (XGBoost on the CPU fallback)."""
    yield from _trained(tmp_path_factory, "fraud-gpu",
                        lambda spec: local_target(spec, LOCAL_TARGET["fraud-gpu"]))


def _serve(tree: SimpleNamespace, log: Path) -> Iterator[str]:
    """`bentoml serve` of a trained tree's service on a free port; its base URL. Stopped
    by PID."""
    import httpx

    port = _free_port()
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [bentoml_cli, "serve", f"{SERVICE_MODULE}:{tree.service_class}",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=tree.out, env=tree.env, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            _wait_ready(client, proc, log)
        yield base
    finally:
        _stop(proc)
    assert not _group_alive(proc.pid)


@pytest.fixture(scope="module")
def service(churn, tmp_path_factory):
    """The churn service, served; its base URL."""
    yield from _serve(churn, tmp_path_factory.mktemp("serve") / "serve.log")


@pytest.fixture(scope="module")
def ranking_service(ranking, tmp_path_factory):
    """The search-ranking service, served; its base URL."""
    yield from _serve(ranking, tmp_path_factory.mktemp("serve_ranking") / "serve.log")


@pytest.fixture(scope="module")
def mlp_service(mlp, tmp_path_factory):
    """The churn-mlp service, served; its base URL."""
    yield from _serve(mlp, tmp_path_factory.mktemp("serve_mlp") / "serve.log")


@pytest.fixture(scope="module")
def fraud_service(fraud, tmp_path_factory):
    """fraud-gpu's (local variant) service, served; its base URL."""
    yield from _serve(fraud, tmp_path_factory.mktemp("serve_fraud") / "serve.log")


def _route(service: str, folder: Path, limits: dict | None = None) -> Iterator[str]:
    """The local router in front of a service (its one version); its base URL. Stopped by
    PID."""
    config = folder / "router.json"
    write_table(config, [{"version": "v1", "weight": 100, "url": service}], limits)
    port = procs.free_port()
    pid = procs.start_background(
        [sys.executable, "-m", "mlstack.ops.local.router", "--port", str(port), "--config",
         str(config)], cwd=Path(__file__).parents[2], env=None, log=folder / "router.log")
    try:
        procs.wait_ready(f"http://127.0.0.1:{port}/-/router", pid, 30, folder / "router.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        assert procs.stop_process(pid) and not procs.is_alive(pid)


@pytest.fixture(scope="module")
def router(service, tmp_path_factory):
    """The local router in front of the churn service; its base URL."""
    yield from _route(service, tmp_path_factory.mktemp("router"))


@pytest.fixture(scope="module")
def ranking_router(ranking_service, tmp_path_factory):
    """The local router in front of the search-ranking service; its base URL."""
    yield from _route(ranking_service, tmp_path_factory.mktemp("ranking_router"))


@pytest.fixture(params=["service", "router"])
def served(request):
    """The base URL of the service, or of the router in front of it."""
    return request.getfixturevalue(request.param)


def _assert_error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ERROR_KEYS and isinstance(body["error"], str) and body["error"]
    assert body["detail"] and all(set(d) == {"loc", "msg", "type"} for d in body["detail"])
    return body


def test_refusals_keep_one_shape_and_the_openapi_documents_them(served):
    import httpx

    with httpx.Client(base_url=served, timeout=30) as client:
        bad = _assert_error(client.post("/predict", json={"rows": [{"customer_id": "x"}]}), 400)
        assert bad["detail"][0]["loc"] == ["body", "rows", 0, "customer_id"]
        twice = _assert_error(client.post(
            "/predict", content=b'{"rows": [{"customer_id": "x", "customer_id": 1057}]}',
            headers={"content-type": "application/json"}), 400)
        assert twice["detail"][0]["type"] == "duplicate_key"
        _assert_error(client.post("/predict"), 400)  # no body: it is required
        _assert_error(client.post("/predict", content=b"{", headers={
            "content-type": "application/json"}), 400)
        for media_type in ("multipart/form-data", "text/plain", "image/png"):
            _assert_error(client.post("/predict", content=b'{"rows": []}',
                                      headers={"content-type": media_type}), 415)
        _assert_error(client.post("/predict", files={"rows": b"[]"}), 415)
        for method in ("TRACE", "GET", "PUT", "DELETE"):
            refused = client.request(method, "/predict")
            _assert_error(refused, 405)
            assert refused.headers["allow"] == "POST"
        refused = client.request("TRACE", "/healthz")
        _assert_error(refused, 405)
        assert refused.headers["allow"] == "GET, HEAD"
        _assert_error(client.get("/nowhere"), 404)
        # too many rows, and malformed ones: 413 first, as documented
        too_many = _assert_error(client.post("/predict", json={"rows": [{"x": 1}] * 257}), 413)
        assert too_many["detail"][0]["loc"] == ["body", "rows"]

        docs = client.get("/docs.json")
        head = client.head("/docs.json")  # a HEAD's length is its GET's body's
        assert head.status_code == 200 and not head.content
        assert int(head.headers["content-length"]) == len(docs.content) > 0
        spec = docs.json()
    assert "InvalidArgument" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["Error"]["required"] == ["error", "detail"]
    responses = spec["components"]["responses"]
    assert "Retry-After" in responses["Error503"]["headers"]
    for path in ("/predict", "/features", "/info"):
        operation = spec["paths"][path]["post"]
        assert operation["requestBody"]["required"] is True
        assert {"400", "404", "405", "413", "415", "503", "504"} <= set(operation["responses"])


def test_the_router_passes_the_services_answers_unchanged(service, router):
    """The OpenAPI, the refusals' bodies and their headers (Allow, Retry-After) are the
    service's own, through the router; it adds only the version that answered."""
    import httpx

    with httpx.Client(timeout=30) as direct, httpx.Client(timeout=30) as routed:
        for method, path in (("GET", "/docs.json"), ("TRACE", "/predict"),
                             ("OPTIONS", "/healthz"), ("PROPFIND", "/info"),
                             ("GET", "/nowhere"), ("POST", "/predict")):
            want = direct.request(method, f"{service}{path}")
            got = routed.request(method, f"{router}{path}")
            assert (got.status_code, got.content) == (want.status_code, want.content), path
            for name in ("allow", "retry-after", "content-type"):
                assert got.headers.get(name) == want.headers.get(name), (method, path, name)
            assert got.headers["x-mlstack-version"] == "v1"


@pytest.mark.parametrize("target", ["service", "router", "ranking_service", "ranking_router",
                                    "mlp_service", "fraud_service"])
def test_schemathesis_finds_nothing(target, request, tmp_path):
    served = request.getfixturevalue(target)
    config = tmp_path / "schemathesis.toml"
    config.write_text("[checks.negative_data_rejection]\nexpected-statuses = ["
                      + ", ".join(f'"{s}"' for s in NEGATIVE_STATUSES) + "]\n")
    cli = str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [cli, "--config-file", str(config), "run", f"{served}/docs.json", "--checks", "all",
         "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--continue-on-failure",
         "--workers", "1", "--request-timeout", "10", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
             "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"})
    report = result.stdout[-12000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "No issues found" in report or "passed" in report, report


# What the router cannot forward, as a client can send it: (raw request, the status it gets).
ROUTER_REFUSALS = {
    "bad version": (b"POST /predict HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "malformed line": (b"POST /pre\x01dict HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "no version": (b"POST /predict\r\n\r\n", 400),
    "long line": (b"POST /" + b"p" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "long header": (b"POST /predict HTTP/1.1\r\nX-Long: " + b"h" * 70000 + b"\r\n\r\n", 431),
    "slow head": (b"POST /predict HTTP/1.1\r\nHost: x\r\n", 408),  # no blank line: waits
}


def test_the_routers_own_refusals_are_documented(service, tmp_path):
    """Each refusal the router answers itself comes in the error shape, with a status that
    the service's OpenAPI documents for the operation (and for every GET one)."""
    import httpx

    routed = _route(service, tmp_path, {"header_timeout_s": 2.0})
    base = next(routed)
    try:
        port = int(base.rsplit(":", 1)[1])
        spec = httpx.get(f"{base}/docs.json", timeout=30).json()
        documented = set(spec["paths"]["/predict"]["post"]["responses"])
        for what, (request, status) in ROUTER_REFUSALS.items():
            answer = raw_answer(port, request)
            assert answer is not None and answer[0] == status, (what, answer)
            assert_error_shape(*answer)
            assert str(status) in documented, (what, status, sorted(documented))
            for path, item in spec["paths"].items():
                for method, operation in item.items():
                    assert str(status) in operation["responses"], (what, method, path)
            assert spec["components"]["responses"][f"Error{status}"]["content"][
                "application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200  # still serving
    finally:
        routed.close()
