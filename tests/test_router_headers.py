"""The router's header parser (mlstack.ops.local.router.parse_headers) answers what
http.client.parse_headers (the email package's parser) answers, for plain heads and for the
unusual ones it hands to that parser."""

from __future__ import annotations

import http.client
import io

import pytest

from mlstack.ops.local.router import parse_headers

HEADS = [
    b"Host: a\r\nContent-Length: 3\r\nX-A:  spaced value  \r\n\r\n",
    b"Host: a\nX-Tab:\tv\n\n",  # bare LF line ends, a tab before the value
    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",  # repeated headers keep their order
    b"X-Empty:\r\n\r\n",
    b"X-Latin: \xe9t\xe9\r\n\r\n",
    b"Host: a\r\n folded\r\n continued\r\n\r\n",  # obs-fold: to the email parser
    b":no-name\r\nHost: a\r\n\r\n",
    b"not a header\r\nHost: a\r\n\r\n",
    b"X: a\rb\r\n\r\n",  # a bare CR inside a value
    b"Host: a\r\n",  # the head cut off before its blank line
    b"Host: a",  # and inside its last line
    b"\r\n",
]


@pytest.mark.parametrize("head", HEADS)
def test_the_router_parses_a_head_as_http_client_does(head):
    ours, theirs = parse_headers(io.BytesIO(head)), http.client.parse_headers(io.BytesIO(head))
    assert ours.items() == theirs.items()
    assert ours.get_all("set-cookie") == theirs.get_all("set-cookie")
    assert ours.get("content-length") == theirs.get("content-length")


def test_the_body_after_the_head_is_left_unread():
    stream = io.BytesIO(b"Content-Length: 4\r\n\r\nbody")
    assert parse_headers(stream)["Content-Length"] == "4"
    assert stream.read() == b"body"
