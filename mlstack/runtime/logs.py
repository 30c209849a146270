"""Where the runtime logs: the caller's logger, else Prefect's run logger inside a flow or
task run (so the lines show in the Prefect UI and the run's logs), else the standard
`logging` logger "mlstack.runtime"."""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["LOGGER_NAME", "logger_for"]

LOGGER_NAME = "mlstack.runtime"
Logger = logging.Logger | logging.LoggerAdapter[Any]


def logger_for(logger: Logger | None = None) -> Logger:
    """`logger` when given; else the current Prefect run's logger when Prefect is loaded and
    a run is active; else logging.getLogger("mlstack.runtime")."""
    if logger is not None:
        return logger
    if "prefect" in sys.modules:  # never import Prefect just to log
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        try:
            return get_run_logger()
        except MissingContextError:
            pass
    return logging.getLogger(LOGGER_NAME)
