"""The Alertmanager configuration of a system's `monitoring.alerts` (monitoring/alertmanager.yml).

One receiver per declared alert, routed by the labels the generated Prometheus rules carry
(`system`, `severity` = page | ticket, `slo`): a subtree under `system="NAME"` an operator
can load as is or graft into an existing route tree. A page inhibits the ticket of the same
SLO. No secret is written here: Slack's webhook URL, PagerDuty's routing key, the SMTP
password and a webhook's bearer token are read by Alertmanager from the files the spec names
(`*_file` keys, Alertmanager 0.25+). A user value reaches the file only after lint checked its
shape, and as a YAML scalar written by the dumper, never spliced into text.
"""

from __future__ import annotations

from typing import Any

import yaml

from mlstack.codegen.backends.monitoring import _RulesDumper
from mlstack.codegen.backends.shared import header
from mlstack.frontend.ir.nodes import AlertNode, SystemIR

DEFAULT_RECEIVER = "default"  # no integrations: alerts no declared receiver asked for
PAGERDUTY_SEVERITY = '{{ if eq .CommonLabels.severity "page" }}critical{{ else }}warning{{ end }}'


def _integration(alert: AlertNode) -> dict:
    if alert.channel == "slack":
        return {"api_url_file": alert.secret_file, "channel": alert.to, "send_resolved": True}
    if alert.channel == "pagerduty":
        return {"routing_key_file": alert.secret_file, "severity": PAGERDUTY_SEVERITY,
                "send_resolved": True}
    if alert.channel == "email":
        config: dict[str, Any] = {"to": alert.to, "from": alert.sender, "smarthost": alert.smarthost,
                  "require_tls": True, "send_resolved": True}
        if alert.username is not None:
            config.update(auth_username=alert.username, auth_password_file=alert.secret_file)
        return config
    config = {"url": alert.to, "send_resolved": True, "max_alerts": 0}  # webhook
    if alert.secret_file is not None:
        config["http_config"] = {"authorization": {"type": "Bearer",
                                                   "credentials_file": alert.secret_file}}
    return config


def _severity_matcher(severity: tuple[str, ...]) -> str:
    """`severity="page"`, or a regex matcher over several (sorted) severities."""
    if len(severity) == 1:
        return f'severity="{severity[0]}"'
    return 'severity=~"' + "|".join(severity) + '"'


def receiver_name(system: SystemIR, alert: AlertNode) -> str:
    """`NAME-CHANNEL-N`: N counts the channel's alerts in the IR's (sorted) order."""
    same = [a for a in system.monitoring.alerts if a.channel == alert.channel]
    return f"{system.name}-{alert.channel}-{same.index(alert) + 1}"


def alertmanager_config(system: SystemIR) -> dict:
    """The Alertmanager configuration, as data."""
    receivers: list[dict[str, Any]] = [{"name": DEFAULT_RECEIVER}]
    routes: list[dict[str, Any]] = []
    for alert in system.monitoring.alerts:
        name = receiver_name(system, alert)
        receivers.append({"name": name, f"{alert.channel}_configs": [_integration(alert)]})
        routes.append({"receiver": name, "matchers": [_severity_matcher(alert.severity)],
                       "continue": True})
    return {
        "route": {
            "receiver": DEFAULT_RECEIVER,
            "group_by": ["alertname", "system", "slo"],
            "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h",
            "routes": [{"matchers": [f'system="{system.name}"'], "routes": routes}]},
        "inhibit_rules": [{"source_matchers": ['severity="page"'],
                           "target_matchers": ['severity="ticket"'],
                           "equal": ["system", "slo"]}],
        "receivers": receivers,
    }


def alertmanager_yaml(system: SystemIR) -> str:
    body = yaml.dump(alertmanager_config(system), Dumper=_RulesDumper, sort_keys=True,
                     default_flow_style=False, allow_unicode=True, width=68)
    return header(system) + "---\n" + body
