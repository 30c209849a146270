"""The errors a generated pipeline fails with on purpose (not bugs, not transient).

The flows' retry condition (`mlstack.runtime.hooks.retry_unless_final`) does not retry
DataCheckError or QualityGateError: running again on the same data gives the same result.
`mlstack deploy` reports them by class name and message.
"""

from __future__ import annotations

__all__ = ["DataCheckError", "MonitoringAlert", "QualityGateError"]


class DataCheckError(Exception):
    """A source failed a data check of the spec. Not retried: the data has to change."""


class QualityGateError(Exception):
    """The trained model failed a quality gate of the spec. Not retried."""


class MonitoringAlert(Exception):
    """The monitoring flow found a problem and was asked to fail on it."""
