"""The monitoring flow's gauges pushed to a Prometheus Pushgateway: how they reach
Prometheus where the flow runs as a batch job (the kubernetes target's flows are Kubernetes
jobs whose state folder is an emptyDir), as Prometheus's docs advise for batch jobs.

The kubernetes stack runs a Pushgateway and names it to the flows' jobs in
$MLSTACK_PUSHGATEWAY_URL; without it nothing is pushed (locally the exporter sidecar serves
the same gauges from the report file). The gauges are monitoring_gauges.report_samples of the
report, the exporter's: the same names and labels, and no value that is an age (Prometheus
computes ages from the pushed times), so a value frozen until the next push stays true.

Each push replaces the group job="mlstack-monitoring", system="<system>" (HTTP PUT): a view,
feature or version gone from the report is gone from the gateway too. Prometheus scrapes the
gateway with `honor_labels: true`, keeping these labels. A push that fails (the gateway down,
refused, slow) logs a warning and returns False: the monitoring flow never fails for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.core import GaugeMetricFamily

from mlstack.runtime.logs import Logger, logger_for
from mlstack.runtime.monitoring_gauges import HELP, Sample, report_samples

__all__ = ["JOB", "PUSHGATEWAY_ENV", "push_report"]

PUSHGATEWAY_ENV = "MLSTACK_PUSHGATEWAY_URL"  # e.g. http://churn-pushgateway.churn.svc:9091
JOB = "mlstack-monitoring"  # the group's job label
TIMEOUT_SECONDS = 10.0


class _Gauges:
    """Fixed samples as a collector: a gauge family per name, with its HELP."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, labels, value in self.samples:
            if name not in families:
                families[name] = GaugeMetricFamily(name, HELP[name], labels=sorted(labels))
            families[name].add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()


def push_report(report: Mapping[str, Any] | None, system: str, url: str | None = None,
                timeout: float = TIMEOUT_SECONDS, logger: Logger | None = None) -> bool:
    """Push a monitoring report's gauges to the Pushgateway at `url` (else
    $MLSTACK_PUSHGATEWAY_URL), replacing the system's group. True when pushed; False when
    no gateway is named (nothing to do) or the push failed (a warning says why). Never
    raises for the gateway."""
    url = url if url is not None else os.environ.get(PUSHGATEWAY_ENV, "").strip()
    if not url:
        return False
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Gauges(report_samples(report, system)))
        push_to_gateway(url, job=JOB, registry=registry, grouping_key={"system": system},
                        timeout=timeout)
    except Exception as error:  # any failure to push (refused, HTTP 4xx/5xx, a timeout, a
        # malformed URL) leaves the flow and its report as they are
        logger_for(logger).warning(
            "monitoring gauges not pushed to the Pushgateway at %s (%s: %s); the report is "
            "written, and Prometheus keeps the last pushed values until a push succeeds",
            url, type(error).__name__, error)
        return False
    return True
