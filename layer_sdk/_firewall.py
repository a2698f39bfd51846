"""The Layer firewall: what it decided about a session, asked now or kept at hand.

``Firewall.lookup`` asks ``GET {firewall_base_url}/v1/sessions/{id}`` through
the SDK's one transport (headers, authentication, the synchronous retry
policy, deadlines, capped answers) and raises the firewall's exceptions.

With ``enable_firewall_instrumentation=True`` the client also keeps a
**decision cache**, so that ``append_action`` never waits on the network:

- ``check`` (the hot path) is two dictionary operations, a look-up and an insertion:
  it raises ``LayerFirewallSessionBlocked`` when the latest known decision of
  the session is ``block``, and marks the session active otherwise. It never
  does I/O and never takes a lock.
- A daemon thread (``layer-sdk-firewall``) looks the active sessions up again
  every ``firewall_refresh_interval`` seconds, one attempt each, bounded by
  ``firewall_check_timeout``; the first failure ends the round, so that a
  firewall that is down costs one timeout per round, not one per session. A
  session untouched for ``ACTIVE_FOR`` seconds stops being looked up. The
  trade-off: a block decided by the server reaches ``append_action`` within
  about one interval, not at once; where it matters most, before a prompt
  leaves the process, the provider instrumentation asks afresh
  (``check_fresh``), bounded by ``firewall_check_timeout``.
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
- Fork: a child gets fresh locks, new connections and its own refresh thread
  (``os.register_at_fork``); it keeps the decisions its parent knew.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from typing import NamedTuple

import msgspec

from ._config import Config
from ._exceptions import (
    LayerFirewallHTTPError,
    LayerFirewallRequestError,
    LayerFirewallSessionBlocked,
    LayerHTTPError,
    LayerRequestError,
    LayerSDKException,
)
from ._export._transport import Transport
from ._schemas import firewall_session_path

logger = logging.getLogger("layer_sdk")

#: A session not touched by ``append_action`` (or a fresh check) for this long,
#: seconds, is no longer looked up in the background.
ACTIVE_FOR = 300.0
#: Failed look-ups are logged at most once per this many seconds.
FAILURE_LOG_INTERVAL = 60.0


class FirewallLookupDecision(str, enum.Enum):
    """What the firewall decided about a session."""

    NO_DATA = "no_data"  # nothing evaluated yet
    PASS = "pass"  # no policy violated
    SKIP = "skip"  # violations whose policies only monitor
    ALERT = "alert"  # violations whose policies at most inform
    BLOCK = "block"  # a violated policy says block


class FirewallViolatedPolicy(msgspec.Struct, frozen=True):
    """A policy the session violated (each field as the firewall sent it, when it could be read)."""

    id: int | str | None = None
    name: str | None = None
    severity: str | None = None
    action: str | None = None


class FirewallLookupContext(msgspec.Struct, frozen=True):
    """Why the firewall decided as it did."""

    violated_policies: list[FirewallViolatedPolicy] = msgspec.field(default_factory=list)


class FirewallSessionLookupResponse(msgspec.Struct, frozen=True):
    """The answer of ``firewall_session_lookup``."""

    session_id: str
    decision: FirewallLookupDecision
    context: FirewallLookupContext = msgspec.field(default_factory=FirewallLookupContext)


class _Answer(msgspec.Struct):
    """The firewall's answer as it travels: the decision, and the rest kept raw to be read
    apart, so that a context we cannot read never hides the decision."""

    decision: str
    session_id: object = None
    context: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class FirewallStats(NamedTuple):
    """Counts of the firewall's look-ups since ``init``."""

    lookups: int  # look-ups answered (synchronous, fresh and background)
    failures: int  # look-ups that failed (network, non-2xx, malformed answer)
    failed_open: int  # calls let through because no decision could be had
    blocked: int  # calls refused with LayerFirewallSessionBlocked
    tracked: int  # sessions looked up in the background now


def decode_answer(body: bytes, session_id: str) -> FirewallSessionLookupResponse:
    """The lookup response in ``body``; ``LayerFirewallRequestError`` naming what is wrong.

    Only the decision must be readable (in any letter case). The context is
    read as far as it can be: a policy ID given as a string, a numeric
    severity or an unexpected shape never turn a ``block`` into a failed look-up.
    """
    try:
        answer = msgspec.json.decode(body, type=_Answer)
    except msgspec.DecodeError as exc:
        raise LayerFirewallRequestError(
            f"the Layer firewall's answer is not a session lookup response: {exc}"
        ) from None
    try:
        decision = FirewallLookupDecision(answer.decision.strip().lower())
    except ValueError:
        raise LayerFirewallRequestError(
            "the Layer firewall's answer is not a session lookup response: "
            f"unknown decision {answer.decision[:40]!r}"
        ) from None
    found = answer.session_id if isinstance(answer.session_id, str) else None
    return FirewallSessionLookupResponse(found or session_id, decision, _context(answer.context))


