"""The generated service's HTTP contract: what it refuses, the one error shape, its OpenAPI.

Every error the service answers has one body, documented once in its OpenAPI
(components.schemas.Error) and referenced by every operation:

    {"error": "<a sentence>", "detail": [{"loc": ["body", "rows", 0, "customer_id"],
                                          "msg": "...", "type": "..."}]}

`ServiceContract` is an ASGI middleware (`Service.add_asgi_middleware`) in front of
BentoML's routes. For the POST operations, in this order:

    405  another method (TRACE, GET, ...); Allow names the one there is
    415  a Content-Type other than application/json (a body without one is read as JSON)
    400  no body, a body that is not JSON (NaN and Infinity included), or with a key twice
         in one object
    413  more rows (candidates, for /rank) than MAX_REQUEST_ROWS, whatever else the body
         holds: the count is checked before any row is validated
    400  a body its schema refuses (BentoML's pydantic validation)
    503  overloaded (the batcher shed the request, or not ready yet), with Retry-After
    504  no answer within TIMEOUT_SECONDS

BentoML's own error bodies (its 400 validation errors, 404, 405, 413, 500, 503) are
rewritten into the shape above, and GET /docs.json is answered with `document`'s OpenAPI:
the error responses of each operation, required request bodies, Retry-After and Allow. The
OpenAPI documents the local router's own refusals too (ROUTER_ERRORS: 400, 408, 413, 414,
431, 505, besides its 503 and 504), since a deployed service's clients see them.
Standard library only: the worker imports it with the service.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["ERROR_TYPES", "FEEDBACK_STATUSES", "ServiceContract", "document", "error_body",
           "error_json", "read_json"]

JSON = "application/json"
RETRY_AFTER_S = 1
OPENAPI_PATH = "/docs.json"
GET_METHODS = ("GET", "HEAD")
# detail[].type of an error that is not a validation error, by status
ERROR_TYPES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_many_rows", 415: "unsupported_media_type",
               500: "internal_error", 503: "overloaded", 504: "timeout"}
# the sentence of an error the service words itself, by status (BentoML's are rewritten)
SENTENCES = {404: "no such path on this service", 405: "method not allowed on this path",
             500: "internal error: the service log has the details",
             503: f"the service is overloaded or not ready: retry after {RETRY_AFTER_S} s",
             504: "no answer within the service's timeout"}
# What the local router (mlstack.ops.local.router) answers itself before a request reaches
# the service, on any path and method, in the same error shape; each connection it refuses
# this way is closed. Clients of a deployed service see these, so every operation documents
# them. (Its 413, 503 and 504 are the service's statuses too: their descriptions say both.)
ROUTER_ERRORS = {
    400: "Through a router: a malformed request line (the method not a token, the target not "
         "visible ASCII, no HTTP version), or the request's headers or body cut off.",
    408: "Through a router: the request's line and headers, or its body, did not arrive "
         "within the router's deadline (the connection is closed).",
    413: "Through a router: a body above its byte limit.",
    414: "Through a router: a request line above 65536 bytes.",
    431: "Through a router: a header line above 65536 bytes, or more than 100 headers.",
    505: "Through a router: an HTTP version other than 1.x.",
}
# the error responses of a POST operation and of a GET one, with their descriptions
POST_ERRORS = {
    400: "The body is not JSON, holds a key twice in one object, or its schema refuses it "
         "(detail: one item per violation); or, through a router, a malformed request line, "
         "or headers or a body cut off.",
    404: "No such path.",
    405: "Another method than POST (Allow names it).",
    408: ROUTER_ERRORS[408],
    413: "More items in the request's list than the service's max_request_rows (checked "
         "before the items are validated, so this comes before any 400 of the body's schema), "
         "or, through a router, a body above its byte limit.",
    414: ROUTER_ERRORS[414],
    415: "A Content-Type other than application/json.",
    431: ROUTER_ERRORS[431],
    500: "An internal error (the service log has the details).",
    503: "Overloaded (the request was shed, or a router's connection or queue limit is "
         "full) or not ready yet: retry after Retry-After seconds.",
    504: "No answer within the service's timeout (or a router's backend timeout).",
    505: ROUTER_ERRORS[505],
}
# POST /feedback's own answers (the prediction log's outcomes, mlstack.runtime.feedback)
FEEDBACK_STATUSES = {
    201: "Stored: the first outcome for this request id (200: the same outcome again).",
    404: "No logged answer has this request id (an answer given a moment ago by another "
         "worker is waited for), or no such path.",
    409: "This request id has another outcome already; the first one is kept.",
    413: "The body is over the path's byte limit, or, through a router, over its own.",
}
GET_ERRORS = {status: POST_ERRORS[status]
              for status in sorted({404, 405, 500, 503, 504, *ROUTER_ERRORS})}
ERROR_SCHEMAS = {
    "Error": {
        "type": "object", "title": "Error", "required": ["error", "detail"],
        "additionalProperties": False,
        "description": "The body of every error this service answers.",
        "properties": {
            "error": {"type": "string", "title": "Error", "description": "One sentence."},
            "detail": {"type": "array", "title": "Detail",
                       "items": {"$ref": "#/components/schemas/ErrorDetail"}},
        },
    },
    "ErrorDetail": {
        "type": "object", "title": "ErrorDetail", "required": ["loc", "msg", "type"],
        "additionalProperties": False,
        "description": "One thing wrong: where (loc: 'body' and the path in it, empty when "
                       "the whole request), what (msg) and its kind (type).",
        "properties": {
            "loc": {"type": "array", "title": "Loc",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string", "title": "Msg"},
            "type": {"type": "string", "title": "Type"},
        },
    },
}
# BentoML's error schemas, replaced by Error
BENTOML_ERROR_SCHEMAS = ("InvalidArgument", "NotFound", "InternalServerError")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class RequestError(Exception):
    """A request refused before it reaches the service: status, sentence, detail items."""

    def __init__(self, status: int, error: str, detail: list[dict[str, Any]]) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


def _item(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    made = dict(pairs)  # in C; the loop below only names the key given twice
    if len(made) == len(pairs):
        return made
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise RequestError(400, f"the request body holds the key {key!r} twice in one "
                               "object", [_item(["body"], f"duplicate key {key!r}",
                                                "duplicate_key")])
        seen[key] = value
    return seen


def _refuse_constant(name: str) -> Any:
    raise RequestError(400, f"the request body is not JSON: {name} is not a JSON value",
                       [_item(["body"], f"{name} is not a JSON value", "json_invalid")])


def read_json(body: bytes) -> Any:
    """The request body as JSON; RequestError (400) for none, for text that is not JSON
    (NaN and Infinity included) and for a key given twice in one object."""
    if not body.strip():
        raise RequestError(400, "the request has no body: send a JSON object",
                           [_item(["body"], "a JSON body is required", "missing")])
    try:
        return json.loads(body, object_pairs_hook=_refuse_duplicates,
                          parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        msg = str(exc)
        raise RequestError(400, f"the request body is not JSON: {msg}",
                           [_item(["body"], msg, "json_invalid")]) from None


def check_items(data: Any, field: str | None, limit: int) -> None:
    """RequestError (413) when the body's list `field` holds more than `limit` items."""
    if field and isinstance(data, dict) and isinstance(data.get(field), list):
        count = len(data[field])
        if count > limit:
            msg = (f"{count} items in one request; this service takes at most {limit} "
                   "(serving.max_request_rows)")
            raise RequestError(413, f"too many {field} in one request: {msg}",
                               [_item(["body", field], msg, "too_many_rows")])


