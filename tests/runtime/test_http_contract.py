"""mlstack.runtime.http_contract in front of a small Starlette app standing in for BentoML's:
the refusals in their order, the one error shape, Retry-After, Allow, the 504 and the
OpenAPI rewrite. (The real service under it: tests/engine/test_api_contract.py.)"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from mlstack.runtime import http_contract
from mlstack.runtime.http_contract import ServiceContract, document, error_body, read_json

OPERATIONS = {"/predict": "rows", "/info": None}
BENTOML_SPEC = {
    "paths": {
        "/predict": {"post": {"responses": {"200": {"description": "ok"},
                                            "400": {"description": "Bad Request"}},
                              "requestBody": {"content": {"application/json": {}}}}},
        "/readyz": {"get": {"responses": {"200": {"description": "ok"}}}},
    },
    "components": {"schemas": {"InvalidArgument": {"type": "object"}, "Row": {}}},
}
SEEN: list[bytes] = []


async def predict(request):
    body = await request.body()
    SEEN.append(body)
    data = json.loads(body)
    if data.get("rows") == ["slow"]:
        await asyncio.sleep(30)
    if data.get("rows") == ["shed"]:  # BentoML's answer to a ServiceUnavailable
        return JSONResponse({"error": "An unexpected error has occurred, please check the "
                             "server log."}, status_code=503)
    if data.get("rows") == ["shed here"]:  # the generated service's own answer to a shed
        from mlstack.runtime.batching import _overloaded
        from mlstack.runtime.serving import shed_response

        return shed_response(_overloaded(131.0))
    if data.get("rows") == ["bad"]:  # BentoML's answer to a pydantic ValidationError
        return JSONResponse({"error": "1 validation error for Rows", "detail": [
            {"type": "int_type", "loc": ["rows", 0, "customer_id"],
             "msg": "Input should be a valid integer", "url": "https://errors.pydantic.dev"}]},
            status_code=400)
    return JSONResponse([0.5] * len(data["rows"]))


async def readyz(request):
    raise HTTPException(503, "Runners are not ready.")


async def docs(request):
    return JSONResponse(BENTOML_SPEC)


APP = Starlette(routes=[
    Route("/predict", predict, methods=["POST"]), Route("/info", predict, methods=["POST"]),
    Route("/readyz", readyz), Route("/docs.json", docs),
    Route("/healthz", lambda r: PlainTextResponse("\n"))])


def _call(method: str, path: str, **kwargs) -> httpx.Response:
    app = ServiceContract(APP, operations=OPERATIONS, max_rows=3, timeout_seconds=2.0)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"]
    assert body["detail"] and all(set(d) == {"loc", "msg", "type"} for d in body["detail"])
    return body


def test_a_valid_request_reaches_the_service_with_its_body():
    SEEN.clear()
    response = _call("POST", "/predict", json={"rows": [1, 2]})
    assert response.status_code == 200 and response.json() == [0.5, 0.5]
    assert json.loads(SEEN[-1]) == {"rows": [1, 2]}
    # no Content-Type: read as JSON
    assert _call("POST", "/predict", content=b'{"rows": [1]}').status_code == 200


@pytest.mark.parametrize("method", ["TRACE", "GET", "PUT", "DELETE", "PATCH", "HEAD"])
def test_another_method_on_an_operation_is_405_with_allow(method):
    response = _call(method, "/predict")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    if method != "HEAD":
        assert _error(response, 405)["detail"][0]["type"] == "method_not_allowed"


def test_trace_on_a_get_route_is_405():
    response = _call("TRACE", "/healthz")
    assert _error(response, 405) and response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("media_type", ["multipart/form-data; boundary=x", "text/plain",
                                        "image/png", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_by_its_content_type_is_415(media_type):
    SEEN.clear()
    response = _call("POST", "/predict", content=b'{"rows": []}',
                     headers={"content-type": media_type})
    assert _error(response, 415)["detail"][0]["loc"] == ["header", "content-type"]
    assert not SEEN  # refused before the service


def test_a_multipart_upload_is_415_not_500():
    _error(_call("POST", "/predict", files={"rows": b"[]"}), 415)


@pytest.mark.parametrize("body, kind", [
    (b"", "missing"), (b"  ", "missing"), (b"{", "json_invalid"), (b"\xff", "json_invalid"),
    (b'{"rows": [NaN]}', "json_invalid"), (b'{"rows": [Infinity]}', "json_invalid"),
    (b'{"rows": [{"customer_id": "x", "customer_id": 1057}]}', "duplicate_key"),
    (b'{"rows": [], "rows": []}', "duplicate_key"),
])
def test_a_body_that_is_missing_not_json_or_has_a_key_twice_is_400(body, kind):
    SEEN.clear()
    response = _call("POST", "/predict", content=body,
                     headers={"content-type": "application/json"})
    assert _error(response, 400)["detail"][0]["type"] == kind
    assert not SEEN


def test_too_many_rows_is_413_before_the_rows_are_validated():
    SEEN.clear()
    body = _error(_call("POST", "/predict", json={"rows": ["bad"] * 4}), 413)
    assert body["detail"][0]["loc"] == ["body", "rows"]
    assert "4 items" in body["error"] and not SEEN
    assert _call("POST", "/predict", json={"rows": [1, 2, 3]}).status_code == 200
    # an operation without rows has no limit to check
    assert _call("POST", "/info", json={"rows": [1, 2, 3, 4]}).status_code == 200


def test_the_services_validation_errors_keep_the_shape_with_body_locations():
    body = _error(_call("POST", "/predict", json={"rows": ["bad"]}), 400)
    assert body == {"error": "the request body does not match its schema: 1 violation",
                    "detail": [{"loc": ["body", "rows", 0, "customer_id"],
                                "msg": "Input should be a valid integer", "type": "int_type"}]}


def test_an_overloaded_or_unready_service_is_503_with_retry_after():
    for response in (_call("POST", "/predict", json={"rows": ["shed"]}), _call("GET", "/readyz")):
        assert _error(response, 503)["detail"][0]["type"] == "overloaded"
        assert response.headers["retry-after"] == str(http_contract.RETRY_AFTER_S)


def test_a_shed_the_service_answers_itself_keeps_its_sentence_and_gets_retry_after():
    """The generated service returns the batcher's refusal (serving.shed_response) instead of
    raising it, so BentoML logs no traceback per refusal under overload; the client still
    gets the documented 503 with Retry-After, now saying why."""
    response = _call("POST", "/predict", json={"rows": ["shed here"]})
    body = _error(response, 503)
    assert body["error"].startswith("overloaded: queued 131 ms, past the batching budget")
    assert body["detail"][0]["type"] == "overloaded"
    assert response.headers["retry-after"] == str(http_contract.RETRY_AFTER_S)


def test_no_answer_within_the_timeout_is_504():
    body = _error(_call("POST", "/predict", json={"rows": ["slow"]}), 504)
    assert body["detail"][0]["type"] == "timeout"


def test_an_unknown_path_is_404_in_the_shape():
    assert _error(_call("GET", "/nowhere"), 404)["detail"][0]["type"] == "not_found"


def test_error_body_of_bentoml_bodies():
    # BentoML's BentoMLException answer below 500 is a one-item list
    assert error_body(413, b'[{"error": "300 rows"}]') == {
        "error": "300 rows", "detail": [{"loc": [], "msg": "300 rows", "type": "too_many_rows"}]}
    assert error_body(500, b"Internal Server Error")["error"] == http_contract.SENTENCES[500]
    assert error_body(418, b"")["detail"][0]["type"] == "invalid_request"


def test_read_json_accepts_json_and_equal_keys_in_different_objects():
    assert read_json(b'{"rows": [{"a": 1}, {"a": 2}]}') == {"rows": [{"a": 1}, {"a": 2}]}


def test_docs_json_is_served_rewritten():
    spec = _call("GET", "/docs.json").json()
    assert spec == document(BENTOML_SPEC, OPERATIONS)


def test_document_makes_the_openapi_true():
    spec = document(BENTOML_SPEC, OPERATIONS)
    schemas = spec["components"]["schemas"]
    assert "InvalidArgument" not in schemas and "Row" in schemas
    assert schemas["Error"]["required"] == ["error", "detail"]
    assert schemas["Error"]["properties"]["detail"]["type"] == "array"
    predict = spec["paths"]["/predict"]["post"]
    assert predict["requestBody"]["required"] is True
    assert sorted(predict["responses"]) == ["200", "400", "404", "405", "408", "413", "414",
                                            "415", "431", "500", "503", "504", "505"]
    assert predict["responses"]["400"] == {"$ref": "#/components/responses/Error400"}
    readyz = spec["paths"]["/readyz"]["get"]
    # a router in front refuses any request it cannot take (400, 408, 413, 414, 431, 505)
    assert sorted(readyz["responses"]) == ["200", "400", "404", "405", "408", "413", "414",
                                           "431", "500", "503", "504", "505"]
    responses = spec["components"]["responses"]
    assert responses["Error503"]["headers"]["Retry-After"]["required"] is True
    assert responses["Error405"]["headers"]["Allow"]["required"] is True
    for response in responses.values():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}
    assert BENTOML_SPEC["paths"]["/predict"]["post"]["responses"]["400"] == {
        "description": "Bad Request"}  # the input is not changed


def test_document_puts_the_given_answers_in_place_of_bentomls():
    nullable = {"type": "array", "items": {"type": "number", "nullable": True}}
    spec = document(BENTOML_SPEC, OPERATIONS, {"/predict": nullable})
    assert spec["paths"]["/predict"]["post"]["responses"]["200"]["content"] == {
        "application/json": {"schema": nullable}}


def test_an_optional_body_field_whose_default_is_null_is_documented_nullable():
    """BentoML inlines /rank's request schema without the null of `top_k: int | None = None`
    (an integer whose default is null): the contract marks it nullable, since it takes null."""
    spec = {"paths": {"/rank": {"post": {"requestBody": {"content": {"application/json": {
        "schema": {"type": "object", "properties": {
            "top_k": {"type": "integer", "default": None},
            "query_id": {"type": "integer"}}}}}}, "responses": {"200": {}}}}}}
    body = http_contract.document(spec, {"/rank": None})["paths"]["/rank"]["post"]
    properties = body["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert properties["top_k"].get("nullable") is True
    assert "nullable" not in properties["query_id"]
