"""Sidecars of a local deployment: Prefect's server and the runner of the scheduled deployments (issue 19 part 1). Placeholder until it lands."""

from __future__ import annotations


def sidecars(paths, system) -> list:
    return []
