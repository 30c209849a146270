"""Alert checks: each `monitoring.alerts` entry carries what its Alertmanager receiver needs.

Every value checked here reaches monitoring/alertmanager.yml, so it is held to a plain shape
(a Slack channel name, an address, an http(s) URL without credentials, an absolute path) and
every mistake is MLS103 at the key that holds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from mlstack.diagnostics.diagnostic import Diagnostic
from mlstack.frontend.checks import CheckContext, node_path
from mlstack.frontend.ir.nodes import AlertNode
from mlstack.frontend.loader import Path_ as SpecPath

SLACK_CHANNEL = re.compile(r"[#@][a-z0-9][a-z0-9._-]{0,79}")
EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
HOST_PORT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?:[0-9]{1,5}")
SECRET_PATH = re.compile(r"/[A-Za-z0-9._/-]+")
EMAIL_ONLY = ("smarthost", "sender", "username")
WHAT_TO = {"slack": "a '#channel' or '@user' (lower-case letters, digits, '.', '_', '-')",
           "email": "an email address", "webhook": "an http(s) URL"}


def _url_problem(url: str) -> str | None:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "holds whitespace or a control character"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "carries credentials (user:password@): put a bearer token in secret_file"
    return None


def _to_problem(channel: str, to: str) -> str | None:
    if channel == "slack" and not SLACK_CHANNEL.fullmatch(to):
        return f"is not {WHAT_TO['slack']}"
    if channel == "email" and not EMAIL.fullmatch(to):
        return f"is not {WHAT_TO['email']}"
    if channel == "webhook":
        return _url_problem(to)
    return None


def check_alerts(ctx: CheckContext) -> Iterator[Diagnostic]:
    """MLS103 for an alert missing what its channel needs or holding a malformed value."""
    for alert in ctx.system.monitoring.alerts:
        at = node_path(alert)
        if alert.channel == "pagerduty":
            if alert.to is not None:
                yield ctx.diag("MLS103", "a pagerduty alert takes no 'to': PagerDuty routes by "
                               "the routing key in secret_file", at + ("to",), "remove to")
        elif alert.to is None:
            yield ctx.diag("MLS103", f"a {alert.channel} alert needs 'to': "
                           f"{WHAT_TO[alert.channel]}", at, "add to", key=True)
        elif (problem := _to_problem(alert.channel, alert.to)) is not None:
            yield ctx.diag("MLS103", f"{alert.channel} alert 'to' {problem}",
                           at + ("to",), f"expected {WHAT_TO[alert.channel]}")
        if alert.channel == "email":
            yield from _email(ctx, alert, at)
        else:
            for key in EMAIL_ONLY:
                if getattr(alert, key) is not None:
                    yield ctx.diag("MLS103", f"'{key}' applies to email alerts only, not "
                                   f"{alert.channel}", at + (key,), f"remove {key}")
        secret = alert.secret_file
        if secret is not None and (not SECRET_PATH.fullmatch(secret)
                                   or ".." in secret.split("/")):
            yield ctx.diag("MLS103", f"secret_file {secret!r} is not an absolute path of "
                           "letters, digits, '.', '_', '-' and '/' (without '..')",
                           at + ("secret_file",), "e.g. /etc/alertmanager/secrets/slack-api-url")


def _email(ctx: CheckContext, alert: AlertNode, at: SpecPath) -> Iterator[Diagnostic]:
    if alert.smarthost is None:
        yield ctx.diag("MLS103", "an email alert needs 'smarthost', the SMTP server as "
                       "host:port", at, "add smarthost: smtp.example.com:587", key=True)
    elif not HOST_PORT.fullmatch(alert.smarthost):
        yield ctx.diag("MLS103", f"smarthost {alert.smarthost!r} is not host:port",
                       at + ("smarthost",), "e.g. smtp.example.com:587")
    if alert.sender is None:
        yield ctx.diag("MLS103", "an email alert needs 'sender', the From address", at,
                       "add sender: alerts@example.com", key=True)
    elif not EMAIL.fullmatch(alert.sender):
        yield ctx.diag("MLS103", f"sender {alert.sender!r} is not an email address",
                       at + ("sender",), "e.g. alerts@example.com")
    if (alert.username is None) != (alert.secret_file is None):
        key = "username" if alert.username is not None else "secret_file"
        yield ctx.diag("MLS103", "an email alert logs in with username and the password in "
                       "secret_file: give both or neither", at + (key,),
                       "add the other, or remove this one")
