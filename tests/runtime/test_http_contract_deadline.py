"""The contract middleware's answer deadline (mlstack.runtime.http_contract.ServiceContract):
it stops counting once the service has started its answer, and only the deadline's own
expiry is a 504 (a TimeoutError the service raises is the service's error)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mlstack.runtime.http_contract import ServiceContract

BODY = {"rows": [1]}


async def _slow_body(scope, receive, send):
    """Starts its answer at once, and finishes it after the deadline has passed."""
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"[0.5", "more_body": True})
    await asyncio.sleep(1.0)
    await send({"type": "http.response.body", "body": b"]", "more_body": False})


async def _own_timeout(scope, receive, send):
    await receive()
    raise TimeoutError("the service's own call timed out")


def _call(app, timeout_seconds: float) -> httpx.Response:
    contract = ServiceContract(app, operations={"/predict": "rows"}, max_rows=3,
                               timeout_seconds=timeout_seconds)

    async def go():
        transport = httpx.ASGITransport(app=contract)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/predict", json=BODY)

    return asyncio.run(go())


def test_an_answer_started_within_the_deadline_is_finished_after_it():
    response = _call(_slow_body, timeout_seconds=0.3)
    assert response.status_code == 200
    assert response.json() == [0.5]


def test_a_timeout_error_of_the_service_is_not_the_deadlines_504():
    with pytest.raises(TimeoutError, match="own call"):
        _call(_own_timeout, timeout_seconds=30.0)
