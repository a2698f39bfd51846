"""Where the SDK's log lines go: stderr by default, the application's handlers when it has any.

Everything the SDK logs goes to the ``layer_sdk`` logger. It has no handler
of its own, not even a ``NullHandler``: when the application configured no
logging, Python's last-resort handler (``logging.lastResort``) prints WARNING
and above to stderr, one line per record, as it does for any library. Once
the application configures logging (``logging.basicConfig``, a handler on
``layer_sdk`` or on the root logger, ``propagate = False`` with a handler),
its handlers take every line and the last resort prints nothing: exactly one
line per record either way. To silence the SDK, raise the logger's level
(``logging.getLogger("layer_sdk").setLevel(logging.ERROR)``) or give it a
``NullHandler``.

``debug=True`` (``LAYER_DEBUG=1``) turns the logger to DEBUG and adds a
``DebugHandler`` that writes to stderr each record that no handler of the
application takes (by the same walk up the loggers as ``Logger.callHandlers``).
So with no logging configured, every line reaches stderr through it; with a
handler of the application's at DEBUG, that handler writes it; and no line
is ever written twice. The last client with ``debug=True`` to shut down
removes the handler and gives the logger its level back.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger("layer_sdk")

#: How a line of the debug handler looks: the level, then the message (which names the SDK).
DEBUG_FORMAT = "%(levelname)s %(message)s"


class DebugHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stderr what no other handler of the logger's chain takes."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(DEBUG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if not self._taken_elsewhere(record):
            # The stderr of the moment, as the last resort writes to (it may be replaced).
            self.stream = sys.stderr
            super().emit(record)

    def _taken_elsewhere(self, record: logging.LogRecord) -> bool:
        """Whether another handler on the way from ``record``'s logger up writes it."""
        current: logging.Logger | None = logging.getLogger(record.name)
        while current is not None:
            for handler in current.handlers:
                if (
                    handler is not self
                    and not isinstance(handler, logging.NullHandler)
                    and record.levelno >= handler.level
                ):
                    return True
            current = current.parent if current.propagate else None
        return False


class _DebugLogging:
    """The debug handler, installed while at least one client has ``debug=True``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._handler: DebugHandler | None = None
        self._level = logging.NOTSET
        os.register_at_fork(after_in_child=self._new_lock)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """A client with ``debug=True`` starts: DEBUG lines on stderr from now on."""
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self._level = logger.level
            self._handler = DebugHandler()
            logger.addHandler(self._handler)
            logger.setLevel(logging.DEBUG)

    def release(self) -> None:
        """That client shut down: the last one removes the handler and restores the level."""
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users or self._handler is None:
                return
            logger.removeHandler(self._handler)
            self._handler = None
            logger.setLevel(self._level)


debug_logging = _DebugLogging()
