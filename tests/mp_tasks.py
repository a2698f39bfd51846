"""Work done in ``multiprocessing`` children by tests/test_delivery.py.

A module of its own so that children started with spawn or forkserver can
import the functions by name. Each child records one session of one action
and returns without flushing: what reaches the server got there through the
drain at the child's exit.
"""

from __future__ import annotations

import contextlib
import os

from layer_sdk import LayerAlreadyInitializedError, SessionActionKind, layer


def ensure_initialized() -> None:
    """init() from LAYER_* variables, unless the client came initialized through fork."""
    # Nothing leaves before the exit drain: flush_interval is longer than the test.
    with contextlib.suppress(LayerAlreadyInitializedError):
        layer.init(flush_interval=60.0, shutdown_timeout=5.0)


def record(n: int) -> int:
    """One session and one action, tagged with ``n`` and this process's pid."""
    ensure_initialized()
    session_id = layer.create_session(attributes={"n": n, "pid": os.getpid()})
    layer.append_action(session_id, kind=SessionActionKind.COMPLETION_PROMPT, data={"n": n})
    return os.getpid()
