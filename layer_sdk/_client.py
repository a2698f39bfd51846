"""The client: the public calls, and the lifecycle of the exporter behind them.

A call reads top to bottom: validate and encode on the caller's thread
(``_schemas``), hand the bytes to the ``ExportQueue`` (``_queue``), from which
the ``ExportWorker``'s threads (``_worker``) send them through the shared
``Transport`` (``_transport``). ``sync=True`` skips the queue and sends through
the same transport right away.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from . import _decorators, instrumentation
from ._config import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_FLUSH_TIMEOUT,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_PIPELINED_REQUESTS,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_TIME,
    DEFAULT_SHUTDOWN_TIMEOUT,
    Config,
    DropCallback,
)
from ._exceptions import (
    LayerAlreadyInitializedError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
    LayerRequestPreparationError,
    LayerSchemaValidationError,
)
from ._export._losses import RECURSION, TOO_LARGE, LossLog
from ._export._queue import WAKE, Event, ExportQueue, ExportStats
from ._export._transport import Response, Transport
from ._export._worker import ExportWorker, sdk_thread
from ._platform import platform_attributes
from ._redact import mask_url
from ._schemas import (
    SessionActionKind,
    SessionActionRequest,
    SessionIdFactory,
    SessionRequest,
    action_body,
    client_session_id,
    encode,
    session_attributes,
    session_body,
    session_id_text,
    utc,
)

if TYPE_CHECKING:
    import requests

    from ._auth import AuthProvider

logger = logging.getLogger("layer_sdk")

F = TypeVar("F", bound=Callable[..., Any])


class _Exporter:
    """Everything one ``init()`` builds; replaced as a whole after fork or re-init."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.attributes = platform_attributes(config.environment, config.platform)
        self.new_session_id = SessionIdFactory(config.application_id)
        self.losses = LossLog(config.on_drop)
        self.sync = config.sync
        self.queue = ExportQueue(
            max_events=config.max_queue_size,
            max_bytes=config.max_queue_bytes,
            max_event_bytes=config.max_event_bytes,
            batch_size=config.max_batch_size,
            max_request_bytes=config.max_request_bytes,
            max_pipelined=config.max_pipelined_requests,
            flush_interval=config.flush_interval,
            on_loss=self.losses,
        )
        self.transport = Transport(config)
        self.worker = ExportWorker(
            self.queue,
            self.transport,
            max_senders=config.max_concurrent_requests,
            losses=self.losses,
        )
        self.worker.start()


