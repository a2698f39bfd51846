"""The bounded, in-memory store of events waiting to be exported.

``ExportQueue`` is pure bookkeeping: no threads, no I/O, one lock that is never
held across anything slow. It

- admits or refuses events at the door (``put``, the hot path), within a bound
  on events and on bytes that covers everything not yet resolved: waiting,
  in flight, or waiting for a retry;
- turns waiting events into requests (``take``) so that a session travels with
  the actions queued behind it, actions of one session go one at a time in the
  order they were appended, and different sessions proceed in parallel;
- resolves requests (``complete``) and keeps the counts that ``stats()`` shows;
- holds a request that failed for now until its retry is due (``AGAIN``), so
  that a failure delays its own request without holding a sender, and its
  session's later events wait behind it;
- lets a flush wait for exactly the events accepted before it was called: all
  of them (``flush``), or those of one session (``flush(session_id=...)``, whose
  requests then go before those of sessions nobody waits for), settling a
  ``Pending`` that a thread or an event loop waits on.

Events wait in an inbox until a batch is due (``max_batch_size`` events, or the
oldest is ``flush_interval`` old, or a flush asks), then are sorted by session.
Waiting for the batch is what lets a session's create carry its actions.

``put`` is the caller's hot path; it does the least it can under the lock. The
inbox is a chain of events (each links the next), so that a backlog adds no
container for a garbage collection to walk. A sender keeps time for the inbox
while events keep coming, so that ``put`` wakes one only for a full batch (or
the first event after a quiet spell): a wake-up is a system call on the caller's
thread.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import msgspec

from .._daemon_pool import Pending
from .._entropy import random_16
from .._schemas import SESSIONS_PATH, actions_path, session_body
from ._losses import QUEUE_FULL, RECURSION, SESSION_FAILED, SHUTDOWN, TOO_LARGE
from ._retry import RetryState


class Put(enum.Enum):
    """What ``ExportQueue.put`` did with an event."""

    ACCEPTED = "accepted"
    #: Accepted, and a sender was woken: a good moment to check the worker is alive.
    WOKE = "woke"
    #: Refused (queue full, shut down): counted, and told to ``on_drop``.
    DROPPED = "dropped"
    #: Refused for its size: counted too, and the caller's error.
    TOO_LARGE = "too_large"


_ACCEPTED, _WOKE = Put.ACCEPTED, Put.WOKE  # read once: an enum member is slower
#: A time before any: an inbox that arrived then is due, whatever ``flush_interval``.
_LONG_AGO = float("-inf")
_monotonic = time.monotonic

#: For this long after the inbox last received a first event, an idle sender keeps
#: time for it (wakes every ``flush_interval`` to look), so that ``put`` need not
#: wake one for each new batch. Beyond it, senders sleep until ``put`` wakes one.
KEEP_TIME_FOR = 5.0
#: Below this ``flush_interval`` no sender keeps time that way (it would poll too
#: often): ``put`` wakes one for the first event of each batch.
MIN_KEEPER_INTERVAL = 0.02

#: Memory an event costs beyond its encoded bytes (its record, the bytes object's
#: header), counted against ``max_queue_bytes`` so that the bound covers real memory.
EVENT_OVERHEAD = 128
#: Sessions remembered as dead (create dropped or failed) so their actions fail too.
MAX_DEAD_SESSIONS = 10_000
#: A flush of one session looks for its events among at most this many in the inbox;
#: beyond, it waits for the inbox to be sorted (which it asks for at once).
INBOX_LOOK_LIMIT = 1_000
#: Sessions remembered as having lost an event (refused at the door, or given up on
#: with no flush of the session waiting for it), for their next ``flush(session_id=...)``.
MAX_LOSSY_SESSIONS = 10_000

#: What ``complete_each`` is told of a body that failed for now: it is sent again,
#: with its request, once its retry is due.
AGAIN = "again"


class Event(msgspec.Struct, gc=False):
    """One session or action, already encoded. Not tracked by the GC: a large
    backlog costs the collector nothing."""

    session_id: str
    body: bytes
    creates_session: bool
    epoch: int = 0
    #: The next event in the inbox, then the next waiting event of the same session.
    next: Event | None = None
    alone: bool = False  # a refused merged create, resent without its actions
    #: The X-Request-Id of the body this event travels in as its first event, the
    #: same on every attempt of that body ("": not sent yet).
    request_id: str = ""


class Request(msgspec.Struct, gc=False):
    """What one sender sends at once, and the events it resolves.

    Either one body that carries all the events (a session's create with its
    queued actions), or one body per event (actions of a known session, in
    append order: pipelined on one connection, see ``_http``). A request that
    failed for now keeps its bodies, its request IDs and ``retry`` (what its
    attempts came to) while it waits in the queue for its next attempt.
    """

    session_id: str
    path: str
    bodies: list[bytes]
    events: list[Event]
    retry: RetryState | None = None  # None: not sent yet

    def request_ids(self) -> list[str]:
        """The X-Request-Id of each body: its first event's, minted the first time it is
        sent (on a sender thread, never the caller's), then kept across every retry.

        One ID names exactly one body: a body made anew differently (a refused merged
        create, resent alone) gets a new one (``ExportQueue.split``).
        """
        events = self.events
        owners = events[:1] if len(self.bodies) == 1 else events
        ids = []
        for event in owners:
            if not event.request_id:
                event.request_id = random_16().hex()
            ids.append(event.request_id)
        return ids


class ExportStats(msgspec.Struct, frozen=True):
    """Counts of events since the client was initialized.

    ``enqueued == sent + failed + queued`` always holds; ``dropped`` events
    were refused at the door and never enqueued. ``truncated`` counts the
    actions whose content was cut to fit ``max_event_bytes`` (see ``_oversize``):
    they are enqueued like any other.
    """

    enqueued: int
    sent: int
    dropped: int
    failed: int
    retried: int
    queued: int
    queued_bytes: int
    dropped_by_reason: dict[str, int]
    failed_by_reason: dict[str, int]
    truncated: int = 0
    #: True for a client initialized with ``enabled=False``: nothing is counted.
    disabled: bool = False


class _Session(msgspec.Struct, gc=False):
    """A session's waiting events, oldest first, as a linked list of events.

    Neither this nor the events is tracked by the GC, so a backlog of many
    sessions adds nothing to a full collection's work.
    """

    first: Event | None = None
    last: Event | None = None
    #: The request of the session being sent (or waiting for its retry), if any.
    in_flight: Request | None = None

    def push(self, event: Event) -> None:
        if self.last is None:
            self.first = event
        else:
            self.last.next = event
        self.last = event

    def pop(self) -> Event:
        event = self.first
        assert event is not None
        self.first = event.next
        event.next = None  # unlinked: a resolved event never holds waiting ones
        if self.first is None:
            self.last = None
        return event

    def push_front(self, events: list[Event]) -> None:
        for event in reversed(events):
            event.next = self.first
            self.first = event
            if self.last is None:
                self.last = event

    def pop_actions(self) -> list[Event]:
        """The waiting actions up to the next create of the session, if any."""
        events = []
        while self.first is not None and not self.first.creates_session:
            events.append(self.pop())
        return events

    def pop_all(self) -> list[Event]:
        events = []
        while self.first is not None:
            events.append(self.pop())
        return events


class FlushWait:
    """One flush waiting on the queue: for the events of every session, or of one,
    accepted before it began (their ``epoch`` is at most ``epoch``).

    ``pending`` is settled (its value: whether they were all delivered) by
    whichever thread resolves the last of them, under the queue's lock; until
    then it holds no thread, so that an event loop can await it.
    """

    __slots__ = ("epoch", "lossy", "pending", "session_id", "sorts")

    def __init__(
        self, session_id: str | None, epoch: int, sorts: int | None, timeout: float
    ) -> None:
        self.session_id = session_id
        self.epoch = epoch
        #: The count of inbox sorts when it began (None: its events were not in the
        #: inbox); once the inbox is sorted, no event it waits for is left there.
        self.sorts: int | None = sorts
        #: A session's wait: an event of it was lost before the flush ended.
        self.lossy = False
        self.pending: Pending[bool] = Pending(timeout)


class ExportQueue:
    """Events between the caller and the worker; see the module docstring."""

    def __init__(
        self,
        *,
        max_events: int,
        max_bytes: int,
        max_event_bytes: int,
        batch_size: int,
        max_request_bytes: int,
        max_pipelined: int,
        flush_interval: float,
        on_loss: Callable[[str, int], None],
    ) -> None:
        self._on_loss = on_loss
        self._unreported: list[tuple[str, int]] = []
        # Re-entrant, and put() checks whether this thread holds it already: a
        # signal handler or a finalizer that interrupts put() and reports to
        # Layer must not wait forever on a lock its own thread holds.
        self._lock = threading.RLock()
        self._resolved = threading.Condition(self._lock)  # flush waits here
        # Senders waiting for work, the most recently idle last. Work goes to
        # the most recently idle first, so that under light load the same few
        # senders stay busy and the others stay idle long enough to exit.
        self._idle: list[threading.Condition] = []
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._max_event_bytes = max_event_bytes
        self._batch_size = batch_size
        self._max_request_bytes = max_request_bytes
        self._max_pipelined = max_pipelined
        self._flush_interval = flush_interval
        self._closed = False

        # Events waiting for a batch to be due, a chain from first to last (see ``Event.next``).
        self._inbox_first: Event | None = None
        self._inbox_last: Event | None = None
        self._inbox_count = 0
        self._inbox_since = _LONG_AGO  # when the inbox received its first event
        self._sorts = 0  # inbox sorts so far
        # The idle sender that keeps time for the inbox (see KEEP_TIME_FOR), if any.
        self._keeper: threading.Condition | None = None
        self._keeps_time = flush_interval >= MIN_KEEPER_INTERVAL
        self._max_event_size = max_event_bytes + EVENT_OVERHEAD
        self._sessions: dict[str, _Session] = {}
        self._ready: deque[str] = deque()  # sessions with waiting events and none in flight
        self._urgent: deque[str] = deque()  # the same, of sessions a flush waits for: first
        # Requests taken and not resolved, waiting for a retry ones included.
        self._in_flight: dict[int, Request] = {}
        # Requests that failed for now, by when their retry is due: (due, order, request).
        self._retries: list[tuple[float, int, Request]] = []
        self._order = itertools.count()
        # The idle sender that wakes when the next retry is due (the others sleep on).
        self._timekeeper: threading.Condition | None = None
        self._dead: dict[str, None] = {}
        self._session_waiters = 0  # wait_for_session() calls waiting

        self._events = 0
        self._bytes = 0
        # A flush starts a new epoch; it waits until no event of an earlier one (of its
        # session) is unresolved. The current epoch's unresolved events are the rest of
        # _events, counted when the next flush begins (put() counts no more than that).
        self._epoch = 0
        self._earlier_epochs: Counter[int] = Counter()  # unresolved events of earlier ones
        self._lossy_epochs: set[int] = set()
        self._flushes: list[FlushWait] = []  # of everything
        self._session_flushes: dict[str, list[FlushWait]] = {}
        self._sort_flushes: list[FlushWait] = []  # of sessions that may be in the inbox
        self._lossy_sessions: dict[str, None] = {}
        self._reentered_sessions: list[str] = []  # sessions of RECURSION drops, for flushes
        self._sent = self._retried = 0
        self._dropped: Counter[str] = Counter()
        self._dropped_reentering = 0  # RECURSION drops counted without the lock (put())
        self._failed: Counter[str] = Counter()

    # -- the caller's side ---------------------------------------------------

    def put(self, event: Event) -> Put:
        """Admit ``event``, or refuse it (counted, with the reason). Never blocks."""
        lock = self._lock
        if lock._is_owned():  # type: ignore[attr-defined]
            # This thread is inside a put() already, interrupted by a signal
            # handler or a finalizer that reports to Layer: the queue is half
            # way through a change. Counted without touching it; told later.
            self._dropped_reentering += 1
            self._lossy_epochs.add(self._epoch)
            self._reentered_sessions.append(event.session_id)
            self._unreported.append((RECURSION, 1))
            return Put.DROPPED
        size = len(event.body) + EVENT_OVERHEAD
        # acquire/release rather than ``with``: a third cheaper, and nothing between
        # them can raise (a full queue is refused after the lock is released).
        lock.acquire()
        if (
            self._events >= self._max_events  # also true once closed
            or self._bytes + size > self._max_bytes
            or size > self._max_event_size
        ):
            lock.release()
            return self._refuse_at_door(event, size)
        self._events += 1
        self._bytes += size
        event.epoch = self._epoch
        last = self._inbox_last
        self._inbox_last = event
        if last is not None:
            last.next = event
            count = self._inbox_count = self._inbox_count + 1
            if count != self._batch_size:
                lock.release()
                return _ACCEPTED
        else:
            self._inbox_first = event
            self._inbox_count = 1
            self._inbox_since = _monotonic()
            if self._keeper is not None and self._batch_size != 1:
                lock.release()  # the sender keeping time for the inbox will see it
                return _ACCEPTED
        self._wake()  # start the flush_interval timer, or send a full batch
        lock.release()
        return _WOKE

    def _refuse_at_door(self, event: Event, size: int) -> Put:
        with self._lock:
            if self._closed:
                reason = SHUTDOWN
            elif size > self._max_event_size:
                reason = TOO_LARGE
            else:
                reason = QUEUE_FULL
            self._refuse(event, reason)
        self.report()
        return Put.TOO_LARGE if reason == TOO_LARGE else Put.DROPPED

    def refuse(self, event: Event, reason: str) -> None:
        """Count an event dropped before it reached the door (e.g. too large)."""
        with self._lock:
            self._refuse(event, reason)
        self.report()

    def _refuse(self, event: Event, reason: str) -> None:
        self._dropped[reason] += 1
        self._unreported.append((reason, 1))
        self._lossy_epochs.add(self._epoch)
        self._session_lost(event.session_id, self._epoch)
        if event.creates_session:
            self._bury(event.session_id)

    def report(self) -> None:
        """Tell ``on_loss`` of what was lost, outside the lock."""
        with self._lock:
            losses, self._unreported = self._unreported, []
            reentered, self._reentered_sessions = self._reentered_sessions, []
            for session_id in reentered:
                self._session_lost(session_id, self._epoch)
        for reason, count in losses:
            self._on_loss(reason, count)

    # -- the worker's side ---------------------------------------------------

    def take(self, idle_timeout: float) -> Request | None:
        """The next request to send, waiting for one up to ``idle_timeout`` seconds.

        A retry that is due comes first, then the sessions that are ready.
        Returns None when idle that long, or when the queue is closed and holds
        nothing more to send. One idle sender keeps time for the retries
        waiting (it wakes when the next is due); the others sleep on.
        Losses found meanwhile are left for ``report()``, so that a raising
        ``on_loss`` cannot make a taken request disappear.
        """
        with self._lock:
            return self._wait_for_request(time.monotonic() + idle_timeout)

    def _wait_for_request(self, idle_deadline: float) -> Request | None:
        retries = self._retries
        while True:
            now = time.monotonic()
            if retries and retries[0][0] <= now:
                request = heapq.heappop(retries)[2]
                self._hand_over_time()
                return request
            if self._sort_flushes and self._inbox_first is not None:
                self._sort_inbox()  # a flush of a session waits for its events there
                continue
            if self._urgent or self._ready:
                return self._next_request()
            keeps_inbox = False
            if self._inbox_first is not None:
                due = self._inbox_since + self._flush_interval
                if now >= due or self._inbox_count >= self._batch_size or self._closed:
                    self._sort_inbox()
                    continue
                until = due
            elif (self._closed and not retries) or now >= idle_deadline:
                self._hand_over_time()
                return None
            else:
                until = idle_deadline
                # While events keep coming, one idle sender looks at the inbox every
                # flush_interval, so that put() need not wake it for the next batch.
                keeps_inbox = (
                    self._keeper is None
                    and self._keeps_time
                    and now - self._inbox_since < KEEP_TIME_FOR
                )
                if keeps_inbox:
                    until = min(until, now + self._flush_interval)
            waiter = threading.Condition(self._lock)
            self._idle.append(waiter)
            if keeps_inbox:
                self._keeper = waiter
            if retries and self._timekeeper is None:
                self._timekeeper = waiter  # this sender wakes when the next retry is due
                until = min(until, retries[0][0])
            try:
                waiter.wait(until - now)
            finally:
                if waiter in self._idle:  # timed out rather than woken
                    self._idle.remove(waiter)
                if self._timekeeper is waiter:
                    self._timekeeper = None
                if self._keeper is waiter:
                    self._keeper = None

    def _hand_over_time(self) -> None:
        """A sender leaves the wait: if retries wait and no one keeps time for them,
        another idle sender is woken to do it."""
        if self._retries and self._timekeeper is None:
            self._wake()

    def _wake(self, count: int = 1) -> None:
        """Wake up to ``count`` idle senders, the most recently idle first."""
        idle = self._idle
        for _ in range(min(count, len(idle))):
            idle.pop().notify()

    @property
    def closed(self) -> bool:
        """Whether the queue refuses new events (shutdown has begun)."""
        return self._closed

    @property
    def finished(self) -> bool:
        """Closed, with nothing left to hand out: no event waiting, no retry to come due."""
        return self._closed and not (
            self._inbox_first or self._urgent or self._ready or self._retries
        )

    def needs_more_senders(self) -> bool:
        """Whether requests are ready (or retries due) that no idle sender will pick up."""
        with self._lock:
            retries = self._retries
            due = bool(retries) and retries[0][0] <= time.monotonic()
            return len(self._urgent) + len(self._ready) + due > len(self._idle)

    def complete(self, request: Request, failure: str | None = None, retry_at: float = 0.0) -> None:
        """Resolve a request: delivered when ``failure`` is None, else given up for that
        reason; ``AGAIN``: every body of it is sent again once ``retry_at`` (monotonic) is due."""
        self.complete_each(request, [failure] * len(request.bodies), retry_at)

    def complete_each(
        self, request: Request, failures: list[str | None], retry_at: float = 0.0
    ) -> None:
        """Resolve what became of each body of a request: ``failures[i]`` is None when body
        i was delivered, the reason it was given up on, or ``AGAIN``.

        The bodies to send ``AGAIN`` stay with the request (and their request IDs),
        which waits in the queue until ``retry_at`` (monotonic), counted as retried;
        its session's later events wait behind it. A create given up on takes
        the actions queued behind it along (``session_failed``).
        """
        with self._lock:
            if id(request) not in self._in_flight:
                return  # abandoned at shutdown and already counted
            session = self._sessions[request.session_id]
            merged = len(request.bodies) == 1
            bodies: list[bytes] = []
            events: list[Event] = []
            for index, failure in enumerate(failures):
                carried = request.events if merged else [request.events[index]]
                if failure is AGAIN:
                    bodies.append(request.bodies[index])
                    events += carried
                elif failure is None:
                    self._sent += len(carried)
                    self._resolve(carried)
                else:
                    self._fail(carried, failure)
                    if carried[0].creates_session:
                        # The server does not know this session: its actions cannot
                        # follow, up to a create of it queued again (which makes it anew).
                        self._fail(session.pop_actions(), SESSION_FAILED)
                        if session.first is None:
                            self._bury(request.session_id)
            if bodies:
                request.bodies, request.events = bodies, events
                self._retried += len(events)
                self._wait_for_retry(request, retry_at)
            else:
                del self._in_flight[id(request)]
                session.in_flight = None
                self._next_of(request.session_id, session)
            waits = self._session_flushes.get(request.session_id)
            if waits:
                self._settle_session_flushes(waits)
        self.report()

    def retry_now(self) -> None:
        """Make every request waiting for its retry due now (the API answers again after
        an outage: what waited for it need not wait any longer). Their order holds."""
        with self._lock:
            retries = self._retries
            if not retries:
                return
            retries[:] = [(0.0, order, request) for _, order, request in retries]
            heapq.heapify(retries)
            self._wake(len(retries))

    def _wait_for_retry(self, request: Request, due: float) -> None:
        """Hold a request (still in flight for its session) until ``due``; the sender
        that keeps time learns of an earlier one."""
        retries = self._retries
        heapq.heappush(retries, (due, next(self._order), request))
        if retries[0][2] is request:
            if self._timekeeper is not None:
                self._timekeeper.notify()
            else:
                self._wake()

    def _next_of(self, session_id: str, session: _Session) -> None:
        """After a request of the session is resolved: its next one is ready, if any."""
        if session.first is not None:
            self._make_ready(session_id)
            self._wake()
        else:
            del self._sessions[session_id]
            if self._session_waiters:
                self._resolved.notify_all()  # wait_for_session may be done

    def give_back(self, request: Request) -> None:
        """Return a request that was taken but not sent: it is handed out again first, as
        it is (its bodies and request IDs unchanged), and not counted as retried."""
        with self._lock:
            if id(request) in self._in_flight:
                self._wait_for_retry(request, 0.0)

    def split(self, request: Request) -> None:
        """The server refused a merged create: its events go back to the front of their
        line, the create to travel alone and each action in its own request, so that
        only what the server refuses fails. They count as retried."""
        with self._lock:
            if self._in_flight.pop(id(request), None) is None:
                return
            session = self._sessions[request.session_id]
            session.in_flight = None
            request.events[0].alone = True
            request.events[0].request_id = ""  # its body is made anew: a new request ID
            session.push_front(request.events)
            self._retried += len(request.events)
            ready = self._urgent if request.session_id in self._session_flushes else self._ready
            ready.appendleft(request.session_id)
            self._wake()

    def _take_inbox(self) -> Event | None:
        """Empty the inbox; its first event (the rest follow through ``next``)."""
        first = self._inbox_first
        self._inbox_first = self._inbox_last = None
        self._inbox_count = 0
        self._sorts += 1
        return first

    def _make_ready(self, session_id: str) -> None:
        """The session has a request to send: in line after the others of its kind."""
        if session_id in self._session_flushes:
            self._urgent.append(session_id)
        else:
            self._ready.append(session_id)

    def _sort_inbox(self) -> None:
        """Move the inbox into per-session lines, in arrival order."""
        sessions = self._sessions
        event = self._take_inbox()
        while event is not None:
            following, event.next = event.next, None
            session_id = event.session_id
            if session_id in self._dead and not event.creates_session:
                self._fail([event], SESSION_FAILED)
            else:
                # A create of a dead session makes it anew: its actions may follow.
                self._dead.pop(session_id, None)
                session = sessions.get(session_id)
                if session is None:
                    # Unknown sessions count as created (e.g. created with sync=True).
                    session = sessions[session_id] = _Session()
                was_empty = session.first is None
                session.push(event)
                if was_empty and session.in_flight is None:
                    self._make_ready(session_id)
            event = following
        if self._session_waiters:
            self._resolved.notify_all()  # wait_for_session looks in the inbox too
        if self._sort_flushes:
            waits, self._sort_flushes = self._sort_flushes, []
            self._settle_session_flushes(waits)
        ready = len(self._urgent) + len(self._ready)
        if ready > 1:
            self._wake(ready - 1)

    def _next_request(self) -> Request:
        session_id = (self._urgent or self._ready).popleft()
        session = self._sessions[session_id]
        first = session.pop()
        events = [first]
        size = len(first.body)
        if first.creates_session:
            # The create carries the actions queued behind it, in one body.
            path = SESSIONS_PATH
            size += len(',"actions":[]')
            while (
                not first.alone
                and (following := session.first) is not None
                and not following.creates_session
                and len(events) < self._batch_size
                and size + len(following.body) + 1 <= self._max_request_bytes
            ):
                size += len(following.body) + 1
                events.append(session.pop())
            bodies = [session_body(first.body, [event.body for event in events[1:]])]
        else:
            # Actions of a known session: one body each, to be pipelined in order.
            path = actions_path(session_id)
            while (
                (following := session.first) is not None
                and not following.creates_session
                and len(events) < self._max_pipelined
                and size + len(following.body) <= self._max_request_bytes
            ):
                size += len(following.body)
                events.append(session.pop())
            bodies = [event.body for event in events]
        request = Request(session_id, path, bodies, events)
        session.in_flight = request
        self._in_flight[id(request)] = request
        return request

    def _fail(self, events: list[Event], reason: str) -> None:
        if not events:
            return
        self._failed[reason] += len(events)
        for event in events:
            self._lossy_epochs.add(event.epoch)
            self._session_lost(event.session_id, event.epoch)
        self._resolve(events)
        self._unreported.append((reason, len(events)))

    def _resolve(self, events: list[Event]) -> None:
        earlier, current = self._earlier_epochs, self._epoch
        for event in events:
            self._events -= 1
            self._bytes -= len(event.body) + EVENT_OVERHEAD
            if event.epoch != current:
                earlier[event.epoch] -= 1
                if not earlier[event.epoch]:
                    del earlier[event.epoch]
                    # A flush may be waiting for exactly this epoch: only now can
                    # it be done (looking on every request costs CPU and the GIL).
                    if self._flushes:
                        self._settle_flushes_of_everything()

    def _session_lost(self, session_id: str, epoch: int) -> None:
        """An event of ``session_id`` (of ``epoch``) was lost: the flush of the session
        that waits for it returns False, else the next one to begin."""
        if not session_id:
            return
        waited = False
        for wait in self._session_flushes.get(session_id, ()):
            if epoch <= wait.epoch:
                wait.lossy = waited = True
        if not waited:
            lossy = self._lossy_sessions
            lossy[session_id] = None
            if len(lossy) > MAX_LOSSY_SESSIONS:
                del lossy[next(iter(lossy))]

    def _bury(self, session_id: str) -> None:
        self._dead[session_id] = None
        if len(self._dead) > MAX_DEAD_SESSIONS:
            del self._dead[next(iter(self._dead))]

    # -- flush, shutdown, stats ----------------------------------------------

    def flush(self, timeout: float, session_id: str | None = None) -> bool:
        """Wait until every event accepted before the call (of ``session_id`` only, when
        given) is resolved.

        True when all of them were delivered within ``timeout`` seconds, and none
        (of that session) was lost since the previous flush (of it) that ended.
        """
        wait = self.begin_flush(timeout, session_id)
        wait.pending.wait()
        return self.end_flush(wait)

    def begin_flush(self, timeout: float, session_id: str | None = None) -> FlushWait:
        """Start a flush (see ``flush``): its ``pending`` is settled when it is done, and
        ``end_flush`` tells the outcome. It holds no thread meanwhile."""
        with self._lock:
            target = self._epoch
            current = self._events - sum(self._earlier_epochs.values())
            if current:
                self._earlier_epochs[target] = current
            self._epoch += 1
            in_inbox = self._inbox_first is not None
            if session_id is None:
                wait = FlushWait(None, target, None, timeout)
                self._flushes.append(wait)
            else:
                if in_inbox:
                    in_inbox = self._in_inbox(session_id, INBOX_LOOK_LIMIT)
                wait = FlushWait(session_id, target, self._sorts if in_inbox else None, timeout)
                if self._lossy_sessions.pop(session_id, 0) is None:
                    wait.lossy = True  # lost before this flush, and not told yet
                self._session_flushes.setdefault(session_id, []).append(wait)
                if in_inbox:
                    self._sort_flushes.append(wait)
                try:
                    self._ready.remove(session_id)  # its requests go first from now on
                except ValueError:
                    pass
                else:
                    self._urgent.append(session_id)
            if in_inbox:
                # Due now, whatever flush_interval (0.0 is not: the monotonic clock
                # may be younger than a long flush_interval).
                self._inbox_since = _LONG_AGO
                self._wake()
            if session_id is None:
                self._settle_flushes_of_everything()
            else:
                self._settle_session_flushes([wait])
        return wait

    def end_flush(self, wait: FlushWait) -> bool:
        """The outcome of a flush: True when all it waited for was delivered; False when
        something was lost, or its time ran out first (then it stops waiting)."""
        with self._lock:
            if wait.pending.done():
                return bool(wait.pending.value)
            self._forget_flush(wait)
            if wait.lossy and wait.session_id is not None:
                self._lossy_sessions[wait.session_id] = None  # for the next flush to tell
            wait.pending.settle(False, None)
            return False

    def _forget_flush(self, wait: FlushWait) -> None:
        session_id = wait.session_id
        if session_id is None:
            self._flushes.remove(wait)
            return
        waits = self._session_flushes[session_id]
        waits.remove(wait)
        if not waits:
            del self._session_flushes[session_id]
        if wait in self._sort_flushes:
            self._sort_flushes.remove(wait)

    def _settle_flushes_of_everything(self) -> None:
        """Settle the flushes of everything whose epochs are resolved now (under the lock):
        delivered unless an event of those epochs was lost (each loss is told once)."""
        earlier = self._earlier_epochs
        oldest = min(earlier) if earlier else self._epoch
        for wait in list(self._flushes):
            if oldest > wait.epoch:
                lossy = {epoch for epoch in self._lossy_epochs if epoch <= wait.epoch}
                self._lossy_epochs -= lossy
                self._flushes.remove(wait)
                wait.pending.settle(not lossy, None)

    def _settle_session_flushes(self, waits: list[FlushWait]) -> None:
        """Settle those of ``waits`` (flushes of sessions) that are done now (under the lock)."""
        for wait in list(waits):
            if wait.pending.done() or not self._session_flushed(wait):
                continue
            self._forget_flush(wait)
            wait.pending.settle(not wait.lossy, None)

    def _session_flushed(self, wait: FlushWait) -> bool:
        """Whether no event of the wait's session and epoch is unresolved. The epochs
        along a session's line only grow, and its request in flight came before them."""
        if wait.sorts == self._sorts:
            return False  # some are in the inbox
        session = self._sessions.get(wait.session_id)  # type: ignore[arg-type]
        if session is None:
            return True
        first, request = session.first, session.in_flight
        if first is not None and first.epoch <= wait.epoch:
            return False
        return request is None or request.events[0].epoch > wait.epoch

    def wait_for_session(self, session_id: str, timeout: float) -> bool:
        """Wait until no event of ``session_id`` is queued or in flight."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._inbox_since = _LONG_AGO
            self._wake()
            self._session_waiters += 1
            try:
                while session_id in self._sessions or self._in_inbox(session_id):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._resolved.wait(remaining)
                return True
            finally:
                self._session_waiters -= 1

    def _in_inbox(self, session_id: str, limit: float = float("inf")) -> bool:
        """Whether an event of ``session_id`` is in the inbox (True too when more than
        ``limit`` events would have to be looked at to tell)."""
        event = self._inbox_first
        looked = 0
        while event is not None:
            if event.session_id == session_id or looked >= limit:
                return True
            event = event.next
            looked += 1
        return False

    def close(self) -> None:
        """Refuse new events from now on; those accepted are still delivered."""
        with self._lock:
            self._closed = True
            self._max_events = -1  # put() then takes its slow path, which checks _closed
            self._wake(len(self._idle))

    def forget_locks(self) -> None:
        """New locks for a forked child, where a parent thread may have held the old ones."""
        self._lock = threading.RLock()
        self._resolved = threading.Condition(self._lock)
        self._idle = []
        self._timekeeper = None
        self._keeper = None
        self._session_waiters = 0
        # The parent's flushes: no thread of this process waits for them.
        self._flushes, self._session_flushes, self._sort_flushes = [], {}, []

    def abandon(self) -> None:
        """Give up on everything still unresolved (shutdown's deadline has passed)."""
        with self._lock:
            self._closed = True
            self._max_events = -1
            events = []
            event = self._take_inbox()
            while event is not None:
                events.append(event)
                following, event.next = event.next, None
                event = following
            for session in self._sessions.values():
                events.extend(session.pop_all())
            for request in self._in_flight.values():
                events.extend(request.events)
            self._in_flight.clear()
            self._retries.clear()
            self._sessions.clear()
            self._ready.clear()
            self._urgent.clear()
            self._fail(events, SHUTDOWN)
            self._wake(len(self._idle))
            self._resolved.notify_all()
            self._settle_flushes_of_everything()
            for waits in list(self._session_flushes.values()):
                self._settle_session_flushes(waits)
        self.report()

    def stats(self) -> ExportStats:
        """A consistent snapshot of the counts."""
        with self._lock:
            dropped = dict(self._dropped)
            if self._dropped_reentering:
                dropped[RECURSION] = dropped.get(RECURSION, 0) + self._dropped_reentering
            return ExportStats(
                enqueued=self._sent + sum(self._failed.values()) + self._events,
                sent=self._sent,
                dropped=sum(dropped.values()),
                failed=sum(self._failed.values()),
                retried=self._retried,
                queued=self._events,
                queued_bytes=self._bytes,
                dropped_by_reason=dropped,
                failed_by_reason=dict(self._failed),
            )
