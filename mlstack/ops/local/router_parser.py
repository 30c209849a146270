"""A small pure-Python HTTP/1.x parser with httptools' interface (the callbacks it calls and
the methods it has), for a router whose environment lacks httptools
(mlstack.ops.local.router_http). Strict where httptools is: a request line of a token method,
a visible-ASCII target and HTTP/d.d (HTTP/0.9's bare line too), header lines of a token name
(no folded lines), one Content-Length of digits and not with Transfer-Encoding, chunked
bodies. An answer without a length runs to the end of the connection (the caller ends it)."""

from __future__ import annotations

import re

REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+)(?: HTTP/(\d)\.(\d))?")
STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: (.*))?")
HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*)")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(?:;.*)?")


class ParserError(Exception):
    pass


class ParserUpgrade(ParserError):  # never raised: Upgrade is a hop-by-hop header here
    pass


class CallbackError(ParserError):
    pass


class _Parser:
    response = False

    def __init__(self, protocol) -> None:
        self.protocol = protocol
        self.buffer = b""
        self.state = "start"
        self.version = (1, 1)
        self.keep_alive = True
        # body bytes to come (by length, or of the current chunk); None: to the end
        self.left: int | None = 0
        self.headers: list[bytes] = []
        self.length: int | None = None
        self.chunked = False

    def _call(self, name: str, *args) -> None:
        callback = getattr(self.protocol, name, None)
        if callback is not None:
            try:
                callback(*args)
            except Exception as exc:
                raise CallbackError(f"`{name}` callback error") from exc

    def get_http_version(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def should_keep_alive(self) -> bool:
        return self.keep_alive

    def feed_data(self, data: bytes) -> None:
        self.buffer += data
        while self._step():
            pass

    def _line(self) -> bytes | None:
        end = self.buffer.find(b"\n")
        if end < 0:
            return None
        line, self.buffer = self.buffer[:end], self.buffer[end + 1:]
        return line[:-1] if line.endswith(b"\r") else line

    def _step(self) -> bool:
        if self.state == "start":
            if not self.buffer:
                return False
            self._call("on_message_begin")
            self.headers, self.length, self.chunked = [], None, False
            self.state = "first"
        if self.state == "first":
            line = self._line()
            if line is None:
                return False
            self._first_line(line)
            return True
        if self.state == "headers":
            line = self._line()
            if line is None:
                return False
            if line:
                self._header(line)
            else:
                self._headers_complete()
            return True
        if self.state == "body":
            if self.left == 0 and not self.chunked:
                self._complete()
                return True
            if self.left is None:  # to the end of the connection
                if self.buffer:
                    self._call("on_body", self.buffer)
                    self.buffer = b""
                return False
            return self._body()
        if self.state in ("size", "trailers", "chunk_end"):
            return self._chunk_framing()
        raise ParserError("data after the end of the message")

    def _header(self, line: bytes) -> None:
        found = HEADER.fullmatch(line)
        if found is None:
            raise ParserError("invalid header line")
        name, value = found.groups()
        lower = name.lower()
        if lower == b"content-length":
            if not value.strip().isdigit() or (
                    self.length is not None and self.length != int(value)):
                raise ParserError("invalid or duplicate Content-Length")
            self.length = int(value)
        elif lower == b"transfer-encoding":
            self.chunked = value.strip().lower().endswith(b"chunked")
        elif lower == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"close" in tokens:
                self.keep_alive = False
            elif b"keep-alive" in tokens:
                self.keep_alive = True
        self.headers.append(name)
        self._call("on_header", name, value)

    def _headers_complete(self) -> None:
        if self.chunked and self.length is not None:
            raise ParserError("Transfer-Encoding can't be present with Content-Length")
        self._call("on_headers_complete")
        self.state = "body"
        if self.chunked:
            self.state = "size"
        elif self.length is not None:
            self.left = self.length
        elif self.response and not self._bodiless():
            self.left, self.keep_alive = None, False
        else:
            self.left = 0

    def _body(self) -> bool:
        if not self.buffer or self.left is None:
            return False
        piece, self.buffer = self.buffer[:self.left], self.buffer[self.left:]
        self.left -= len(piece)
        self._call("on_body", piece)
        if self.left == 0:
            if self.chunked:
                self.state = "chunk_end"
            else:
                self._complete()
        return True

    def _chunk_framing(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if self.state == "chunk_end":
            if line:
                raise ParserError("a chunk is not followed by CRLF")
            self.state = "size"
        elif self.state == "size":
            found = CHUNK_SIZE.fullmatch(line)
            if found is None:
                raise ParserError("Invalid character in chunk size")
            self.left = int(found.group(1), 16)
            self.state = "trailers" if self.left == 0 else "body"
        elif not line:  # the blank line after the trailers
            self._complete()
        else:  # a trailer: called back as a header, as httptools does
            found = HEADER.fullmatch(line)
            if found is None:
                raise ParserError("invalid trailer line")
            self._call("on_header", *found.groups())
        return True

    def _complete(self) -> None:
        self.state = "start"
        self.left = 0
        self._call("on_message_complete")

    def _bodiless(self) -> bool:
        return False

    def _first_line(self, line: bytes) -> None:
        raise NotImplementedError


class RequestParser(_Parser):
    method = b""

    def get_method(self) -> bytes:
        return self.method

    def _first_line(self, line: bytes) -> None:
        found = REQUEST_LINE.fullmatch(line)
        if found is None:
            raise ParserError("Invalid request line")
        self.method, target, major, minor = found.groups()
        self._call("on_url", target)
        if major is None:  # HTTP/0.9: a bare request line, no headers
            self.version, self.keep_alive = (0, 9), False
            self.state, self.left = "body", 0
            self._call("on_headers_complete")
            return
        self.version = (int(major), int(minor))
        self.keep_alive = self.version >= (1, 1)
        self.state = "headers"


class ResponseParser(_Parser):
    response = True
    status = 0

    def get_status_code(self) -> int:
        return self.status

    def _first_line(self, line: bytes) -> None:
        found = STATUS_LINE.fullmatch(line)
        if found is None:
            raise ParserError("Invalid status line")
        major, minor, status, reason = found.groups()
        self.version, self.status = (int(major), int(minor)), int(status)
        self.keep_alive = self.version >= (1, 1)
        self._call("on_status", reason or b"")
        self.state = "headers"

    def _bodiless(self) -> bool:
        return self.status < 200 or self.status in (204, 304)