def _message_of(data: Any) -> str | None:
    """BentoML's sentence in an error body: {"error": ...} or [{"error": ...}]."""
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else None


def error_json(status: int, error: str, loc: list[str | int]) -> bytes:
    """The documented error body of a refusal the service words itself (one detail item at
    `loc`), as JSON bytes."""
    body = {"error": error, "detail": [_item(loc, error, ERROR_TYPES.get(status,
                                                                         "invalid_request"))]}
    return json.dumps(body, separators=(",", ":")).encode()


def error_body(status: int, raw: bytes) -> dict[str, Any]:
    """The documented error body for a response of `status` whose body was `raw` (BentoML's
    JSON, Starlette's plain text, or already the documented shape)."""
    kind = ERROR_TYPES.get(status, "internal_error" if status >= 500 else "invalid_request")
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and isinstance(
            data.get("detail"), list) and all(isinstance(d, dict) for d in data["detail"]):
        errors = data["detail"]
        if all({"loc", "msg", "type"} <= d.keys() for d in errors) and errors:
            # pydantic's errors (BentoML's 400), or ours: loc in the body
            detail = [_item(_body_loc(d["loc"]), str(d["msg"]), str(d["type"])) for d in errors]
            if status == 400 and data["error"].split(" ", 1)[0].isdigit():
                noun = "violation" if len(detail) == 1 else "violations"
                error = f"the request body does not match its schema: {len(detail)} {noun}"
            else:
                error = data["error"]
            return {"error": error, "detail": detail}
    text = SENTENCES.get(status) if status >= 500 or status in (404, 405) else None
    if text is None:
        text = _message_of(data) or raw.decode("utf-8", "replace").strip() or f"HTTP {status}"
    return {"error": text, "detail": [_item([], text, kind)]}


