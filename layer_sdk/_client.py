"""The client: the public calls, in front of the export pipeline.

A call reads top to bottom: validate and encode on the caller's thread
(``_schemas``), then hand the bytes to the ``Exporter`` (``_export``), whose
queue, sender threads and transport deliver them. ``sync=True`` skips the
queue and sends through the same transport right away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from . import _decorators, instrumentation
from ._applications import (
    ApplicationId,
    ApplicationName,
    check_name,
    create_application,
    list_applications,
)
from ._config import (
    DEFAULT_FIREWALL_CACHE_SIZE,
    DEFAULT_FIREWALL_CHECK_TIMEOUT,
    DEFAULT_FIREWALL_REFRESH_INTERVAL,
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
    DEFAULT_OVERSIZE,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SPOOL_MAX_AGE,
    DEFAULT_SPOOL_MAX_BYTES,
    DEFAULT_SPOOL_SYNC,
    Config,
    DropCallback,
    Oversize,
    SpoolSync,
    provider_names,
    wait_timeout,
)
from ._context import current_session_id
from ._exceptions import (
    LayerAlreadyInitializedError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
    LayerRequestPreparationError,
    LayerSchemaValidationError,
)
from ._export import (
    Event,
    Exporter,
    ExportStats,
    Put,
    drain_feeders,
    lifecycle_lock,
    run_on_sdk_thread,
)
from ._export._retry import RetryPolicy
from ._export._transport import Transport
from ._firewall import (
    Firewall,
    FirewallLookupDecision,
    FirewallSessionLookupResponse,
    FirewallStats,
)
from ._platform import platform_attributes
from ._redact import mask_url
from ._schemas import (
    SESSIONS_PATH,
    SessionActionKind,
    SessionActionRequest,
    SessionIdFactory,
    SessionRequest,
    action_body,
    actions_path,
    client_session_id,
    encode,
    known_session_ids,
    session_attributes,
    session_body,
    session_id_text,
    utc,
)
from ._settings import differences, resolve_settings

if TYPE_CHECKING:
    import requests

    from ._auth import AuthProvider

logger = logging.getLogger("layer_sdk")

F = TypeVar("F", bound=Callable[..., Any])


class Client:
    """A Layer API client. ``layer`` is the default instance; more can be built."""

    def __init__(self) -> None:
        # The latest exporter. After shutdown it stays, its door shut: late calls
        # are counted as dropped and stats() still answers.
        self._exporter: Exporter | None = None
        # What every session of this client carries, and where its IDs come from.
        self._attributes: dict[str, str] = {}
        self._new_session_id = SessionIdFactory("")
        # The ID sessions are created with (resolved from a name in the background, maybe).
        self._application = ApplicationId("")
        # The firewall of this client (None without firewall_base_url), and the same
        # when append_action consults it (enable_firewall_instrumentation), else None.
        self._firewall: Firewall | None = None
        self._guard: Firewall | None = None
        # The settings of init(enabled=False), until an init() enabled (None otherwise): no
        # exporter then, and every call returns at once. shutdown() only marks it closed.
        self._disabled: Config | None = None
        self._disabled_closed = False

    def __repr__(self) -> str:
        exporter = self._exporter
        if exporter is None:
            return "Client(not initialized)" if self._disabled is None else "Client(disabled)"
        state = "shut down" if exporter.closed else "running"
        return f"Client(base_url={mask_url(exporter.config.base_url)!r}, {state})"

    # -- lifecycle -------------------------------------------------------------

    def init(
        self,
        *,
        enabled: bool | None = None,
        debug: bool | None = None,
        base_url: str | None = None,
        application_id: str | None = None,
        application_name: str | None = None,
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
        oversize: Oversize = DEFAULT_OVERSIZE,
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
        firewall_base_url: str | None = None,
        enable_firewall_instrumentation: bool = False,
        firewall_fail_closed: bool = False,
        firewall_check_timeout: float = DEFAULT_FIREWALL_CHECK_TIMEOUT,
        firewall_cache_size: int = DEFAULT_FIREWALL_CACHE_SIZE,
        firewall_refresh_interval: float = DEFAULT_FIREWALL_REFRESH_INTERVAL,
        firewall_trace_spans: bool = False,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_sync: SpoolSync = DEFAULT_SPOOL_SYNC,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        spool_max_age: float = DEFAULT_SPOOL_MAX_AGE,
    ) -> None:
        """Configure the client and start its background worker.

        Arguments left out fall back to the ``LAYER_*`` environment variables;
        without ``auth_provider``, the ``LAYER_OIDC_*`` variables make one (see
        ``_settings``). Raises ``LayerMissingRequiredConfigurationError`` naming
        a missing setting, ``ValueError`` for an invalid one. On a client that
        runs already (not shut down), the same settings again do nothing, and
        others raise ``LayerAlreadyInitializedError`` naming those that differ.
        ``enabled=False`` (or ``LAYER_ENABLED=false``) needs no other setting,
        starts no thread and instruments nothing: every call then returns at once.
        ``application_name`` (without ``application_id``) is resolved to an ID,
        created when missing; ``init`` waits for it at most ``http_timeout``
        seconds, then goes on while it resolves in the background (see
        ``_applications``), and raises when the API says for sure that the name
        can be neither found nor created.
        With an ``auth_provider``, a plain ``http://`` base URL to another
        machine is refused (the token would be readable on the network)
        unless ``allow_insecure_http=True``. An action larger than
        ``max_event_bytes`` has its longest texts cut in the middle until it
        fits (``oversize="truncate"``), or is refused (``oversize="refuse"``).
        ``firewall_trace_spans=True`` makes each firewall check a guardrail span of the
        application's OpenTelemetry tracer provider (``docs/opentelemetry.md``).
        ``spool_dir`` (or ``LAYER_SPOOL_DIR``) keeps undelivered events on disk there, so that
        a crash, a restart or a long outage loses at most the last ``flush_interval``
        (``docs/spool.md``); a spool that cannot be used falls back to memory with a warning.
        """
        # The parameters are Config's fields (tests/test_config.py checks they agree).
        options = {name: value for name, value in locals().items() if name in _OPTIONS}
        if disabled_instrumentors is not None:  # the original SDK's name of the option
            options["disable_instrumentations"] = [
                *provider_names("disable_instrumentations", disable_instrumentations),
                *provider_names("disabled_instrumentors", disabled_instrumentors),
            ]
        config = resolve_settings(**options)
        with lifecycle_lock():
            if self._running_with(config):
                return
        # Outside the lock: it may wait on the network (http_timeout at most).
        application = _application_of(config) if config.enabled else ApplicationId("")
        with lifecycle_lock():
            try:
                again = self._running_with(config)
            except LayerAlreadyInitializedError:
                application.close()
                raise
            if again:
                application.close()
                return
            namespace = config.application_id or f"name:{config.application_name}"
            self._new_session_id = SessionIdFactory(namespace)
            self._application = application
            if not config.enabled:
                self._exporter, self._firewall, self._guard = None, None, None
                self._disabled, self._disabled_closed = config, False
                return
            self._disabled = None
            self._attributes = platform_attributes(config.environment, config.platform)
            # Only sessions encoded before the name resolved need their ID filled in.
            splicer = None
            if isinstance(application, ApplicationName) and not application.settled:
                splicer = application
            # Session IDs are minted ahead of need, by the senders between requests.
            self._new_session_id.top_up()
            self._exporter = Exporter(
                config, splicer=splicer, between_requests=self._new_session_id.top_up
            )
            firewall = None if config.firewall_base_url is None else Firewall(config)
            self._firewall = firewall
            self._guard = firewall if config.enable_firewall_instrumentation else None
        instrumentation.instrument(self, config.disable_instrumentations)

    def _running_with(self, config: Config) -> bool:
        """True when the client runs with these settings already; raises naming the
        settings that differ when it runs with others; False when it does not run."""
        exporter = self._exporter
        if exporter is not None and not exporter.closed:
            running = exporter.config
        elif self._disabled is not None and not self._disabled_closed:
            running = self._disabled
        else:
            return False
        changed = differences(running, config)
        if changed:
            raise LayerAlreadyInitializedError(
                f"this client is already initialized with other settings ({', '.join(changed)}"
                f" differ); call shutdown() first to change them (init() with the same "
                "settings again does nothing)"
            )
        return True

    def flush(self, timeout: float | None = None, session_id: Any = None) -> bool:
        """Wait until every event enqueued before the call is delivered or given up on.

        Spans that ended before the call and wait in a ``layer_sdk.otel`` span
        processor are read first, and their events waited for too. Returns True
        when all of them were delivered (and nothing was dropped since the
        previous flush) within ``timeout`` seconds (default 30).
        With ``session_id``, waits only for the events of that session, and
        returns True when they were all delivered (and none of that session was
        lost since its previous flush). Never raises for network trouble.
        """
        wait = wait_timeout(timeout, DEFAULT_FLUSH_TIMEOUT)
        sid = None if session_id is None else session_id_text(session_id)
        exporter = self._exporter
        if exporter is None:
            return True
        return exporter.flush(wait, sid)

    async def aflush(self, timeout: float | None = None, session_id: Any = None) -> bool:
        """:meth:`flush` for asyncio code: the event loop runs on while it waits.

        The wait holds no thread (the queue settles a future when the events are
        resolved); only the spans a ``layer_sdk.otel`` span processor holds are
        waited for on a thread of the SDK's, never of the loop's default executor.
        """
        wait = wait_timeout(timeout, DEFAULT_FLUSH_TIMEOUT)
        sid = None if session_id is None else session_id_text(session_id)
        exporter = self._exporter
        if exporter is None:
            return True
        return await exporter.aflush(wait, sid)

    async def ashutdown(self, timeout: float | None = None) -> bool:
        """:meth:`shutdown` for asyncio code: the event loop runs on while it waits.

        The shutdown runs on a thread of the SDK's (never of the loop's default
        executor) and the loop awaits its outcome, at most ``timeout`` seconds
        (default ``shutdown_timeout``) and a moment more.
        """
        running = self._running_exporter(timeout)
        if running is None:
            return True
        _, wait = running
        return await run_on_sdk_thread(lambda: self.shutdown(wait), wait)

    def _running_exporter(self, timeout: float | None) -> tuple[Exporter, float] | None:
        """The exporter a shutdown must stop and how long it may wait; None when
        there is nothing to stop (a disabled client is marked closed here)."""
        given = None if timeout is None else wait_timeout(timeout, 0.0)
        with lifecycle_lock():
            if self._disabled is not None:
                self._disabled_closed = True
                return None
            exporter = self._exporter
            if exporter is None or exporter.closed:
                return None
        return exporter, exporter.config.shutdown_timeout if given is None else given

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is queued within ``timeout`` (default ``shutdown_timeout``), then stop.

        Events still undelivered at the deadline are counted as failed. Returns
        what ``flush`` would. Idempotent; ``init()`` may be called again after.
        """
        running = self._running_exporter(timeout)
        if running is None:
            return True
        exporter, wait = running
        deadline = time.monotonic() + wait
        # What a feeder holds (spans a span processor has not read) joins the queue first.
        fed = drain_feeders(deadline)
        with lifecycle_lock():
            if self._exporter is not exporter or not exporter.close():
                return True
        instrumentation.uninstrument(self)
        firewall, self._guard = self._firewall, None
        if firewall is not None:
            firewall.close(deadline)
        return exporter.finish(deadline) and fed

    def stats(self) -> ExportStats:
        """Counts of events enqueued, sent, dropped, failed, retried and still queued."""
        exporter = self._exporter
        if exporter is None:
            return ExportStats(0, 0, 0, 0, 0, 0, 0, {}, {}, disabled=self._disabled is not None)
        return exporter.stats()

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
            return self._disabled_session_id(session_id)
        sid = self._new_session_id() if session_id is None else client_session_id(session_id)
        attrs = self._attributes
        if attributes:
            attrs = {**attrs, **session_attributes(attributes)}
        if start_time is not None or end_time is not None:
            start_time, end_time = utc(start_time, "start_time"), utc(end_time, "end_time")
        body = encode(
            SessionRequest(self._application.id, attrs, sid, start_time, end_time), "session"
        )
        sync = exporter.config.sync if sync is None else sync
        if actions is None and not sync:
            if exporter.put(Event(sid, body, True)) is _TOO_LARGE:
                raise _too_large(exporter, body, True)
            return sid
        if actions is not None and (
            isinstance(actions, (str, bytes, Mapping)) or not isinstance(actions, Iterable)
        ):
            raise LayerSchemaValidationError(
                f"actions must be a list of actions, got {type(actions).__name__}"
            )
        action_bodies = [_action_from(action) for action in actions] if actions else []
        if sync:
            response = exporter.send_now(
                sid, SESSIONS_PATH, session_body(body, action_bodies), creates=True
            )
            if response.status == 409:  # a retry of this create: it exists, under our ID
                return sid
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
        ``LayerRequestPreparationError`` here, at the call. With
        ``enable_firewall_instrumentation=True``, raises
        ``LayerFirewallSessionBlocked`` when the latest decision the client
        knows for the session is ``block`` (no network: see ``_firewall``).
        """
        exporter = self._exporter
        if exporter is None:
            if self._disabled is None:
                raise _not_initialized("append_action")
            return
        if session_id.__class__ is not str or session_id not in known_session_ids:
            session_id = session_id_text(session_id)
        guard = self._guard
        if guard is not None:
            guard.check(session_id)
        body = action_body(kind, start_time, end_time, attributes, data, error, scanners)
        if sync or (sync is None and exporter.config.sync):
            exporter.send_now(session_id, actions_path(session_id), body)
        elif exporter.put(Event(session_id, body, False)) is _TOO_LARGE:
            raise _too_large(exporter, body, False)

    def firewall_session_lookup(self, session_id: Any) -> FirewallSessionLookupResponse:
        """Ask the Layer firewall now what it decided about a session.

        ``GET {firewall_base_url}/v1/sessions/{session_id}`` through the same
        transport as ``sync=True`` calls (authentication, up to ``max_retries``
        retries, ``http_timeout``). Raises ``LayerFirewallHTTPError`` for a
        non-2xx answer, ``LayerFirewallRequestError`` when the firewall cannot
        be reached or answers something that is no lookup response, and
        ``LayerMissingRequiredConfigurationError`` without ``firewall_base_url``.
        """
        session_id = session_id_text(session_id)
        firewall = self._firewall
        if firewall is None:
            if self._disabled is not None:
                return FirewallSessionLookupResponse(session_id, FirewallLookupDecision.NO_DATA)
            if self._exporter is None:
                raise _not_initialized("firewall_session_lookup")
            raise LayerMissingRequiredConfigurationError(
                "firewall_session_lookup needs firewall_base_url: pass firewall_base_url= "
                "to init() or set LAYER_FIREWALL_BASE_URL"
            )
        return firewall.lookup(session_id)

    def list_applications(self) -> list[dict[str, Any]]:
        """Every application of the account: ``GET {base_url}/v1/applications``.

        Each is a dict with at least ``id`` and ``name``. Synchronous, through
        the same transport as ``sync=True`` calls; raises ``LayerHTTPError`` /
        ``LayerRequestError`` / ``LayerAuthError`` as they do.
        """
        if self._disabled is not None:
            return []
        return list_applications(self._transport("list_applications"))

    def get_applications_by_name(self, name: str | None = None) -> dict[str, str]:
        """The applications as ``{name: id}``; only the one named ``name`` when given
        (an empty dict when there is none). Raises as ``list_applications``."""
        wanted = None if name is None else check_name(name)
        if self._disabled is not None:
            return {}
        return {
            app["name"]: app["id"]
            for app in list_applications(self._transport("get_applications_by_name"))
            if wanted is None or app["name"] == wanted
        }

    def create_application(self, name: str | None = None) -> str:
        """Create an application (``name``, else the configured ``application_name``); its ID.

        ``POST {base_url}/v1/applications`` with ``{"name", "source": "manual"}``.
        Raises as ``list_applications``; a name the API already has is its
        ``LayerHTTPError`` (409 on the local collector).
        """
        disabled = self._disabled
        transport = None if disabled is not None else self._transport("create_application")
        if name is None:
            configured = self._application
            if disabled is not None and disabled.application_name:
                name = disabled.application_name
            elif isinstance(configured, ApplicationName):
                name = configured.name
            else:
                raise LayerMissingRequiredConfigurationError(
                    "create_application needs a name: pass it, or init(application_name=...)"
                )
        if transport is None:  # disabled: an ID of the name, made here
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"layer-application:{check_name(name)}"))
        return create_application(transport, check_name(name))

    def firewall_stats(self) -> FirewallStats:
        """Counts of firewall look-ups, failures, calls let through and calls refused."""
        firewall = self._firewall
        return FirewallStats(0, 0, 0, 0, 0) if firewall is None else firewall.stats()

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
        token = current_session_id.set(sid)
        try:
            yield sid
        finally:
            current_session_id.reset(token)

    # -- machinery -------------------------------------------------------------

    def _settings(self) -> Config | None:
        """The settings of the latest ``init()``, enabled or not (None before the first)."""
        if self._disabled is not None:
            return self._disabled
        exporter = self._exporter
        return None if exporter is None else exporter.config

    def _disabled_session_id(self, session_id: Any) -> str:
        """``create_session`` of a client initialized with ``enabled=False``: an ID, no more."""
        if self._disabled is None:
            raise _not_initialized("create_session")
        return self._new_session_id() if session_id is None else client_session_id(session_id)

    def _transport(self, call: str) -> Transport:
        exporter = self._exporter
        if exporter is None:
            raise _not_initialized(call)
        if exporter.closed:
            raise LayerRequestError("the client is shut down; call init() to use it again")
        return exporter.transport

    def check_prompt(self, session_id: str) -> None:
        """Raise ``LayerFirewallSessionBlocked`` when the firewall blocks ``session_id`` now.

        What the provider instrumentation asks right before a prompt leaves the
        process (``_context.Recorder``). With ``enable_firewall_instrumentation=True``
        the firewall is asked afresh, within about ``firewall_check_timeout``, on a
        thread of its own; otherwise this returns at once.
        """
        guard = self._guard
        if guard is not None:
            guard.check_fresh(session_id)

    async def check_prompt_async(self, session_id: str) -> None:
        """:meth:`check_prompt` for a coroutine: the event loop serves other tasks while the
        firewall is asked (the loop's default executor, the application's, is not used)."""
        guard = self._guard
        if guard is None:
            return
        import asyncio  # loaded already where a coroutine calls this

        try:
            asyncio.get_running_loop()
        except RuntimeError:  # another event loop (trio): asked here, as in a plain call
            guard.check_fresh(session_id)
            return
        await guard.check_fresh_async(session_id)

    def _enqueue(self, exporter: Exporter, event: Event) -> None:
        if exporter.put(event) is _TOO_LARGE:
            raise _too_large(exporter, event.body, event.creates_session)


def _too_large(exporter: Exporter, body: bytes, creates_session: bool) -> Exception:
    """What the caller is told of an event refused for its size."""
    config = exporter.config
    cut = config.oversize == "truncate" and not creates_session
    return LayerRequestPreparationError(
        f"the encoded event is {len(body)} bytes, more than "
        f"max_event_bytes={config.max_event_bytes}"
        + (", even with its texts cut (what is not text is never cut)" if cut else "")
    )


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


def _application_of(config: Config) -> ApplicationId:
    """The application of ``config``: its ID, or its name on the way to one (see
    ``_applications``). Raises when the API says for sure that the name cannot be had."""
    if config.application_id is not None:
        return ApplicationId(config.application_id)
    assert config.application_name is not None
    # Single attempts, retried by the resolution's own loop, so that none outlasts init's wait.
    transport = Transport(dataclasses.replace(config, max_retries=0))
    policy = RetryPolicy(max_retry_time=config.max_retry_time)
    application = ApplicationName(config.application_name, transport, policy)
    if application.wait(config.http_timeout) and application.error is not None:
        raise application.error
    return application


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


_TOO_LARGE = Put.TOO_LARGE  # read once: an enum member is slower

#: The options of init(), as Config names them.
_OPTIONS = frozenset(field.name for field in dataclasses.fields(Config))
