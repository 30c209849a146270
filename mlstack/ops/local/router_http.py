"""HTTP/1.1 on the wire for the router (mlstack.ops.local.router): the answers' bytes, the
error shape, and the parser and event loop it runs on (httptools and uvloop when importable,
else a pure-Python parser, mlstack.ops.local.router_parser, and asyncio's own loop)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from types import ModuleType
from typing import NamedTuple

from mlstack.ops.local import router_parser

httptools: ModuleType | None
uvloop: ModuleType | None
try:
    import httptools
except ImportError:  # pragma: no cover - the runtime extra installs it
    httptools = None
try:
    import uvloop
except ImportError:  # pragma: no cover - the runtime extra installs it
    uvloop = None


SERVER = "mlstack-router"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length", "host", "expect"}
HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)
# what the router can forward as HTTP/1.1: a method that is a token (RFC 9110 5.6.2) and a
# request target of visible ASCII
METHOD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
TARGET = re.compile(rb"[\x21-\x7e]+")
MAX_LINE = 65536  # a request line (else 414) or a header line (else 431)
MAX_HEADERS = 100  # header lines (else 431)
MAX_HEAD = (MAX_HEADERS + 2) * (MAX_LINE + 2)  # a head this long broke one of the two
# the router's own pages and the probes are not answers to clients (the generated rules leave
# the probes out of the service's counters too)
NOT_COUNTED = frozenset({b"/metrics", b"/-/router", b"/healthz", b"/livez", b"/readyz"})

JSON_LINES = (b"Content-Type: application/json\r\n",)
SHED_LINES = (*JSON_LINES, b"Retry-After: 1\r\n")
CLOSE_LINES = (*JSON_LINES, b"Connection: close\r\n")
METRICS_LINES = (b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",)
SERVER_LINE = f"Server: {SERVER}\r\n".encode()
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

class Http(NamedTuple):
    """The event loop and the HTTP/1.1 parsers a router runs on."""

    loop: str  # "uvloop" or "asyncio"
    parser: str  # "httptools" or "python"
    new_event_loop: Callable[[], asyncio.AbstractEventLoop]
    RequestParser: Callable
    ResponseParser: Callable


PURE_PYTHON = Http("asyncio", "python", asyncio.new_event_loop,
                   router_parser.RequestParser, router_parser.ResponseParser)
NATIVE = Http("uvloop" if uvloop is not None else "asyncio",
              "httptools" if httptools is not None else "python",
              uvloop.new_event_loop if uvloop is not None else asyncio.new_event_loop,
              httptools.HttpRequestParser if httptools is not None
              else router_parser.RequestParser,
              httptools.HttpResponseParser if httptools is not None
              else router_parser.ResponseParser)
# what either parser raises: an Upgrade request read (Upgrade is hop-by-hop: the router reads
# on as for a plain request), a callback's exception, anything else malformed
_NATIVE = ((httptools.HttpParserUpgrade, httptools.HttpParserCallbackError,
            httptools.HttpParserError) if httptools is not None else ())
ParserUpgrade = (router_parser.ParserUpgrade, *_NATIVE[:1])
CallbackError = (router_parser.CallbackError, *_NATIVE[1:2])
ParserError = (router_parser.ParserError, *_NATIVE[2:])


def choose(pure_python: bool = False) -> Http:
    """uvloop and httptools where importable (the runtime extra installs both), else, or
    when `pure_python`, asyncio's loop and mlstack.ops.local.router_parser."""
    return PURE_PYTHON if pure_python else NATIVE


def error_body(sentence: str, kind: str, loc: tuple = ()) -> bytes:
    """An answer the router words itself, in the service's error shape (one detail item)."""
    return json.dumps({"error": sentence,
                       "detail": [{"loc": list(loc), "msg": sentence, "type": kind}]}).encode()


_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """As http.server words it: the standard reason phrase, or none for another code."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
    return line


_date: dict[int, bytes] = {}


def date_line() -> bytes:
    """The Date header of an answer the router words itself (formatted once a second)."""
    now = int(time.time())
    line = _date.get(now)
    if line is None:
        _date.clear()
        line = _date[now] = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
    return line


def answer_bytes(status: int, payload: bytes, lines, *, has_server: bool = False,
                 has_date: bool = False, head_length: bytes | None = None,
                 body: bool = True) -> bytes:
    """A whole answer: the status line, Server and Date unless `lines` (the header lines,
    each ending in CRLF) have their own, a Content-Length (a HEAD's answer keeps its GET's,
    `head_length`), and the payload unless `body` is False (a HEAD)."""
    out = [status_line(status)]
    if not has_server:
        out.append(SERVER_LINE)
    if not has_date:
        out.append(date_line())
    out.extend(lines)
    out.append(b"Content-Length: " + (head_length or str(len(payload)).encode()) + b"\r\n\r\n")
    if body:
        out.append(payload)
    return b"".join(out)


def refusal(sentence: str) -> bytes:
    """A connection's 503 at accept, before any request is read; the connection closes."""
    return answer_bytes(503, error_body(sentence, "overloaded"),
                        (*SHED_LINES, b"Connection: close\r\n"))
