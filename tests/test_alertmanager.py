"""monitoring.alerts compiles into monitoring/alertmanager.yml.

A spec with every channel compiles to a configuration `amtool check-config` accepts (amtool
comes from Debian's `prometheus-alertmanager` package, which scripts/test.sh installs), routed
by the severity labels the generated Prometheus rules carry, with no secret in the file:
each is a `*_file` key. Lint refuses a malformed value at the key that holds it.
"""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest
import yaml

from mlstack.codegen.backends import CompileOptions
from mlstack.codegen.backends.monitoring import SEVERITIES, MonitoringBackend, rule_groups
from mlstack.frontend.analysis import analyze_spec, require_system
from mlstack.frontend.loader import load_spec_file
from tests.conftest import BLUEPRINTS

CHURN = load_spec_file(BLUEPRINTS / "churn" / "mlstack.yaml").data
HOOK = "http://127.0.0.1:9095/alerts?team=ml&x='q'"
EVERY_CHANNEL = [
    {"channel": "webhook", "to": HOOK, "secret_file": "/run/secrets/hook-token"},
    {"channel": "slack", "to": "#ml-alerts", "severity": ["ticket"]},
    {"channel": "email", "to": "oncall@example.com", "smarthost": "smtp.example.com:587",
     "sender": "alerts@example.com", "username": "alerts",
     "secret_file": "/etc/alertmanager/secrets/smtp-password"},
    {"channel": "pagerduty", "severity": ["page"]},
]


def write_spec(folder, alerts, **slos):
    doc = copy.deepcopy(CHURN)
    doc["monitoring"]["alerts"] = alerts
    doc["slos"].update(slos)
    spec = folder / "mlstack.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def render(spec) -> tuple[str, dict]:
    system = require_system(spec)[0]
    tree = MonitoringBackend().render(system, CompileOptions())
    return tree["monitoring/alertmanager.yml"].decode(), {"system": system}