def _context(raw: msgspec.Raw) -> FirewallLookupContext:
    """The context of an answer; what of it cannot be read is left out."""
    if not raw:
        return FirewallLookupContext()
    try:
        return (
            msgspec.json.decode(raw, type=FirewallLookupContext | None) or FirewallLookupContext()
        )
    except msgspec.DecodeError:
        pass  # not our schema: read it field by field
    found = msgspec.json.decode(raw)  # valid JSON: the whole answer was
    policies = found.get("violated_policies") if isinstance(found, dict) else None
    if not isinstance(policies, list):
        return FirewallLookupContext()
    return FirewallLookupContext(
        [_policy(policy) for policy in policies if isinstance(policy, (dict, str))]
    )


def _policy(fields: dict[str, object] | str) -> FirewallViolatedPolicy:
    if isinstance(fields, str):  # a policy given by its name alone
        return FirewallViolatedPolicy(name=fields)
    policy_id = fields.get("id")
    if isinstance(policy_id, float) and policy_id.is_integer():
        policy_id = int(policy_id)
    if not isinstance(policy_id, (int, str)) or isinstance(policy_id, bool):
        policy_id = None
    return FirewallViolatedPolicy(
        policy_id,
        _text(fields.get("name")),
        _text(fields.get("severity")),
        _text(fields.get("action")),
    )


def _text(value: object) -> str | None:
    """A string field as a string: numbers are written out, anything else is left out."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


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
        self._build()
        _live.add(self)

    def _build(self) -> None:
        """The parts a forked child makes anew: locks, connections, the thread."""
        config = self._config
        base = dataclasses.replace(config, base_url=self._base_url)
        self._transport = Transport(base)
        # One attempt, bounded by the short timeout: for fresh checks and the refresh.
        quick = dataclasses.replace(base, http_timeout=config.firewall_check_timeout, max_retries=0)
        self._quick = Transport(quick)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.pid = os.getpid()
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
        try:
            try:
                answer = transport.send(firewall_session_path(session_id), b"", method="GET")
            except LayerHTTPError as exc:
                raise LayerFirewallHTTPError(
                    exc.status_code, exc.message, exc.response_data
                ) from None
            except LayerRequestError as exc:
                raise LayerFirewallRequestError(f"the Layer firewall: {exc}") from None
            response = decode_answer(answer.body, session_id)
        except LayerSDKException:
            self._count("_failures")
            raise
        self._count("_lookups")
        if self.enabled:
            self._learn(session_id, response)
        return response

    # -- the hot path ----------------------------------------------------------------

    def check(self, session_id: str) -> None:
        """Raise ``LayerFirewallSessionBlocked`` when the session is known to be blocked.

        No I/O, no lock: what ``append_action`` pays for the firewall.
        """
        if session_id in self._stops:
            raise self._refusal(session_id)
        self._touch(session_id)

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
        """
        if self._stops.get(session_id) is not None:
            raise self._refusal(session_id)  # blocked stays blocked: no need to ask
        if self.pid != os.getpid():
            self._restart_in_child()
        try:
            self._ask(self._quick, session_id)
        except LayerSDKException as exc:
            self._failed(session_id, exc)
            if not self.fail_closed:
                self._count("_failed_open")
                return
        finally:
            self._touch(session_id)
        if session_id in self._stops:
            raise self._refusal(session_id)

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
            try:
                self._ask(self._quick, session_id)
            except LayerSDKException as exc:
                # The firewall is down or failing: the round ends here rather than wait
                # a timeout per session; the others count as failed with this one.
                for failed in due[index:]:
                    self._failed(failed, exc)
                return

    # -- the end, and fork -----------------------------------------------------------

    def close(self, deadline: float) -> None:
        """Stop the refresh thread (waiting at most until ``deadline``) and release connections."""
        self._stopping.set()
        _live.discard(self)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._transport.close()
        self._quick.close()

    def _restart_in_child(self) -> None:
        if self.pid == os.getpid() or self._stopping.is_set():
            return
        self._touched = {}
        self._build()


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