def _body_loc(loc: Any) -> list[Any]:
    loc = list(loc) if isinstance(loc, list | tuple) else [str(loc)]
    return loc if loc[:1] == ["body"] else ["body", *loc]


def _media_type(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return None


class ServiceContract:
    """ASGI middleware holding a BentoML service to its contract (the module's docstring).
    `operations`: each POST path and the name of its list of rows (None without one);
    `max_rows`: the most items that list may hold; `timeout_seconds`: the time to the
    answer's first byte before a 504; `answers`: a path's 200 schema where BentoML's is
    wrong (it drops the null of `list[float | None]`)."""

    def __init__(self, app: Callable[..., Awaitable[None]], *,
                 operations: Mapping[str, str | None], max_rows: int,
                 timeout_seconds: float,
                 answers: Mapping[str, Mapping[str, Any]] | None = None,
                 max_body_bytes: Mapping[str, int] | None = None,
                 statuses: Mapping[str, Mapping[int, str]] | None = None) -> None:
        self.app = app
        self.operations = dict(operations)
        self.answers = dict(answers or {})
        self.max_rows = max_rows
        self.timeout_seconds = timeout_seconds
        # a path's byte limit (413 once its body passes it: /feedback's small objects)
        self.max_body_bytes = dict(max_body_bytes or {})
        # a path's own answers besides 200 and the errors every POST has (/feedback's 201
        # and 409), documented in its OpenAPI
        self.statuses = {path: dict(codes) for path, codes in (statuses or {}).items()}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path in self.operations:
            if method != "POST":
                return await self._error(send, 405, SENTENCES[405], allow="POST")
            try:
                receive = await self._checked_body(scope, receive)
            except RequestError as refused:
                return await self._error(send, refused.status, refused.error, refused.detail)
        elif method not in (*GET_METHODS, "POST"):
            # every other route of the service is GET (BentoML's /healthz, /metrics, ...)
            return await self._error(send, 405, SENTENCES[405], allow="GET, HEAD")
        rewrite_docs = path == OPENAPI_PATH and method in GET_METHODS
        await self._answer(scope, receive, _ErrorRewriter(send, self, rewrite_docs))

    async def _checked_body(self, scope: dict[str, Any], receive: Receive) -> Receive:
        """Read the whole body and check it (415, 400, 413); a receive that replays it."""
        media_type = _media_type(scope.get("headers", []))
        if media_type not in (None, JSON):
            raise RequestError(415, f"content type {media_type} is not accepted: send "
                               f"{JSON}", [_item(["header", "content-type"],
                                                 f"expected {JSON}", "unsupported_media_type")])
        limit = self.max_body_bytes.get(scope["path"])
        chunks, more, size = [], True, 0
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client disconnected before sending its body",
                                   [_item(["body"], "incomplete body", "missing")])
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if limit is not None and size > limit:
                raise RequestError(413, f"the body is over {limit} bytes, this path's limit",
                                   [_item(["body"], f"at most {limit} bytes", "too_large")])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        check_items(read_json(body), self.operations[scope["path"]], self.max_rows)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _answer(self, scope: dict[str, Any], receive: Receive,
                      send: _ErrorRewriter) -> None:
        """Run the service; 504 when it has not started its answer within the timeout. In
        this task, under a deadline the answer's start lifts (no task, future and wait per
        request: a few percent of a worker under load)."""
        try:
            async with asyncio.timeout(self.timeout_seconds) as deadline:
                send.deadline = deadline
                await self.app(scope, receive, send)
        except TimeoutError:
            if not deadline.expired():
                raise  # the service's own TimeoutError, not the deadline
            await self._error(send.send, 504, SENTENCES[504])

    async def _error(self, send: Send, status: int, error: str,
                     detail: list[dict[str, Any]] | None = None, allow: str | None = None,
                     ) -> None:
        body = {"error": error, "detail": detail or [_item([], error, ERROR_TYPES[status])]}
        await _send_json(send, status, body, [], allow=allow)

    def openapi(self, spec: dict[str, Any]) -> dict[str, Any]:
        return document(spec, self.operations, self.answers, self.statuses)


