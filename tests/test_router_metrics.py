"""The router's GET /metrics: the answers clients got, by status code and by who answered, in
Prometheus's text format (the local Prometheus scrapes it; mlstack.ops.local.alerting maps it
onto the service's metric names for the generated rules)."""

from __future__ import annotations

import re
import shutil
import subprocess

import httpx

from tests.test_router import routed  # noqa: F401  (the fixture: a router and backends)

SAMPLE = re.compile(r'^mlstack_router_requests_total\{code="(\d+)",answered_by="([^"]+)"\} (\d+)$')


def scrape(port: int) -> tuple[str, dict[tuple[str, str], int]]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    counts = {}
    for line in r.text.splitlines():
        if line.startswith("#"):
            continue
        code, by, n = SAMPLE.fullmatch(line).groups()
        counts[(code, by)] = int(n)
    return r.text, counts


def test_counts_what_clients_got_by_status_and_by_who_answered(routed):  # noqa: F811
    port, set_weights, _ = routed
    set_weights({"v1": 100})
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            assert client.post(f"{url}/predict", json={}).status_code == 200
        assert client.post(f"{url}/predict", json={},
                           headers={"X-Status": "500"}).status_code == 500
        for page in ("/-/router", "/metrics"):  # the router's own pages: not client answers
            assert client.get(f"{url}{page}").status_code == 200
        set_weights({})  # nothing routed: the router answers 503 itself
        for _ in range(2):
            assert client.post(f"{url}/predict", json={}).status_code == 503
        assert client.get(f"{url}/readyz").status_code == 503  # a probe: not counted
    text, counts = scrape(port)
    assert counts == {("200", "v1"): 3, ("500", "v1"): 1, ("503", "router"): 2}
    assert "# TYPE mlstack_router_requests_total counter" in text
    assert shutil.which("promtool"), "promtool: Debian's prometheus package"
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
