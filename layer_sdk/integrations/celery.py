"""Celery: each task runs in a Layer session, and a worker process delivers before it ends.

::

    app = Celery("tasks", broker=...)
    layer.init()
    instrument(app)

A task's session is picked as ``_sessions`` says: the ``session_id=``
function of the task, else the session the caller named in the task's
``layer_session_id`` header (``task.apply_async(args, headers={SESSION_HEADER:
session_id})``), else a new session, created when the task records its
first action. It is current from Celery's ``task_prerun`` to its
``task_postrun`` signal: the task's body, its ``@layer.action`` functions
and its OpenAI/Anthropic calls join it.

Delivery. A pool child process of the prefork pool ends with ``os._exit``,
past ``atexit`` and the SDK's exit drain: its queue is flushed on Celery's
``worker_process_shutdown`` signal, bounded by ``flush_timeout`` (the main
process drains at exit as any other). With ``flush_after_task=True`` the
queue is also flushed after each task, bounded the same way: slower tasks,
for workers that may be killed without warning.

A session named by the caller must have reached Layer before the task
records into it (create it with ``sync=True``, or ``flush()`` before
sending the task), or the task's actions are refused as actions of an
unknown session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery, Task, signals

from .. import layer
from .._client import Client
from .._config import DEFAULT_SHUTDOWN_TIMEOUT
from .._context import current_session_id
from ._sessions import SessionPicker, describe, throttled_log

__all__ = ["SESSION_HEADER", "instrument", "task_attributes", "uninstrument"]

logger = logging.getLogger("layer_sdk")

SESSION_HEADER = "layer_session_id"
"""The task header by which a caller names the session of a task."""

_TOKEN = "layer_sdk_session_token"  # where a running task keeps its binding, on its request


def task_attributes(task: Task) -> dict[str, str]:
    """The session attributes of a task by default: ``celery.task_name``, ``celery.task_id``."""
    return {"celery.task_name": str(task.name), "celery.task_id": str(task.request.id)}


class _Hooks:
    """The signal receivers of one instrumented Celery app."""

    def __init__(
        self,
        app: Celery,
        client: Client,
        session_id: Callable[[Task], Any] | None,
        attributes: Callable[[Task], Mapping[str, Any]],
        flush_after_task: bool,
        flush_timeout: float,
    ) -> None:
        self.app = app
        self.client = client
        self.picker = SessionPicker[Task](
            client,
            where="Celery integration",
            named_by=f"the task's {SESSION_HEADER} header",
            session_id=session_id,
            attributes=attributes,
        )
        self.flush_after_task = flush_after_task
        self.flush_timeout = flush_timeout

    def task_started(self, sender: Any = None, task: Task | None = None, **_: Any) -> None:
        if task is None or task.app is not self.app:
            return
        try:
            session = self.picker.pick(task, _named_session(task.request))
            setattr(task.request, _TOKEN, current_session_id.set(session))
        except Exception as problem:  # a bug of ours costs the session, not the task
            throttled_log.warn(
                "Celery integration:bug",
                "layer-sdk Celery integration failed (%s); the task runs without a session",
                describe(problem),
            )

    def task_ended(self, sender: Any = None, task: Task | None = None, **_: Any) -> None:
        if task is None or task.app is not self.app:
            return
        token = getattr(task.request, _TOKEN, None)
        if token is not None:
            delattr(task.request, _TOKEN)
            try:
                current_session_id.reset(token)
            except ValueError:  # ended in another context than it started: unbind here
                current_session_id.set(None)
        if self.flush_after_task:
            self._flush(f"after the task {task.name}")

    def process_ending(self, sender: Any = None, **_: Any) -> None:
        self._flush("as the worker process ends")

    def _flush(self, when: str) -> None:
        try:
            delivered = self.client.flush(timeout=self.flush_timeout)
        except Exception as problem:
            logger.warning("layer-sdk Celery integration: flush %s failed: %s", when, problem)
            return
        if not delivered:
            throttled_log.warn(
                f"Celery integration:flush {when}",
                "layer-sdk Celery integration: not every event was delivered within %s s %s "
                "(%d still queued)",
                self.flush_timeout,
                when,
                self.client.stats().queued,
            )


#: The hooks of each instrumented app, by id(app).
_instrumented: dict[int, _Hooks] = {}


def instrument(
    app: Celery,
    *,
    client: Client | None = None,
    session_id: Callable[[Task], Any] | None = None,
    attributes: Callable[[Task], Mapping[str, Any]] = task_attributes,
    flush_after_task: bool = False,
    flush_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
) -> None:
    """Run each task of ``app`` in a Layer session; flush as its worker processes end.

    ``client``: the client sessions are created with (default: ``layer``).
    ``session_id``: a function of the task (read ``task.request``) that
    returns the ID of an existing session or None; asked before the task's
    ``layer_session_id`` header. ``attributes``: a function of the task that
    returns a new session's attributes (default: :func:`task_attributes`).
    ``flush_after_task``: flush after every task too. ``flush_timeout``: the
    most each flush waits, in seconds. Instrumenting an app again replaces
    its options.
    """
    if isinstance(flush_timeout, bool) or not isinstance(flush_timeout, (int, float)):
        raise TypeError(f"flush_timeout must be a number of seconds, got {flush_timeout!r}")
    if not flush_timeout >= 0:
        raise ValueError(f"flush_timeout must be >= 0 seconds, got {flush_timeout!r}")
    hooks = _Hooks(
        app,
        layer if client is None else client,
        session_id,
        attributes,
        bool(flush_after_task),
        float(flush_timeout),
    )
    uninstrument(app)
    _instrumented[id(app)] = hooks
    uid = f"layer_sdk:{id(app)}"
    signals.task_prerun.connect(hooks.task_started, weak=False, dispatch_uid=uid)
    signals.task_postrun.connect(hooks.task_ended, weak=False, dispatch_uid=uid)
    signals.worker_process_shutdown.connect(hooks.process_ending, weak=False, dispatch_uid=uid)


def uninstrument(app: Celery) -> None:
    """Undo :func:`instrument` for ``app`` (no-op when it was not instrumented)."""
    hooks = _instrumented.pop(id(app), None)
    if hooks is None:
        return
    uid = f"layer_sdk:{id(app)}"
    signals.task_prerun.disconnect(hooks.task_started, dispatch_uid=uid)
    signals.task_postrun.disconnect(hooks.task_ended, dispatch_uid=uid)
    signals.worker_process_shutdown.disconnect(hooks.process_ending, dispatch_uid=uid)


def _named_session(request: Any) -> Any:
    """The session a task's caller named in its headers, or None.

    A worker gives the message's headers as attributes of the request; a task
    run eagerly (``apply()``) only in ``request.headers``.
    """
    value = getattr(request, SESSION_HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, Mapping):
            value = headers.get(SESSION_HEADER)
    return value
