"""Serve the report's folder on 127.0.0.1 (only), with the same content security policy the
pages carry: nothing from outside the folder, no script."""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mlstack.diagnostics.errors import UsageError
from mlstack.ops.site.layout import CSP

HOST = "127.0.0.1"


class ReportHandler(SimpleHTTPRequestHandler):
    """Files of one folder; no request log (the verb says where it serves)."""

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base's name)
        pass


def docs_server(folder: Path | str, port: int = 8080) -> ThreadingHTTPServer:
    """A server for `folder` on 127.0.0.1:`port` (0: a free port), bound and not yet
    serving: call serve_forever(), and server_close() after."""
    handler = functools.partial(ReportHandler, directory=str(Path(folder).resolve()))
    try:
        return ThreadingHTTPServer((HOST, port), handler)
    except OSError as exc:
        raise UsageError(f"cannot serve on {HOST}:{port}: {exc.strerror or exc}",
                         "choose another --port (0 picks a free one)") from None


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    assert isinstance(host, str)  # bound to HOST, a str (typeshed allows bytes too)
    return f"http://{host}:{port}/"
