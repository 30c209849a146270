"""The errors a generated pipeline fails with on purpose (not bugs, not transient).

The flows' retry condition (`mlstack.runtime.hooks.retry_unless_final`) does not retry
DataCheckError, QualityGateError or ModelExportError: running again on the same data gives the same result.
`mlstack deploy` reports them by class name and message.
"""

from __future__ import annotations

__all__ = ["DataCheckError", "ModelExportError", "MonitoringAlert", "QualityGateError"]


class DataCheckError(Exception):
    """A source failed a data check of the spec. Not retried: the data has to change."""


class QualityGateError(Exception):
    """The trained model failed a quality gate of the spec. Not retried."""


class MonitoringAlert(Exception):
    """The monitoring flow found a problem and was asked to fail on it."""


class ModelExportError(Exception):
    """serving.runtime is onnx and the model's ONNX export failed or differs from the
    native model on the evaluation set. Not retried: the model or the setting has to change."""