async def _send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]],
                     allow: str | None = None) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    kept = [(k, v) for k, v in headers
            if k.lower() not in (b"content-type", b"content-length", b"retry-after", b"allow")]
    kept += [(b"content-type", JSON.encode()), (b"content-length", str(len(data)).encode())]
    if status == 503:
        kept.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    if status == 405:
        kept.append((b"allow", (allow or "GET, HEAD").encode()))
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": data, "more_body": False})


class _ErrorRewriter:
    """The `send` given to BentoML: an answer of 400 or more is held whole and sent in the
    documented shape; with `docs`, a 200 OpenAPI document is sent as `document` makes it.
    Once the answer has begun, its `deadline` is lifted (the timeout stops counting then)."""

    def __init__(self, send: Send, contract: ServiceContract, docs: bool) -> None:
        self.send, self.contract, self.docs = send, contract, docs
        self.deadline: asyncio.Timeout | None = None
        self.held: dict[str, Any] | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if self.deadline is not None:
                self.deadline.reschedule(None)
                self.deadline = None
            if message["status"] >= 400 or (self.docs and message["status"] == 200):
                self.held = message
                return
        elif message["type"] == "http.response.body" and self.held is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            raw, status = b"".join(self.chunks), self.held["status"]
            headers = list(self.held.get("headers", []))
            allow = next((v.decode("latin-1") for k, v in headers if k.lower() == b"allow"),
                         None)
            if status >= 400:
                body = error_body(status, raw)
            else:
                body = self.contract.openapi(json.loads(raw))
            await _send_json(self.send, status, body, headers, allow=allow)
            return
        await self.send(message)


def _ref(status: int) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/Error{status}"}


def _response(status: int, description: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status == 503:
        response["headers"] = {"Retry-After": {
            "description": "Seconds to wait before retrying.", "required": True,
            "schema": {"type": "integer", "minimum": 0}}}
    if status == 405:
        response["headers"] = {"Allow": {
            "description": "The methods this path takes.", "required": True,
            "schema": {"type": "string"}}}
    return response


def _null_defaults_nullable(body: dict[str, Any]) -> None:
    """BentoML inlines a request's schema without the null of an optional parameter
    (`top_k: int | None = None` becomes an integer whose default is null): a property whose
    default is null takes null, so it is marked nullable (OpenAPI 3.0)."""
    schema = body.get("content", {}).get(JSON, {}).get("schema", {})
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict) and "type" in prop and prop.get("default", 0) is None:
            prop["nullable"] = True


def document(spec: Mapping[str, Any], operations: Mapping[str, str | None],
             answers: Mapping[str, Mapping[str, Any]] | None = None,
             statuses: Mapping[str, Mapping[int, str]] | None = None) -> dict[str, Any]:
    """BentoML's OpenAPI made true: one Error schema (BentoML's error schemas dropped), one
    response per error status referencing it, each operation's error responses (POST: 400,
    404, 405, 408, 413, 414, 415, 431, 500, 503, 504, 505; GET: the same but 415; 400, 408,
    413, 414, 431 and 505 are a router's refusals, ROUTER_ERRORS), its request body
    required, the 200 schemas of `answers` (path -> JSON schema) in place of BentoML's, and
    a path's own `statuses` (status -> description: below 400 with the 200's schema, else
    the Error body)."""
    answers = answers or {}
    statuses = statuses or {}
    made: dict[str, Any] = json.loads(json.dumps(spec))  # a copy
    components = made.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in BENTOML_ERROR_SCHEMAS:
        schemas.pop(name, None)
    schemas.update(json.loads(json.dumps(ERROR_SCHEMAS)))
    components["responses"] = {f"Error{status}": _response(status, description)
                               for status, description in sorted(POST_ERRORS.items())}
    for path, item in made.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            errors = POST_ERRORS if path in operations else GET_ERRORS
            responses = {code: value for code, value in operation["responses"].items()
                         if not code.isdigit() or int(code) < 400}
            responses.update({str(status): _ref(status) for status in sorted(errors)})
            operation["responses"] = responses
            if method == "post" and "requestBody" in operation:
                operation["requestBody"]["required"] = True
                _null_defaults_nullable(operation["requestBody"])
            if path in answers and "200" in responses:
                content = responses["200"].setdefault("content", {}).setdefault(JSON, {})
                content["schema"] = json.loads(json.dumps(answers[path]))
            if path in statuses:
                for status, description in statuses[path].items():
                    responses[str(status)] = _response(status, description) if status >= 400 \
                        else {"description": description,
                              **json.loads(json.dumps({k: v for k, v in responses.get(
                                  "200", {}).items() if k == "content"}))}
                operation["responses"] = dict(sorted(responses.items()))
    return made
