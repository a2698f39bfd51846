"""The Layer firewall: what it decided about a session, asked now or kept at hand.

``Firewall.lookup`` asks ``GET {firewall_base_url}/v1/sessions/{id}`` through
the SDK's one transport (headers, authentication, the synchronous retry
policy, deadlines, capped answers) and raises the firewall's exceptions.

With ``enable_firewall_instrumentation=True`` the client also keeps a
**decision cache**, so that ``append_action`` never waits on the network:

- ``check`` (the hot path) is two dictionary operations, a look-up and an insertion:
  it raises ``LayerFirewallSessionBlocked`` when the latest known decision of
  the session is ``block``, and marks the session active otherwise. It never
  does I/O and never waits on a lock (one is taken, rarely, to keep the
  sessions marked since the last round within ``firewall_cache_size``).
- A daemon thread (``layer-sdk-firewall``) looks the active sessions up again
  every ``firewall_refresh_interval`` seconds, one attempt each, bounded by
  ``firewall_check_timeout``; the first failure ends the round, so that a
  firewall that is down costs one timeout per round, not one per session. A
  session untouched for ``ACTIVE_FOR`` seconds stops being looked up. The
  trade-off: a block decided by the server reaches ``append_action`` within
  about one interval, not at once; where it matters most, before a prompt
  leaves the process, the provider instrumentation asks afresh
  (``check_fresh``), bounded by ``firewall_check_timeout``.
- Bounded waits: a fresh check and each look-up of a refresh round run on a
  thread of the firewall's own (``_daemon_pool``), and their caller waits at
  most ``firewall_check_timeout``, whatever the network, the token endpoint or
  a user's ``http_session`` does (``requests`` bounds each read, never a whole
  answer). One attempt each: through a user's session, a copy of it whose
  adapters do not retry (``single_attempt``; its proxies, TLS and auth stay).
  An ``async`` call awaits on its event loop, never on the loop's default
  executor, which is the application's. Calls that check one session at the
  same moment share one look-up.
- A blocked session stays blocked: once seen, ``block`` is never replaced by a
  later answer, and the session is not looked up again.
- Bounded: at most ``firewall_cache_size`` sessions are tracked as active, and
  as many decisions are kept (the oldest go first, so a very old block may be
  forgotten, then learnt again from the server at the session's next look-up).
- Failure: fail open by default. A look-up that fails is counted
  (``FirewallStats.failures``) and logged at most once a minute, and the call
  goes on. With ``firewall_fail_closed=True`` a session whose look-up failed is
  refused until a look-up succeeds again, and a failed fresh check refuses
  the call.
- Traced, when asked (``firewall_trace_spans=True``): each fresh check, and
  each refusal of ``check``, is a guardrail span of the application's tracer
  provider (``_guardrail_spans``); off, nothing of OpenTelemetry is imported.
- Fork: a child gets fresh locks, new connections, its own refresh thread and
  look-up threads (``os.register_at_fork``); it keeps the decisions its parent knew.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any, NamedTuple

from ._config import Config
from ._daemon_pool import DaemonPool, Expired, Pending
from ._exceptions import (
    LayerAuthError,
    LayerFirewallHTTPError,
    LayerFirewallRequestError,
    LayerFirewallSessionBlocked,
    LayerHTTPError,
    LayerRequestError,
    LayerSDKException,
)
from ._export._transport import Transport
from ._firewall_answer import (
    FirewallLookupContext,
    FirewallLookupDecision,
    FirewallSessionLookupResponse,
    FirewallViolatedPolicy,
    decode_answer,
)
from ._guardrail_spans import GuardrailSpans, guardrail_spans
from ._schemas import firewall_session_path

logger = logging.getLogger("layer_sdk")

#: A session not touched by ``append_action`` (or a fresh check) for this long,
#: seconds, is no longer looked up in the background.
ACTIVE_FOR = 300.0
#: Failed look-ups are logged at most once per this many seconds.
FAILURE_LOG_INTERVAL = 60.0
#: Look-ups under way at once, at most (fresh checks and the refresh round).
CHECK_THREADS = 32


class FirewallStats(NamedTuple):
    """Counts of the firewall's look-ups since ``init``."""

    lookups: int  # look-ups answered (synchronous, fresh and background)
    failures: int  # look-ups that failed (network, non-2xx, no decision, no thread in time)
    failed_open: int  # calls let through because no decision could be had
    blocked: int  # calls refused with LayerFirewallSessionBlocked
    tracked: int  # sessions looked up in the background now