def test_amtool_accepts_every_channel(tmp_path):
    assert shutil.which("amtool"), "amtool: Debian's prometheus-alertmanager package"
    text, _ = render(write_spec(tmp_path, EVERY_CHANNEL))
    path = tmp_path / "alertmanager.yml"
    path.write_text(text)
    done = subprocess.run(["amtool", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 receivers" in done.stdout and "1 inhibit rules" in done.stdout


def test_one_receiver_per_alert_with_secrets_in_files(tmp_path):
    text, _ = render(write_spec(tmp_path, EVERY_CHANNEL))
    doc = yaml.safe_load(text)
    receivers = {r["name"]: r for r in doc["receivers"]}
    assert sorted(receivers) == ["churn-email-1", "churn-pagerduty-1", "churn-slack-1",
                                 "churn-webhook-1", "default"]
    hook = receivers["churn-webhook-1"]["webhook_configs"][0]
    assert hook["url"] == HOOK  # a user value comes back as the same literal
    assert hook["http_config"]["authorization"]["credentials_file"] == "/run/secrets/hook-token"
    slack = receivers["churn-slack-1"]["slack_configs"][0]
    assert slack == {"api_url_file": "/etc/alertmanager/secrets/slack-api-url",
                     "channel": "#ml-alerts", "send_resolved": True}
    pager = receivers["churn-pagerduty-1"]["pagerduty_configs"][0]
    assert pager["routing_key_file"] == "/etc/alertmanager/secrets/pagerduty-routing-key"
    mail = receivers["churn-email-1"]["email_configs"][0]
    assert (mail["to"], mail["from"], mail["smarthost"], mail["auth_username"],
            mail["auth_password_file"]) == ("oncall@example.com", "alerts@example.com",
                                            "smtp.example.com:587", "alerts",
                                            "/etc/alertmanager/secrets/smtp-password")
    inline = {"api_url", "routing_key", "service_key", "auth_password", "credentials"}
    for receiver in doc["receivers"]:
        for key, configs in receiver.items():
            if key.endswith("_configs"):
                assert not inline & set(configs[0]), receiver


def test_routes_follow_the_rules_severity_labels(tmp_path):
    spec = write_spec(tmp_path, EVERY_CHANNEL, availability=99.9, feature_freshness="1h")
    text, out = render(spec)
    rule_severities = {r["labels"]["severity"] for g in rule_groups(out["system"])
                       for r in g["rules"] if "alert" in r}
    assert rule_severities == set(SEVERITIES)
    route = yaml.safe_load(text)["route"]
    (system_route,) = route["routes"]
    assert system_route["matchers"] == ['system="churn"']
    rule_labels = {r["labels"]["system"] for g in rule_groups(out["system"]) for r in g["rules"]}
    assert rule_labels == {"churn"}

    def receivers_for(severity: str) -> set[str]:
        got = set()
        for child in system_route["routes"]:
            assert child["continue"] is True
            (matcher,) = child["matchers"]
            label, _, value = matcher.partition("=~" if "=~" in matcher else "=")
            assert label == "severity"
            values = value.strip('"').split("|")
            if severity in values:
                got.add(child["receiver"])
        return got

    assert receivers_for("page") == {"churn-email-1", "churn-pagerduty-1", "churn-webhook-1"}
    assert receivers_for("ticket") == {"churn-email-1", "churn-slack-1", "churn-webhook-1"}


def test_deterministic_and_independent_of_spec_order(tmp_path):
    one, two = tmp_path / "a", tmp_path / "b"
    one.mkdir(), two.mkdir()
    first = render(write_spec(one, EVERY_CHANNEL))[0]
    assert render(write_spec(one, EVERY_CHANNEL))[0] == first
    assert render(write_spec(two, list(reversed(EVERY_CHANNEL))))[0] == first


def test_no_alerts_no_file(tmp_path):
    system = require_system(write_spec(tmp_path, []))[0]
    assert "monitoring/alertmanager.yml" not in MonitoringBackend().render(
        system, CompileOptions())


BAD = {
    "webhook not http": ({"channel": "webhook", "to": "ftp://h/x"}, "to"),
    "webhook password": ({"channel": "webhook", "to": "https://u:p@h/x"}, "to"),
    "webhook newline": ({"channel": "webhook", "to": "https://h/x\nurl: http://evil"}, "to"),
    "slack no hash": ({"channel": "slack", "to": "ml-alerts"}, "to"),
    "slack no to": ({"channel": "slack"}, None),
    "pagerduty to": ({"channel": "pagerduty", "to": "svc"}, "to"),
    "email address": ({"channel": "email", "to": "x", "smarthost": "s:25",
                       "sender": "a@b.io"}, "to"),
    "email no smarthost": ({"channel": "email", "to": "a@b.io", "sender": "a@b.io"}, None),
    "email bad smarthost": ({"channel": "email", "to": "a@b.io", "smarthost": "smtp",
                             "sender": "a@b.io"}, "smarthost"),
    "email no sender": ({"channel": "email", "to": "a@b.io", "smarthost": "s:25"}, None),
    "email login without password": ({"channel": "email", "to": "a@b.io", "smarthost": "s:25",
                                      "sender": "a@b.io", "username": "u"}, "username"),
    "smarthost on slack": ({"channel": "slack", "to": "#x", "smarthost": "s:25"}, "smarthost"),
    "relative secret": ({"channel": "slack", "to": "#x", "secret_file": "secrets/url"},
                        "secret_file"),
    "secret dotdot": ({"channel": "slack", "to": "#x", "secret_file": "/etc/../root/k"},
                      "secret_file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_lint_refuses_a_bad_alert_at_its_key(tmp_path, case):
    alert, key = BAD[case]
    analysis = analyze_spec(write_spec(tmp_path, [{"channel": "slack", "to": "#ok"}, alert]))
    errors = [d for d in analysis.diagnostics if d.code == "MLS103"]
    assert [d.pointer for d in errors] == ["/monitoring/alerts/1" + (f"/{key}" if key else "")]
    assert errors[0].location.line > 1  # the line of the key, not the file's start


def test_every_channel_lints_clean(tmp_path):
    analysis = analyze_spec(write_spec(tmp_path, EVERY_CHANNEL))
    assert [d for d in analysis.diagnostics if d.pointer.startswith("/monitoring")] == []


def test_the_report_lists_the_alerts_of_every_channel(tmp_path):
    """`mlstack docs` reads the structured alerts (it unpacked (channel, to) pairs before)."""
    from mlstack.ops.site.build import build_site

    shutil.copytree(BLUEPRINTS / "churn" / "data", tmp_path / "data")
    write_spec(tmp_path, EVERY_CHANNEL)
    page = next(text.decode() for name, text in build_site(tmp_path).files.items()
                if "monitoring" in name)
    for shown in ("webhook: http://127.0.0.1:9095/alerts", "slack: #ml-alerts",
                  "email: oncall@example.com", "pagerduty: -"):
        assert shown in page.replace("&#x27;", "'"), shown
