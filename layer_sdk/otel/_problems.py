"""Failures of ours while reading spans: logged, throttled, never raised into the tracer."""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger("layer_sdk")


class Problems:
    """The first failure of each kind is a warning (with its traceback), later ones debug lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        os.register_at_fork(after_in_child=self._restart_in_child)

    def _restart_in_child(self) -> None:
        """A fresh lock: the reader thread of a span processor may have held it at fork."""
        self._lock = threading.Lock()

    def __call__(self, where: str, exc: BaseException) -> None:
        with self._lock:
            first = where not in self._reported
            self._reported.add(where)
        if not first:
            logger.debug("layer-sdk: OpenTelemetry span processing failed while %s: %r", where, exc)
            return
        logger.warning(
            "layer-sdk could not record an OpenTelemetry span: it failed while %s (%s: %s); "
            "the application and its tracing are not affected. Further failures of this "
            "kind are logged at debug level.",
            where,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )


#: One for the process: the processors' and the completion hook's failures.
PROBLEMS = Problems()