class Firewall:
    """Look-ups through the transport, and the decision cache of one client."""

    def __init__(self, config: Config) -> None:
        assert config.firewall_base_url is not None
        self._config = config
        self._base_url = config.firewall_base_url
        self.enabled = config.enable_firewall_instrumentation
        self.fail_closed = config.firewall_fail_closed
        # session -> the response that blocked it, or None: refused because its
        # look-up failed (fail closed only). The hot path reads it without a lock.
        self._stops: dict[str, FirewallSessionLookupResponse | None] = {}
        # Sessions touched since the refresh thread last looked, in order (swapped by it),
        # at most firewall_cache_size of them: the latest.
        self._touched: dict[str, None] = {}
        self._cache_size = config.firewall_cache_size
        self._active: OrderedDict[str, float] = OrderedDict()  # session -> last touched
        self._lookups = self._failures = self._failed_open = self._blocked = 0
        self._last_log = -FAILURE_LOG_INTERVAL
        self._unlogged = 0
        self._spans: GuardrailSpans | None = None
        if config.firewall_trace_spans:
            self._spans = guardrail_spans(config.firewall_base_url)
        self._build()
        _live.add(self)

    def _build(self) -> None:
        """The parts a forked child makes anew: locks, connections, threads."""
        config = self._config
        base = dataclasses.replace(config, base_url=self._base_url)
        self._transport = Transport(base)
        # One attempt, bounded by the short timeout: for fresh checks and the refresh.
        # A user's session keeps its adapters, proxies and TLS settings, not its retries.
        quick = dataclasses.replace(
            base,
            http_timeout=config.firewall_check_timeout,
            max_retries=0,
            http_session=single_attempt(config.http_session),
        )
        self._quick = Transport(quick)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.pid = os.getpid()
        # Each look-up runs on a thread of this pool, and its caller waits at most
        # firewall_check_timeout, whatever the network or the user's session does.
        self._pool = DaemonPool("layer-sdk-firewall-lookup", CHECK_THREADS)
        # session -> its look-up under way: callers checking the session meanwhile share it.
        self._asking: dict[str, Pending[FirewallSessionLookupResponse]] = {}
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._thread = threading.Thread(
                target=self._refresh_loop, name="layer-sdk-firewall", daemon=True
            )
            self._thread.start()

    # -- asking ----------------------------------------------------------------------

    def lookup(self, session_id: str) -> FirewallSessionLookupResponse:
        """Ask the firewall now (``max_retries`` retries); what it decided. Raises."""
        return self._ask(self._transport, session_id)

    def _ask(self, transport: Transport, session_id: str) -> FirewallSessionLookupResponse:
        outcome = _lookup(transport, session_id)
        if isinstance(outcome, LayerSDKException):
            self._count("_failures")
            raise outcome
        self._count("_lookups")
        if self.enabled:
            self._learn(session_id, outcome)
        return outcome

    def _ask_soon(self, session_id: str) -> Pending[FirewallSessionLookupResponse]:
        """A look-up of the session within ``firewall_check_timeout``, on the pool: the one
        under way for it, if any and not past its deadline (a second look-up would learn
        nothing newer), else a new one."""
        pending = self._asking.get(session_id)
        if pending is not None and not pending.done() and not pending.overdue():
            return pending
        if self.pid != os.getpid():
            self._restart_in_child()
        ask = functools.partial(self._ask, self._quick, session_id)
        pending = self._pool.submit(ask, self._config.firewall_check_timeout)
        self._asking[session_id] = pending
        pending.add_callback(functools.partial(self._asked, session_id, pending))
        return pending

    def _asked(self, session_id: str, pending: Pending[FirewallSessionLookupResponse]) -> None:
        if self._asking.get(session_id) is pending:
            self._asking.pop(session_id, None)
        if isinstance(pending.error, Expired):
            self._count("_failures")  # never sent: the pool had no thread free in time

    # -- the hot path ----------------------------------------------------------------

    def check(self, session_id: str) -> None:
        """Raise ``LayerFirewallSessionBlocked`` when the session is known to be blocked.

        No I/O, and no lock but, once in ``firewall_cache_size / 2`` new sessions, the
        one that trims the sessions marked: what ``append_action`` pays for the firewall.
        """
        if session_id in self._stops:
            refusal = self._refusal(session_id)
            spans = self._spans
            if spans is not None:
                response = self._stops.get(session_id)
                spans.emit(session_id, time.time_ns(), "cached", response, "refused")
            raise refusal
        # _touch, spelled out: a method call here adds measurably to append_action's cost.
        touched = self._touched
        touched[session_id] = None
        if len(touched) > self._cache_size:
            self._forget_oldest_touches(touched)

    def _touch(self, session_id: str) -> None:
        """Mark the session in use, for the next refresh round to look it up."""
        touched = self._touched
        touched[session_id] = None
        if len(touched) > self._cache_size:
            self._forget_oldest_touches(touched)

    def _forget_oldest_touches(self, touched: dict[str, None]) -> None:
        """Keep the latest half of ``touched``: however many sessions come and however slow
        the firewall, the set stays within ``firewall_cache_size``, at O(1) a touch on average.

        A touch that lands in the old dict meanwhile is lost; the session is marked again at
        its next call. The refresh round would keep only the latest sessions anyway.
        """
        with self._lock:
            if self._touched is touched and len(touched) > self._cache_size:
                self._touched = dict.fromkeys(list(touched)[-max(1, self._cache_size // 2) :])

    def check_fresh(self, session_id: str) -> None:
        """Ask now, within ``firewall_check_timeout``; raise when the session is blocked.

        For the moment a prompt is about to leave the process. A failure to ask
        lets the call go on (counted), or refuses it with ``firewall_fail_closed``.
        The look-up runs on a thread of the firewall's own: the wait is bounded
        whatever the network, the token endpoint or the user's session does.
        """
        started = time.time_ns() if self._spans is not None else 0
        pending = None
        try:
            pending = self._start_check(session_id)
            pending.wait()
            self._conclude(session_id, pending)
        except LayerFirewallSessionBlocked:
            self._trace(session_id, started, pending, refused=True)
            raise
        self._trace(session_id, started, pending, refused=False)

    async def check_fresh_async(self, session_id: str) -> None:
        """:meth:`check_fresh` for a coroutine: the event loop runs on while it waits, and
        no thread of the loop's default executor (the application's) is used."""
        started = time.time_ns() if self._spans is not None else 0
        pending = None
        try:
            pending = self._start_check(session_id)
            await pending.wait_async()
            self._conclude(session_id, pending)
        except LayerFirewallSessionBlocked:
            self._trace(session_id, started, pending, refused=True)
            raise
        self._trace(session_id, started, pending, refused=False)

    def _trace(
        self,
        session_id: str,
        started: int,
        pending: Pending[FirewallSessionLookupResponse] | None,
        refused: bool,
    ) -> None:
        """The guardrail span of a fresh check (``firewall_trace_spans``): the answer it
        had, or why it had none, and what the call was let to do."""
        spans = self._spans
        if spans is None:
            return
        error: LayerSDKException | None = None
        if pending is None:  # refused before asking: the block known already
            response = self._stops.get(session_id)
        elif pending.done() and pending.error is None:
            response = pending.value
        else:
            response = None
            error = _why_unanswered(pending, self._config.firewall_check_timeout)
        outcome = "refused" if refused else "failed_open" if error is not None else "allowed"
        spans.emit(session_id, started, "before_prompt", response, outcome, error)

    def _start_check(self, session_id: str) -> Pending[FirewallSessionLookupResponse]:
        if self._stops.get(session_id) is not None:
            raise self._refusal(session_id)  # blocked stays blocked: no need to ask
        return self._ask_soon(session_id)

    def _conclude(self, session_id: str, pending: Pending[FirewallSessionLookupResponse]) -> None:
        """After the wait: the call goes on, or is refused (blocked, or fail closed)."""
        self._touch(session_id)
        if pending.done() and pending.error is None:
            if session_id in self._stops:
                raise self._refusal(session_id)
            return
        self._failed(session_id, _why_unanswered(pending, self._config.firewall_check_timeout))
        if self.fail_closed:
            raise self._refusal(session_id)
        self._count("_failed_open")

    def _refusal(self, session_id: str) -> LayerFirewallSessionBlocked:
        self._count("_blocked")
        response = self._stops.get(session_id)
        if response is None:
            return LayerFirewallSessionBlocked(
                f"session {session_id} is refused: the Layer firewall could not be asked "
                "and firewall_fail_closed=True",
                session_id,
            )
        names = [
            policy.name or str(policy.id or "unnamed")
            for policy in response.context.violated_policies
        ]
        why = f" (violated policies: {', '.join(names)})" if names else ""
        return LayerFirewallSessionBlocked(
            f"session {session_id} is blocked by the Layer firewall{why}", session_id, response
        )

    # -- what was learnt -------------------------------------------------------------

    def _learn(self, session_id: str, response: FirewallSessionLookupResponse) -> None:
        with self._lock:
            known = self._stops.get(session_id, _ABSENT)
            if response.decision is FirewallLookupDecision.BLOCK:
                if known is None or known is _ABSENT:
                    self._stops.pop(session_id, None)
                    self._stops[session_id] = response
                    self._bound_stops()
            elif known is None:
                del self._stops[session_id]  # the firewall answers again: no longer refused

    def _failed(self, session_id: str, exc: LayerSDKException) -> None:
        now = time.monotonic()
        with self._lock:
            if self.fail_closed and session_id not in self._stops:
                self._stops[session_id] = None
                self._bound_stops()
            self._unlogged += 1
            if now - self._last_log < FAILURE_LOG_INTERVAL:
                return
            self._last_log, count, self._unlogged = now, self._unlogged, 0
        then = "refused (firewall_fail_closed)" if self.fail_closed else "let through (fail open)"
        logger.warning(
            "layer-sdk: %d firewall look-up(s) failed, the sessions' calls are %s; last: %s",
            count,
            then,
            exc,
        )

    def _bound_stops(self) -> None:
        # (lock held) Refusals for a failed look-up go before blocks; then the oldest.
        while len(self._stops) > self._config.firewall_cache_size:
            oldest = next((sid for sid, r in self._stops.items() if r is None), None)
            self._stops.pop(oldest if oldest is not None else next(iter(self._stops)))

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def stats(self) -> FirewallStats:
        """The counts now."""
        with self._lock:
            return FirewallStats(
                self._lookups, self._failures, self._failed_open, self._blocked, len(self._active)
            )

    # -- the refresh thread ----------------------------------------------------------

    def _refresh_loop(self) -> None:
        stopping = self._stopping
        while not stopping.wait(self._config.firewall_refresh_interval):
            try:
                self.refresh()
            except Exception:  # a bug of ours must not end the refresh
                logger.exception("layer-sdk: the firewall refresh failed")

    def refresh(self) -> None:
        """Look every active session up once (one round of the refresh thread)."""
        with self._lock:
            touched, self._touched = self._touched, {}
        # A copy in one step: a caller may still be adding to the old dict (that
        # touch is then seen at the next append_action).
        recent = list(touched)
        now = time.monotonic()
        active = self._active
        with self._lock:
            for session_id in recent:
                active[session_id] = now
                active.move_to_end(session_id)
            while active and (
                len(active) > self._config.firewall_cache_size
                or next(iter(active.values())) < now - ACTIVE_FOR
            ):
                active.popitem(last=False)
            due = [sid for sid in active if self._stops.get(sid) is None]
        for index, session_id in enumerate(due):
            if self._stopping.is_set():
                return
            pending = self._ask_soon(session_id)
            pending.wait()
            if not pending.done() or pending.error is not None:
                # The firewall is down or failing: the round ends here rather than wait
                # a timeout per session; the others count as failed with this one.
                why = _why_unanswered(pending, self._config.firewall_check_timeout)
                for failed in due[index:]:
                    self._failed(failed, why)
                return

    # -- the end, and fork -----------------------------------------------------------

    def close(self, deadline: float) -> None:
        """Stop the refresh thread (waiting at most until ``deadline``) and release connections."""
        self._stopping.set()
        _live.discard(self)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.close()
        self._transport.close()
        self._quick.close()

    def _restart_in_child(self) -> None:
        if self.pid == os.getpid() or self._stopping.is_set():
            return
        self._touched = {}
        self._build()


def _lookup(
    transport: Transport, session_id: str
) -> FirewallSessionLookupResponse | LayerSDKException:
    """One look-up through ``transport``: the answer, or the exception that says what went
    wrong (returned, so that it is raised with no other exception chained to it)."""
    try:
        answer = transport.send(firewall_session_path(session_id), b"", method="GET")
    except LayerHTTPError as exc:
        return LayerFirewallHTTPError(exc.status_code, exc.message, exc.response_data)
    except LayerRequestError as exc:
        return LayerFirewallRequestError(f"the Layer firewall: {exc}")
    except LayerAuthError as exc:
        return exc.with_traceback(None)
    try:
        return decode_answer(answer.body, session_id)
    except LayerFirewallRequestError as exc:
        return exc.with_traceback(None)


def _why_unanswered(pending: Pending[Any], timeout: float) -> LayerSDKException:
    """Why a look-up gave no decision, for the log and the counts."""
    error = pending.error
    if isinstance(error, LayerSDKException):
        return error
    if error is not None and not isinstance(error, Expired):
        return LayerFirewallRequestError(f"the firewall look-up failed: {error!r}")
    return LayerFirewallRequestError(
        f"the Layer firewall did not answer within firewall_check_timeout={timeout:g} s"
    )


def single_attempt(session: Any) -> Any:
    """A copy of a user's ``requests`` session whose adapters make one attempt.

    The copy shares the session's connection pools, headers, auth, proxies,
    TLS settings and mounts; only each adapter's urllib3 ``Retry`` becomes a
    single attempt, as ``requests`` does by default. A session the SDK cannot
    copy (no ``adapters``) is used as given: the caller's wait is bounded anyway.
    """
    adapters = getattr(session, "adapters", None)
    if session is None or not isinstance(adapters, dict) or not hasattr(session, "__dict__"):
        return session
    from urllib3.util.retry import Retry

    copy = object.__new__(type(session))
    copy.__dict__.update(session.__dict__)
    copy.adapters = type(adapters)(
        (prefix, _one_attempt(adapter, Retry)) for prefix, adapter in adapters.items()
    )
    return copy


def _one_attempt(adapter: Any, retry: Any) -> Any:
    if not isinstance(getattr(adapter, "max_retries", None), retry) or not hasattr(
        adapter, "__dict__"
    ):
        return adapter
    copy = object.__new__(type(adapter))
    copy.__dict__.update(adapter.__dict__)
    copy.max_retries = retry(0, read=False)
    return copy


_ABSENT = object()
_live: weakref.WeakSet[Firewall] = weakref.WeakSet()


def _restart_all_in_child() -> None:
    for firewall in list(_live):
        firewall._restart_in_child()


os.register_at_fork(after_in_child=_restart_all_in_child)

__all__ = [
    "Firewall",
    "FirewallLookupContext",
    "FirewallLookupDecision",
    "FirewallSessionLookupResponse",
    "FirewallStats",
    "FirewallViolatedPolicy",
]
