"""A small local weighted router in front of the deployed service versions.

Run as `python -m mlstack.ops.local.router --port P --config FILE`. The config file holds
{"backends": [{"version": "v3", "url": "http://127.0.0.1:4101", "weight": 95}, ...],
"limits": {...}} and is re-read when it changes, so deploy moves traffic by rewriting it
(atomically). Requests are spread by smooth weighted round-robin (deterministic, so a 5%
canary gets 1 in 20 requests); each response carries `X-Mlstack-Version`, so clients can
measure every version on its own. A backend that refuses the connection is skipped for
another one with weight, so a version going away during a swap does not fail requests.
`GET /-/router` shows the table, the limits and the admission counters; `GET /metrics` counts
the answers clients got, by status code and by who answered (a version, or the router
itself), in Prometheus's text format (the local Prometheus scrapes it: mlstack.ops.local.alerting).
The table's optional "sticky" entry sends a keyed request to its sticky A/B arm, and its
"shadow" entry mirrors answered requests to a version that serves no client and compares the
answers (mlstack.ops.local.traffic_split; their counters are in `GET /-/router`).

The router stays inside the service's OpenAPI contract (mlstack.runtime.http_contract):
every method the HTTP parser knows (the standard ones and WebDAV's) is forwarded (TRACE too:
the service answers 405 with Allow, not the router 501; a method httptools does not know gets
400, as uvicorn in front of the service answers it), the backend's answer and headers (Retry-After, Allow, /docs.json) pass unchanged, and
what the router answers itself is a status the contract documents.

Admission control keeps overload from building a backlog anywhere (LIMITS, each overridable
in the table's "limits"):
- at most `max_in_flight` requests are forwarded at once; up to `max_queue` more wait at most
  `queue_timeout_s` for a slot; any other request gets 503 with `Retry-After: 1` at once;
- at most `max_connections` client connections are served, at most
  `max_connections_per_address` of them from one client address; one more gets that 503
  and is closed; the listen backlog holds LISTEN_BACKLOG connections (not Python's default
  of 5);
- a backend that does not answer within `backend_timeout_s` gets its request answered 504;
- a request body above `max_body_bytes` (Content-Length or chunked) gets 413; chunked
  request bodies are reassembled and forwarded with a Content-Length.

Slow clients cannot hold a connection for long (deadlines for the whole read, not for each
read: a client sending one byte a second would otherwise never time out): a request's line
and headers must arrive within `header_timeout_s` of its first byte, its body within
`body_timeout_s` of its headers (else 408 and the connection is closed); a connection with
no request started is closed after `idle_timeout_s`. A request the client cut off (its
headers or body end early) is answered 400 and never forwarded.

A backend that refused a connection, or left a request unanswered past the backend timeout
and does not answer its /readyz either (BentoML with every worker dead accepts connections
and answers nothing), is down: it gets no requests until a background probe of its /readyz
gets an answer or a new table is written (the control plane routes only versions it saw
ready), and while every routed backend is down a request gets 503 with Retry-After
at once instead of waiting the backend timeout (BackendHealth).

Every answer the router words itself (400, 408, 413, 503, 504) has the service's error
shape, `{"error": sentence, "detail": [{"loc": [...], "msg": ..., "type": ...}]}` as JSON,
and every 503, the backend's too, carries Retry-After. No version answering (each refused
the connection or hung up) is a 503 too, not a 502 the contract does not document: for the
client it is the same, nothing serves for now, retry. A request line above 65536 bytes gets
414, a header line above 65536 bytes or more than 100 headers 431, an HTTP version other than
1.x 505 (as mlstack.runtime.http_contract documents).

The serving core (mlstack.ops.local.router_server) is one event loop, uvloop when importable,
reading requests with httptools' HTTP/1.1 parser (else asyncio's loop and a pure-Python
parser, mlstack.ops.local.router_parser; `GET /-/router` says which, under "server"). A client
connection's requests are answered in order, pipelined ones too. Backend connections are kept
alive and pooled by backend (mlstack.ops.local.router_backends): any client's request reuses
an idle one, and a pooled connection the backend closed meanwhile gets the request once more
on a new one (a request that failed on a new connection may have been acted on: it is not sent
again). The table (mlstack.ops.local.router_table) is written by deploy with write_table.
"""

from __future__ import annotations

import argparse
import email.parser
import http.client
import re
from pathlib import Path

from mlstack.ops.local.router_admission import Admission, Answers
from mlstack.ops.local.router_backends import PROBE_EVERY_S, PROBE_TIMEOUT_S, BackendHealth
from mlstack.ops.local.router_http import HOP_BY_HOP, METHOD, SERVER, TARGET, error_body
from mlstack.ops.local.router_server import (
    DRAIN_LIMIT,
    LISTEN_BACKLOG,
    STALLED_AFTER_S,
    RouterServer,
)
from mlstack.ops.local.router_table import (
    LIMITS,
    BackendTable,
    ParsedTable,
    parse_table,
    write_table,
)

__all__ = ["DRAIN_LIMIT", "HOP_BY_HOP", "LIMITS", "LISTEN_BACKLOG", "METHOD", "PROBE_EVERY_S",
           "PROBE_TIMEOUT_S", "SERVER", "STALLED_AFTER_S", "TARGET", "Admission", "Answers",
           "BackendHealth", "BackendTable", "ParsedTable", "RouterServer", "error_body", "main",
           "parse_headers", "parse_table", "write_table"]

# one header line as nearly every client and backend sends it: a token name, a colon, a value
# on the same line (no obs-fold continuation, no empty name, no bare CR)
_PLAIN_HEADER = re.compile(rb"[!-9;-~]+:[^\r\n]*\r?\n")


def parse_headers(fp, _class=http.client.HTTPMessage):
    """http.client.parse_headers with the same answer, without the email package's feed
    parser for plain header lines (anything unusual, a folded line or a line without a name,
    goes to the email parser). The serving core reads heads with its HTTP parser
    (mlstack.ops.local.router_http); this stays for callers reading a head from a stream."""
    lines = http.client._read_headers(fp)
    if all(_PLAIN_HEADER.fullmatch(line) for line in lines[:-1]):
        msg = _class()
        for line in lines[:-1]:
            name, value = line.decode("iso-8859-1").split(":", 1)
            msg.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
        return msg
    return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    server = RouterServer((args.host, args.port), BackendTable(args.config))
    server.serve_forever()


if __name__ == "__main__":
    main()