class Client:
    """A Layer API client. ``layer`` is the default instance; more can be built."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The latest exporter. After shutdown it stays, its door shut: late calls
        # are counted as dropped and stats() still answers.
        self._exporter: _Exporter | None = None

    def __repr__(self) -> str:
        exporter = self._exporter
        if exporter is None:
            return "Client(not initialized)"
        state = "shut down" if exporter.queue.closed else "running"
        return f"Client(base_url={mask_url(exporter.config.base_url)!r}, {state})"

    # -- lifecycle -------------------------------------------------------------

    def init(
        self,
        *,
        base_url: str | None = None,
        application_id: str | None = None,
        environment: str | None = None,
        auth_provider: AuthProvider | None = None,
        http_session: requests.Session | None = None,
        http_timeout: float | None = None,
        platform: str | None = None,
        disable_instrumentations: Iterable[str] | None = None,
        disabled_instrumentors: Iterable[str] | None = None,
        sync: bool = False,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_time: float = DEFAULT_MAX_RETRY_TIME,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_pipelined_requests: int = DEFAULT_MAX_PIPELINED_REQUESTS,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        on_drop: DropCallback | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        """Configure the client and start its background worker.

        Arguments left out fall back to the ``LAYER_*`` environment variables.
        Raises ``LayerMissingRequiredConfigurationError`` naming a missing
        setting, ``ValueError`` for an invalid one, and
        ``LayerAlreadyInitializedError`` unless the client is new or shut down.
        With an ``auth_provider``, a plain ``http://`` base URL to another
        machine is refused (the token would be readable on the network)
        unless ``allow_insecure_http=True``.
        """
        if disabled_instrumentors is not None:
            disable_instrumentations = [*(disable_instrumentations or ()), *disabled_instrumentors]
        with self._lock:
            if self._exporter is not None and not self._exporter.queue.closed:
                raise LayerAlreadyInitializedError(
                    "this client is already initialized; call shutdown() before init() again"
                )
            config = Config.resolve(
                base_url=base_url,
                application_id=application_id,
                environment=environment,
                auth_provider=auth_provider,
                http_session=http_session,
                http_timeout=http_timeout,
                platform=platform,
                disable_instrumentations=disable_instrumentations,
                sync=sync,
                max_queue_size=max_queue_size,
                max_queue_bytes=max_queue_bytes,
                max_event_bytes=max_event_bytes,
                max_batch_size=max_batch_size,
                flush_interval=flush_interval,
                shutdown_timeout=shutdown_timeout,
                max_retries=max_retries,
                max_retry_time=max_retry_time,
                max_request_bytes=max_request_bytes,
                max_pipelined_requests=max_pipelined_requests,
                max_concurrent_requests=max_concurrent_requests,
                on_drop=on_drop,
                allow_insecure_http=allow_insecure_http,
            )
            self._exporter = _Exporter(config)
            _clients.add(self)
            _drain_at_multiprocessing_exit()
        instrumentation.instrument(self, config.disabled_instrumentations)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event enqueued before the call is delivered or given up on.

        Returns True when all of them were delivered (and nothing was dropped
        since the previous flush) within ``timeout`` seconds (default 30).
        Never raises for network trouble.
        """
        exporter = self._exporter
        if exporter is None or exporter.queue.closed:
            return True
        exporter.worker.ensure_running()
        return exporter.queue.flush(DEFAULT_FLUSH_TIMEOUT if timeout is None else timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is queued within ``timeout`` (default ``shutdown_timeout``), then stop.

        Events still undelivered at the deadline are counted as failed. Returns
        what ``flush`` would. Idempotent; ``init()`` may be called again after.
        """
        exporter = self._close()
        if exporter is None:
            return True
        if timeout is None:
            timeout = exporter.config.shutdown_timeout
        return _finish_shutdown(exporter, time.monotonic() + max(0.0, timeout))

    def _close(self) -> _Exporter | None:
        """Shut the door to new events; returns the exporter to drain, if any."""
        with self._lock:
            exporter = self._exporter
            if exporter is None or exporter.queue.closed:
                return None
            exporter.queue.close()
        instrumentation.uninstrument(self)
        return exporter

    def stats(self) -> ExportStats:
        """Counts of events enqueued, sent, dropped, failed, retried and still queued."""
        exporter = self._exporter
        if exporter is None:
            return ExportStats(0, 0, 0, 0, 0, 0, 0, {}, {})
        return exporter.queue.stats()

    # -- the API ---------------------------------------------------------------

    def create_session(
        self,
        *,
        attributes: Mapping[str, Any] | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        session_id: Any = None,
        actions: Iterable[SessionActionRequest | Mapping[str, Any]] | None = None,
        sync: bool | None = None,
    ) -> str:
        """Start a session and return its ID.

        Buffered (the default): the ID is minted here (a UUID version 5) and
        returned at once. ``sync=True``: the session is sent now and the ID is
        the server's answer; network trouble then raises.
        """
        exporter = self._exporter
        if exporter is None:
            raise _not_initialized("create_session")
        config = exporter.config
        sid = exporter.new_session_id() if session_id is None else client_session_id(session_id)
        attrs = exporter.attributes
        if attributes:
            attrs = {**attrs, **session_attributes(attributes)}
        body = encode(
            SessionRequest(
                config.application_id,
                attrs,
                sid,
                utc(start_time, "start_time"),
                utc(end_time, "end_time"),
            ),
            "session",
        )
        if actions is not None and (
            isinstance(actions, (str, bytes, Mapping)) or not isinstance(actions, Iterable)
        ):
            raise LayerSchemaValidationError(
                f"actions must be a list of actions, got {type(actions).__name__}"
            )
        action_bodies = [_action_from(action) for action in actions] if actions else []
        if exporter.sync if sync is None else sync:
            response = self._send_now(
                exporter, sid, "/v1/sessions", session_body(body, action_bodies)
            )
            try:
                answer = msgspec.json.decode(response.body) if response.body else {}
            except msgspec.DecodeError:
                answer = {}
            found = answer.get("session_id") if isinstance(answer, dict) else None
            return sid if found is None else _server_session_id(found)
        self._enqueue(exporter, Event(sid, body, True))
        for body_of_action in action_bodies:
            self._enqueue(exporter, Event(sid, body_of_action, False))
        return sid

    def append_action(
        self,
        session_id: Any,
        *,
        kind: SessionActionKind | str,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
        data: Any = None,
        error: Any = None,
        scanners: Iterable[Any] | None = None,
        sync: bool | None = None,
    ) -> None:
        """Record an action of a session. Missing times default to now (UTC).

        Buffered by default: returns at once and never raises for network
        trouble. Bad input raises ``LayerSchemaValidationError`` or
        ``LayerRequestPreparationError`` here, at the call.
        """
        exporter = self._exporter
        if exporter is None:
            raise _not_initialized("append_action")
        session_id = session_id_text(session_id)
        body = action_body(kind, start_time, end_time, attributes, data, error, scanners)
        if exporter.sync if sync is None else sync:
            self._send_now(exporter, session_id, f"/v1/sessions/{session_id}/actions", body)
            return
        self._enqueue(exporter, Event(session_id, body, False))

    def session(
        self, *, attributes: Mapping[str, Any] | None = None, session_id: Any = None
    ) -> Callable[[F], F]:
        """Decorator: each call of the function runs in a new session.

        The function receives the ID as ``session_id`` when it has such a
        parameter; ``@action`` inside it uses this session by default.
        """
        return _decorators.session(self, attributes=attributes, session_id=session_id)

    def action(
        self,
        *,
        kind: SessionActionKind | str,
        session_id: Any = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Decorator: each call of the function is recorded as an action.

        A returned ``(data, error, scanners)`` tuple is recorded as such, any
        other value as ``data``; an exception is recorded as the action's
        ``error`` and propagates unchanged.
        """
        return _decorators.action(self, kind=kind, session_id=session_id, attributes=attributes)

    @contextlib.contextmanager
    def session_context(self, session_id: Any = None) -> Iterator[str]:
        """Bind the calls made in this block to a session; yields its ID.

        Instrumented OpenAI calls and ``@action`` functions in the block (and in
        what it awaits) join the session; ``None`` creates a new one.
        """
        sid = self.create_session() if session_id is None else session_id_text(session_id)
        token = _decorators.current_session_id.set(sid)
        try:
            yield sid
        finally:
            _decorators.current_session_id.reset(token)

    # -- machinery -------------------------------------------------------------

    def _enqueue(self, exporter: _Exporter, event: Event) -> None:
        if sdk_thread.active:
            exporter.queue.refuse(event, RECURSION)
            return
        outcome = exporter.queue.put(event)
        if not outcome:
            return
        if outcome == WAKE:
            if exporter.worker.pid != os.getpid():
                self._restart_after_fork()
            else:
                exporter.worker.ensure_running()
        elif outcome == TOO_LARGE:
            limit = exporter.config.max_event_bytes
            raise LayerRequestPreparationError(
                f"the encoded event is {len(event.body)} bytes, more than max_event_bytes={limit}"
            )

    def _send_now(self, exporter: _Exporter, session_id: str, path: str, body: bytes) -> Response:
        if exporter.queue.closed:
            raise LayerRequestError("the client is shut down; call init() to use it again")
        # Earlier buffered events of this session go first, so the order holds on the wire.
        if not exporter.queue.wait_for_session(session_id, DEFAULT_FLUSH_TIMEOUT):
            raise LayerRequestError(f"earlier events of session {session_id} are still queued")
        return exporter.transport.send(path, body)

    def _restart_after_fork(self) -> None:
        """In a forked child: fresh locks, an empty queue, new connections, a new worker."""
        self._lock = threading.Lock()
        exporter = self._exporter
        if exporter is None or exporter.worker.pid == os.getpid():
            return
        if exporter.queue.closed:
            # Shut down in the parent: it stays shut, but a lock some parent
            # thread held at fork time must not block the child.
            exporter.queue.forget_locks()
            return
        session = exporter.config.http_session
        if session is not None:
            # The parent's pooled sockets must not be shared by two processes.
            for adapter in getattr(session, "adapters", {}).values():
                if hasattr(adapter, "poolmanager"):
                    adapter.poolmanager.clear()
        self._exporter = _Exporter(exporter.config)


def _action_from(action: SessionActionRequest | Mapping[str, Any]) -> bytes:
    """One item of ``create_session(actions=...)``, encoded as ``append_action`` would."""
    if isinstance(action, SessionActionRequest):
        fields = {name: getattr(action, name) for name in action.__struct_fields__}
    elif isinstance(action, Mapping):
        fields = dict(action)
    else:
        raise LayerSchemaValidationError(
            f"each of actions must be a SessionActionRequest or a dict, got {type(action).__name__}"
        )
    known = {"kind", "start_time", "end_time", "attributes", "data", "error", "scanners"}
    unknown = set(fields) - known
    if unknown or "kind" not in fields:
        raise LayerRequestPreparationError(
            f"an action needs 'kind' and takes only {sorted(known)}; got {sorted(fields)}"
        )
    try:
        return action_body(**{name: fields.get(name) for name in known})
    except LayerRequestPreparationError as exc:  # the same class, saying where the action is
        raise type(exc)(f"actions: {exc}") from None


def _server_session_id(found: Any) -> str:
    """The session ID a ``sync=True`` create was answered with; it must be a UUID."""
    try:
        return session_id_text(found)
    except LayerSchemaValidationError:
        raise LayerRequestError(
            f"the Layer API answered a session_id that is not a UUID: {found!r:.100}"
        ) from None


def _not_initialized(call: str) -> LayerMissingRequiredConfigurationError:
    return LayerMissingRequiredConfigurationError(f"call init() before {call}()")


#: Every client that was initialized: drained at exit, restarted after fork.
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _finish_shutdown(exporter: _Exporter, deadline: float) -> bool:
    delivered = exporter.queue.flush(max(0.0, deadline - time.monotonic()))
    exporter.queue.abandon()
    exporter.worker.stop(deadline)
    return delivered


@atexit.register
def _drain_at_exit() -> None:
    # Close every client first, then wait for each against its own deadline:
    # their senders drain side by side, so several clients do not add their
    # bounds up. No thread is started here (3.12+ refuses to at exit).
    started = time.monotonic()
    closing = [exporter for exporter in (c._close() for c in list(_clients)) if exporter]
    for exporter in closing:
        _finish_shutdown(exporter, started + exporter.config.shutdown_timeout)


def _restart_in_child() -> None:
    for client in list(_clients):
        client._restart_after_fork()


_multiprocessing_hooked = False


def _drain_at_multiprocessing_exit() -> None:
    """Drain at the exit of ``multiprocessing`` children too.

    A child process of ``multiprocessing`` ends with ``os._exit``, past
    ``atexit``, but first runs the finalizers of ``multiprocessing.util``
    (after a clean return from its target: a worker killed by
    ``Pool.terminate()`` runs nothing). A forked child inherits no finalizer
    (its registry is cleared when it starts), so one is registered in every
    child as it starts, through ``register_after_fork``; a child that calls
    ``init()`` itself (spawn, forkserver) registers one there.
    """
    global _multiprocessing_hooked
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return  # not in use: a process cannot be started without it
    if not _multiprocessing_hooked:
        _multiprocessing_hooked = True
        util.register_after_fork(_drain_at_exit, _finalize_in_child)
    if sys.modules["multiprocessing"].parent_process() is not None:
        _finalize_in_child(_drain_at_exit)


def _finalize_in_child(drain: Callable[[], None]) -> None:
    sys.modules["multiprocessing.util"].Finalize(None, drain, exitpriority=10)


os.register_at_fork(before=_drain_at_multiprocessing_exit, after_in_child=_restart_in_child)
