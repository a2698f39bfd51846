"""The bounded bookkeeping of events waiting to be exported.

``ExportQueue`` is pure bookkeeping: no threads, no I/O of its own, one lock that
is never held across anything slow. It

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
Waiting for the batch is what lets a session's create carry its actions: those
that arrived with it, in its batch, right behind it (``_group``), so that the
body a create travels in is decided once and can be rebuilt after a crash.

``put`` is the caller's hot path; it does the least it can under the lock. The
inbox is a chain of events (each links the next), so that a backlog adds no
container for a garbage collection to walk. A sender keeps time for the inbox
while events keep coming, so that ``put`` wakes one only for a full batch (or
the first event after a quiet spell): a wake-up is a system call on the caller's
thread.

Behind the bookkeeping, an ``EventStore`` (``_store``) keeps the events: in
memory only by default, or also on disk (``_spool``). With a durable store a
sender hands it each batch before the batch is sent (at most every half
``flush_interval``, outside the lock), and the events resolved since, to be
deleted. Memory is then a window: once half the bounds are in use, batches
stay in the store only (the queue is *spilled*) and are read back in order as
memory frees up; newer batches wait behind them, so that every session keeps
its order. What the store took over from dead processes is read back the same
way. The bounds of ``put`` count what is in memory; ``stats().queued`` counts
every event not yet resolved, in memory or only in the store. A flush of one
session whose events may be held by the store only (spilled, or behind what is)
waits as a flush of everything does, for every event accepted before it.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import msgspec

from .._daemon_pool import Pending
from .._entropy import random_16
from .._schemas import SESSIONS_PATH, actions_path, session_body
from ._event import Event
from ._losses import QUEUE_FULL, RECURSION, SESSION_FAILED, SHUTDOWN, TOO_LARGE
from ._retry import RetryState
from ._store import NOTHING, SPOOL_ROW_OVERHEAD, EventStore, MemoryStore, News

logger = logging.getLogger("layer_sdk")


class Put(enum.Enum):
    """What ``ExportQueue.put`` did with an event."""

    ACCEPTED = "accepted"
    #: Accepted, and a sender was woken: a good moment to check the worker is alive.
    WOKE = "woke"
    #: Refused (queue full, shut down): counted, and told to ``on_drop``.
    DROPPED = "dropped"
    #: Refused for its size: counted too, and the caller's error.
    TOO_LARGE = "too_large"


#: How many sessions whose create was lost the door remembers (about 150 bytes each).
LOST_SESSIONS_REMEMBERED = 10_000
_ACCEPTED, _WOKE = Put.ACCEPTED, Put.WOKE  # read once: an enum member is slower
#: A time before any: an inbox that arrived then is due, whatever ``flush_interval``.
_LONG_AGO = float("-inf")
#: A time after any: nothing is due.
_NEVER = float("inf")
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
#: A flush of one session looks for its events among at most this many in the inbox;
#: beyond, it waits for the inbox to be sorted (which it asks for at once).
INBOX_LOOK_LIMIT = 1_000
#: Sessions remembered as having lost an event (refused at the door, or given up on
#: with no flush of the session waiting for it), for their next ``flush(session_id=...)``.
MAX_LOSSY_SESSIONS = 10_000

#: What ``complete_each`` is told of a body that failed for now: it is sent again,
#: with its request, once its retry is due.
AGAIN = "again"

#: With a durable store: resolved events are deleted from it once this many wait (or
#: with the next batch, or ``flush_interval`` after the first resolved).
FORGET_BATCH = 2_000
#: With a durable store: how often it takes over what dead processes left and gives up
#: on what expired, seconds (also at the start: the spool's thread begins with it).
TEND_INTERVAL = 2.0


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
    they are enqueued like any other. With a spool, ``queued`` counts the events
    held only on disk too (``queued_bytes`` is memory), and the events taken over
    from a dead process's spool count as enqueued (``replayed`` of them).
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
    #: Events this client holds in its spool (its own and those it replays), their bytes,
    #: and the age of the oldest, seconds (all 0 without a spool).
    spooled: int = 0
    spooled_bytes: int = 0
    spooled_oldest_age: float = 0.0
    #: Events taken over from the spool of a process that died (counted in ``enqueued``).
    replayed: int = 0


class _LostHere(threading.local):
    """The session whose create this thread last saw refused at the door ("": none), and
    how many sessions had been created anew by then. Class defaults keep the read cheap
    in threads that never set them."""

    session = ""
    revivals = 0


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

    __slots__ = ("by_epochs", "epoch", "in_inbox", "lossy", "pending", "session_id")

    def __init__(self, session_id: str | None, epoch: int, timeout: float) -> None:
        self.session_id = session_id
        self.epoch = epoch
        #: A session's wait: some of its events wait in the inbox (or in the batch a
        #: durable store is writing); cleared once that batch reached the lines.
        self.in_inbox = False
        #: A session's wait for which the lines cannot tell (some of its events may be
        #: held by a durable store only): done when its epochs are, as a flush of all.
        self.by_epochs = False
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
        store: EventStore | None = None,
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
        # The idle sender that keeps time for the inbox (see KEEP_TIME_FOR), if any.
        self._keeper: threading.Condition | None = None
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
        # Sessions whose create was lost, oldest first: their actions fail at the door
        # until a create of them is let in again. Bounded apart from the queue's bytes
        # (an outage may lose millions); each thread knows the last it lost itself, so
        # that other threads losing more meanwhile cannot make it forget the session it
        # goes on appending to. A forgotten one's actions go out and are refused.
        self._dead: dict[str, None] = {}
        self._max_dead = min(max_events, LOST_SESSIONS_REMEMBERED)
        self._lost_here = _LostHere()
        self._revivals = 0  # sessions created anew after their create was lost
        self._session_waiters = 0  # wait_for_session() calls waiting

        self._store: EventStore = MemoryStore() if store is None else store
        self._durable = self._store.durable
        # (A durable store's thread sorts the inbox: no sender keeps time for it.)
        self._keeps_time = flush_interval >= MIN_KEEPER_INTERVAL and not self._durable
        # A durable store is written at half flush_interval, so that what a crash can
        # lose (events not yet written) stays within flush_interval even on a busy machine.
        self._inbox_wait = flush_interval / 2 if self._durable else flush_interval
        # The durable store's thread waits here for work (the inbox's first event, a flush).
        self._store_waiter = threading.Condition(self._lock)
        self._storing = False  # the store's thread is handing it work (outside the lock)
        self._storing_batch: list[Event] = []  # the batch it is writing
        self._forget: list[Event] = []  # resolved events still in the store, to delete
        self._forget_since = 0.0
        self._forget_bytes = 0
        self._held: list[Event] = []  # batches the store could not take, behind its backlog
        self._load_after = 0.0  # nothing came back from the store: not before then
        self._tend_at = 0.0  # due at once: the first sender takes over what dead processes left
        self._abandoned = False

        self._events = 0  # in memory: what the bounds of put() count
        self._bytes = 0
        self._backlog = 0  # unresolved events held only by the store
        self._replayed = 0
        # A flush starts a new epoch; it waits until no event of an earlier one (of its
        # session) is unresolved. The current epoch's unresolved events are the rest of
        # _events and _backlog, counted when the next flush begins (put() counts no more).
        self._epoch = 0
        self._earlier_epochs: Counter[int] = Counter()  # unresolved events of earlier ones
        self._lossy_epochs: set[int] = set()
        self._flushes: list[FlushWait] = []  # of everything, and of sessions by epochs
        self._session_flushes: dict[str, list[FlushWait]] = {}
        self._sort_flushes: list[FlushWait] = []  # of sessions with events in the inbox
        self._storing_flushes: list[FlushWait] = []  # ... in the batch the store writes
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
        # them can raise (a refused event is counted after the lock is released).
        lock.acquire()
        if self._dead and self._doomed(event, size):  # some session's create was lost
            lock.release()
            self.report()
            return Put.DROPPED
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
        self._wake_sorter()  # start the flush_interval timer, or send a full batch
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

    def _is_dead(self, session_id: str) -> bool:
        """Whether the create of ``session_id`` was lost (and not made anew since)."""
        if session_id in self._dead:
            return True
        here = self._lost_here
        return here.session == session_id and here.revivals == self._revivals

    def _revive(self, session_id: str) -> None:
        """A create of ``session_id`` is let in: its actions may follow it again."""
        if self._dead.pop(session_id, 0) is None or self._lost_here.session == session_id:
            self._revivals += 1  # what other threads remember of their losses is stale

    def _doomed(self, event: Event, size: int) -> bool:
        """Whether ``event`` fails at the door for its session's lost create: an action of
        such a session that would be let in (else it is refused for that). A create of it
        makes the session anew (refused for want of room, it is lost again)."""
        if event.creates_session:
            self._revive(event.session_id)
            return False
        if self._closed or size > self._max_event_size or not self._is_dead(event.session_id):
            return False
        self._failed[SESSION_FAILED] += 1
        self._lossy_epochs.add(self._epoch)
        self._session_lost(event.session_id, self._epoch)
        self._unreported.append((SESSION_FAILED, 1))
        return True

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
            here = self._lost_here  # this thread may append to it next
            here.session, here.revivals = event.session_id, self._revivals

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
            inbox = self._inbox_first is not None and not self._durable
            if self._sort_flushes and inbox:
                self._sort_inbox()  # a flush of a session waits for its events there
                continue
            if self._urgent or self._ready:
                return self._next_request()
            keeps_inbox = False
            if inbox:  # (a durable store's thread sorts it)
                until = self._inbox_since + self._flush_interval
                if now >= until or self._inbox_count >= self._batch_size or self._closed:
                    self._sort_inbox()
                    continue
            else:
                if (self._closed and not retries and not self._stored_work()) or (
                    now >= idle_deadline
                ):
                    self._hand_over_time()
                    return None
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

    def _wake_sorter(self) -> None:
        """Wake whoever sorts the inbox: an idle sender, or a durable store's thread."""
        if self._durable:
            self._store_waiter.notify()
        else:
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
            self._inbox_first or self._urgent or self._ready or self._retries or self._stored_work()
        )

    def _stored_work(self) -> bool:
        """With a durable store: events that its thread will hand to the senders."""
        return (
            self._durable
            and not self._abandoned
            and (bool(self._inbox_first or self._held) or self._storing or self._store.loadable)
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
                        # Those in the inbox join its line first, to fail with the others.
                        if self._inbox_first is not None:
                            self._sort_inbox()
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

    def split(self, request: Request) -> bool:
        """The server refused a merged create: its events go back to the front of their
        line, the create to travel alone and each action in its own request, so that
        only what the server refuses fails. They count as retried.

        The create alone is a new body: it gets a new request ID, recorded by a durable
        store before it can be sent (while the request still holds its session), so
        that a replay never sends the merged body again under an ID the server may
        know for the create alone. False when that could not be recorded: the request
        is still the caller's to resolve.
        """
        with self._lock:
            if id(request) not in self._in_flight:
                return True
            create = request.events[0]
            create.joined = 0
            create.request_id = random_16().hex()  # its body is made anew: a new request ID
        if create.seq and not self._store.regroup(create):
            return False
        with self._lock:
            if self._in_flight.pop(id(request), None) is None:
                return True
            session = self._sessions[request.session_id]
            session.in_flight = None
            session.push_front(request.events)
            self._retried += len(request.events)
            ready = self._urgent if request.session_id in self._session_flushes else self._ready
            ready.appendleft(request.session_id)
            self._wake()
            return True

    def _take_inbox(self) -> list[Event]:
        """Empty the inbox: its events, in arrival order, unlinked."""
        batch = []
        event = self._inbox_first
        self._inbox_first = self._inbox_last = None
        self._inbox_count = 0
        while event is not None:
            batch.append(event)
            event.next, event = None, event.next
        return batch

    def _make_ready(self, session_id: str) -> None:
        """The session has a request to send: in line after the others of its kind."""
        if session_id in self._session_flushes:
            self._urgent.append(session_id)
        else:
            self._ready.append(session_id)

    def _sort_inbox(self) -> None:
        """Move the inbox into per-session lines, in arrival order (memory only, or when a
        create failed: the actions of its session there fail with it)."""
        batch = self._take_inbox()
        self._group(batch)
        waits, self._sort_flushes = self._sort_flushes, []
        self._push(batch)
        self._inbox_placed(waits, pushed=True)

    def _inbox_placed(self, waits: list[FlushWait], *, pushed: bool) -> None:
        """The batch the session flushes ``waits`` waited for left the inbox: pushed into
        the lines (they can tell now), or held by the store only (they wait by epochs)."""
        for wait in waits:
            wait.in_inbox = False
            if not pushed and not wait.by_epochs and not wait.pending.done():
                wait.by_epochs = True
                self._flushes.append(wait)
        if waits:
            self._settle_session_flushes(waits)
            if not pushed:
                self._settle_flushes_of_everything()

    def _group(self, batch: list[Event]) -> None:
        """Decide which actions each create of ``batch`` carries in its body: those of its
        session right behind it in the batch, within ``max_batch_size`` events and
        ``max_request_bytes``. Decided once per batch, so that a replay rebuilds the body."""
        carrying: dict[str, Event] = {}  # sessions whose create may carry more
        sizes: dict[str, int] = {}
        most = self._batch_size - 1
        for event in batch:
            session_id = event.session_id
            if event.creates_session:
                event.joined = 0
                carrying[session_id] = event
                sizes[session_id] = len(event.body) + len(',"actions":[]')
                continue
            create = carrying.get(session_id)
            if create is None:
                continue
            size = sizes[session_id] + len(event.body) + 1
            if create.joined < most and size <= self._max_request_bytes:
                create.joined += 1
                sizes[session_id] = size
            else:
                del carrying[session_id]  # the rest follow as actions of a known session

    def _push(self, batch: list[Event]) -> None:
        """Put a batch into the per-session lines, in order."""
        sessions = self._sessions
        for event in batch:
            session_id = event.session_id
            if session_id in self._dead:
                if not event.creates_session:
                    self._fail([event], SESSION_FAILED)
                    continue
                self._revive(session_id)  # created again: its actions may follow
            session = sessions.get(session_id)
            if session is None:
                # Unknown sessions count as created (e.g. created with sync=True).
                session = sessions[session_id] = _Session()
            was_empty = session.first is None
            session.push(event)
            if was_empty and session.in_flight is None:
                self._make_ready(session_id)
        if self._session_waiters:
            self._resolved.notify_all()  # wait_for_session looks in the inbox too
        # A sender sorting the inbox takes one itself; the store's thread takes none.
        self._wake(len(self._urgent) + len(self._ready) - (0 if self._durable else 1))

    # -- the store behind (durable only) -------------------------------------------------

    def keep_store(self, idle_timeout: float) -> bool:
        """The durable store's thread: wait until the store has work (at most
        ``idle_timeout`` seconds) and hand it over. False once there will be none
        (shut down, what was left is left in the store)."""
        with self._lock:
            deadline = time.monotonic() + idle_timeout
            while True:
                if self._abandoned or not self._durable:
                    return False
                now = time.monotonic()
                due = self._store_work_due(now)
                if not (self._storing or self._closed):
                    due = min(due, self._tend_at)
                if due <= now:
                    self._store_step(now)
                    break
                if now >= deadline:
                    return True
                if self._store.loadable:
                    due = min(due, now + self._flush_interval)  # memory may free up
                self._store_waiter.wait(min(due, deadline) - now)
        self.report()  # what the store gave up on, or what its events' sessions cost
        return True

    def _store_work_due(self, now: float) -> float:
        """When the store's thread should next hand it what waits: the inbox to write,
        resolved events to delete, room to read events back into (monotonic; ``_NEVER``:
        nothing waits; the periodic ``tend`` aside)."""
        if self._storing or self._abandoned:
            return _NEVER
        due = _NEVER
        if self._inbox_first is not None:
            if self._inbox_count >= self._batch_size or self._closed:
                return now
            due = self._inbox_since + self._inbox_wait
        if self._forget:
            if len(self._forget) >= FORGET_BATCH or self._closed:
                return now
            due = min(due, self._forget_since + self._flush_interval)
        if self._wants_load():
            due = min(due, self._load_after)
        return due

    def _wants_load(self) -> bool:
        """Whether to read events back from the store: some wait only there, and memory is
        down to a quarter of its bounds (it is filled back to half)."""
        return (
            self._store.loadable
            and self._events * 4 <= self._max_events
            and self._bytes * 4 <= self._max_bytes
        )

    def _store_step(self, now: float, *, final: bool = False) -> None:
        """Hand the store what is due: the inbox to write, the resolved events to delete,
        room to read events back into, its periodic care. Called with the lock held once,
        on the store's thread; released while the store works (puts and the senders go
        on meanwhile).

        ``final`` (at shutdown): the inbox and the deletions, whatever is due, nothing else.
        """
        store = self._store
        batch: list[Event] = []
        if self._inbox_first is not None and (
            final
            or now >= self._inbox_since + self._inbox_wait
            or self._inbox_count >= self._batch_size
            or self._closed
        ):
            batch = self._take_inbox()
            self._group(batch)
            # Flushes of sessions that wait for the inbox wait for this batch now.
            self._storing_flushes, self._sort_flushes = self._sort_flushes, []
        forget: list[Event] = []
        if self._forget and (
            final
            or batch
            or len(self._forget) >= FORGET_BATCH
            or now >= self._forget_since + self._flush_interval
            or self._closed
        ):
            forget, self._forget = self._forget, []
            self._forget_bytes = 0
        # The batch stays in memory while memory is at most half full (the rest of it is
        # the inbox's room), and nothing older of this process waits in the store only.
        keep = (
            not store.spilled
            and self._events * 2 <= self._max_events
            and self._bytes * 2 <= self._max_bytes
        )
        load = not final and now >= self._load_after and self._wants_load()
        room = (self._max_events // 2 - self._events, self._max_bytes // 2 - self._bytes)
        tend = not final and not self._closed and now >= self._tend_at
        if tend:
            self._tend_at = now + TEND_INTERVAL
        epoch = self._epoch
        written, news, found, tended = False, NOTHING, NOTHING, NOTHING
        loaded: list[Event] = []
        self._storing, self._storing_batch = True, batch
        self._lock.release()
        try:
            if tend:  # first: at the start, what dead processes left is taken over at once
                tended = store.tend(epoch)
            if batch or forget:
                written, news = store.write(batch, keep=keep, forget=forget)
            if load:
                loaded, found = store.load(max(1, room[0]), max(1, room[1]), epoch)
        except Exception:  # the store never raises; a bug of ours must not lose the batch
            logger.exception("layer-sdk's spool failed; the batch goes on in memory only")
            for event in batch:
                event.seq, event.shelf = 0, None
            written = False
        finally:
            self._lock.acquire()
            self._storing, self._storing_batch = False, []
        for change in (tended, news, found):
            self._count(change, epoch)
        if batch:
            pushed = self._place(batch, written=written, keep=keep)
            waits, self._storing_flushes = self._storing_flushes, []
            self._inbox_placed(waits, pushed=pushed)
        if loaded and not self._abandoned:  # (abandoned: they stay in the store, unsent)
            for event in loaded:
                self._bytes += len(event.body) + EVENT_OVERHEAD
            self._events += len(loaded)
            self._backlog -= len(loaded)
            self._push(loaded)
        elif load:
            self._load_after = now + self._flush_interval  # nothing came back: not at once
        if self._held and not store.spilled:
            held, self._held = self._held, []
            self._push(held)
        self._resolved.notify_all()  # persist() may wait for this step; flush for its losses

    def _place(self, batch: list[Event], *, written: bool, keep: bool) -> bool:
        """Where a batch handed to the store goes on: the lines, the store only, or behind
        what waits in the store only. True when it went into the lines."""
        if self._abandoned:
            if written:
                self._leave(batch)
            else:
                self._fail(batch, SHUTDOWN)
        elif written and not keep:
            self._leave(batch)  # only the store holds it now, until read back
        elif not written and self._store.spilled:
            self._held += batch
        else:
            self._push(batch)
            return True
        return False

    def _leave(self, events: list[Event]) -> None:
        """Events that from now on only the store holds: out of memory, still unresolved."""
        size = 0
        for event in events:
            size += len(event.body) + EVENT_OVERHEAD
        self._events -= len(events)
        self._bytes -= size
        self._backlog += len(events)

    def _count(self, news: News, epoch: int) -> None:
        """Count what the store took over (in ``epoch``, the one it was given) or gave up on."""
        if news.claimed:
            self._backlog += news.claimed
            self._replayed += news.claimed
            if epoch != self._epoch:  # a flush began meanwhile: it waits for them too
                self._earlier_epochs[epoch] += news.claimed
        for lost in news.lost:
            count = len(lost.epochs)
            self._backlog -= count
            self._failed[lost.reason] += count
            self._unreported.append((lost.reason, count))
            for epoch in lost.epochs:
                self._lossy_epochs.add(epoch)
                # Which session each was of, only the store knew: every flush of a session
                # that waits by epochs for this one is told of a loss.
                for wait in self._flushes:
                    if wait.by_epochs and epoch <= wait.epoch:
                        wait.lossy = True
                self._settle_epoch(epoch)
            for session_id in lost.sessions:
                self._session_lost(session_id, max(lost.epochs, default=self._epoch))
                self._bury(session_id)

    def persist(self, deadline: float) -> None:
        """At shutdown, with a durable store: write what is in memory only and delete what
        was resolved, now (waiting for a write under way, until ``deadline``)."""
        with self._lock:
            if not self._durable or self._abandoned:
                return
            while self._storing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._resolved.wait(remaining)
            if self._inbox_first is not None or self._forget:
                self._store_step(time.monotonic(), final=True)

    def _next_request(self) -> Request:
        session_id = (self._urgent or self._ready).popleft()
        session = self._sessions[session_id]
        first = session.pop()
        events = [first]
        size = len(first.body)
        if first.creates_session:
            # The create carries the actions that arrived with it (``_group``), in one body.
            path = SESSIONS_PATH
            for _ in range(first.joined):
                following = session.first
                if following is None or following.creates_session:
                    break  # (they are right behind it: they arrived with it)
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
        forget = self._forget
        for event in events:
            self._events -= 1
            self._bytes -= len(event.body) + EVENT_OVERHEAD
            if event.seq:  # in the store too: deleted there by the next store step
                if not forget:
                    self._forget_since = time.monotonic()
                    self._forget_bytes = 0
                    self._store_waiter.notify()  # its deletion is due in flush_interval
                forget.append(event)
                self._forget_bytes += len(event.body) + SPOOL_ROW_OVERHEAD
            if event.epoch != current:
                earlier[event.epoch] -= 1
                if not earlier[event.epoch]:
                    del earlier[event.epoch]
                    # A flush may be waiting for exactly this epoch: only now can
                    # it be done (looking on every request costs CPU and the GIL).
                    if self._flushes:
                        self._settle_flushes_of_everything()

    def _settle_epoch(self, epoch: int) -> None:
        """One event of ``epoch`` resolved (one held only by the store)."""
        if epoch == self._epoch:
            return  # (the current epoch's are counted when the next flush begins)
        earlier = self._earlier_epochs
        earlier[epoch] -= 1
        if not earlier[epoch]:
            del earlier[epoch]
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
        dead = self._dead
        dead.pop(session_id, None)  # the latest loss is the youngest
        dead[session_id] = None
        if len(dead) > self._max_dead:
            del dead[next(iter(dead))]

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
            current = self._events + self._backlog - sum(self._earlier_epochs.values())
            if current:
                self._earlier_epochs[target] = current
            self._epoch += 1
            inbox = self._inbox_first is not None
            wait = FlushWait(session_id, target, timeout)
            if session_id is None:
                self._flushes.append(wait)
            else:
                if self._lossy_sessions.pop(session_id, 0) is None:
                    wait.lossy = True  # lost before this flush, and not told yet
                self._session_flushes.setdefault(session_id, []).append(wait)
                if self._durable and (self._backlog or self._held or self._store.spilled):
                    wait.by_epochs = True  # some of its events may be in the store only
                    self._flushes.append(wait)
                elif inbox and self._in_inbox(session_id, INBOX_LOOK_LIMIT):
                    wait.in_inbox = True
                    self._sort_flushes.append(wait)
                elif any(event.session_id == session_id for event in self._storing_batch):
                    wait.in_inbox = True
                    self._storing_flushes.append(wait)
                try:
                    self._ready.remove(session_id)  # its requests go first from now on
                except ValueError:
                    pass
                else:
                    self._urgent.append(session_id)
            if inbox:
                # Due now, whatever flush_interval (0.0 is not: the monotonic clock
                # may be younger than a long flush_interval).
                self._inbox_since = _LONG_AGO
                self._wake_sorter()
            if session_id is None or wait.by_epochs:
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
        if session_id is None or wait.by_epochs:
            self._flushes.remove(wait)
        if session_id is None:
            return
        waits = self._session_flushes[session_id]
        waits.remove(wait)
        if not waits:
            del self._session_flushes[session_id]
        for waiting in (self._sort_flushes, self._storing_flushes):
            if wait in waiting:
                waiting.remove(wait)

    def _settle_flushes_of_everything(self) -> None:
        """Settle the flushes that wait by epochs whose epochs are resolved now (under the
        lock): delivered unless an event of those epochs (of its session) was lost. A flush
        of everything tells each loss once."""
        earlier = self._earlier_epochs
        oldest = min(earlier) if earlier else self._epoch
        for wait in list(self._flushes):
            if oldest > wait.epoch:
                if wait.session_id is not None:
                    self._forget_flush(wait)
                    wait.pending.settle(not wait.lossy, None)
                    continue
                lossy = {epoch for epoch in self._lossy_epochs if epoch <= wait.epoch}
                self._lossy_epochs -= lossy
                self._flushes.remove(wait)
                wait.pending.settle(not lossy, None)

    def _settle_session_flushes(self, waits: list[FlushWait]) -> None:
        """Settle those of ``waits`` (flushes of sessions) that are done now (under the lock)."""
        for wait in list(waits):
            if wait.pending.done() or wait.by_epochs or not self._session_flushed(wait):
                continue
            self._forget_flush(wait)
            wait.pending.settle(not wait.lossy, None)

    def _session_flushed(self, wait: FlushWait) -> bool:
        """Whether no event of the wait's session and epoch is unresolved. The epochs
        along a session's line only grow, and its request in flight came before them."""
        if wait.in_inbox:
            return False
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
            self._wake_sorter()
            self._session_waiters += 1
            try:
                while (
                    session_id in self._sessions
                    or self._in_inbox(session_id)
                    or any(
                        event.session_id == session_id
                        for waiting in (self._storing_batch, self._held)
                        for event in waiting
                    )
                ):
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

    def close_store(self) -> None:
        """Let go of the store's files (after ``abandon``: what is left waits in them)."""
        self._store.close()

    def close(self) -> None:
        """Refuse new events from now on; those accepted are still delivered."""
        with self._lock:
            self._closed = True
            self._max_events = -1  # put() then takes its slow path, which checks _closed
            self._wake(len(self._idle))
            self._store_waiter.notify()

    def forget_locks(self) -> None:
        """New locks for a forked child, where a parent thread may have held the old ones."""
        self._lock = threading.RLock()
        self._lost_here = _LostHere()
        self._resolved = threading.Condition(self._lock)
        self._store_waiter = threading.Condition(self._lock)
        self._idle = []
        self._timekeeper = None
        self._keeper = None
        self._session_waiters = 0
        # The parent's flushes: no thread of this process waits for them.
        self._flushes, self._session_flushes = [], {}
        self._sort_flushes, self._storing_flushes = [], []

    def abandon(self) -> None:
        """Give up on everything still unresolved (shutdown's deadline has passed).

        With a durable store, what it holds is not given up on: it is left there for
        the next process on the same directory (still counted as queued).
        """
        with self._lock:
            self._closed = True
            self._abandoned = True
            self._max_events = -1
            events = self._take_inbox() + self._held
            self._held = []
            for session in self._sessions.values():
                events.extend(session.pop_all())
            for request in self._in_flight.values():
                events.extend(request.events)
            self._in_flight.clear()
            self._retries.clear()
            self._sessions.clear()
            self._ready.clear()
            self._urgent.clear()
            if self._durable:
                left = [event for event in events if event.seq]
                self._leave(left)
                events = [event for event in events if not event.seq]
                for event in left:  # not delivered (the next process may): not flushed
                    for wait in self._session_flushes.get(event.session_id, ()):
                        if event.epoch <= wait.epoch:
                            wait.lossy = True
            self._fail(events, SHUTDOWN)
            self._wake(len(self._idle))
            self._resolved.notify_all()
            self._store_waiter.notify()
            # What the store holds is left there: the flushes waiting for it end too.
            self._sort_flushes, self._storing_flushes = [], []
            for waits in list(self._session_flushes.values()):
                for wait in waits:
                    wait.in_inbox = False
                self._settle_session_flushes(waits)
            self._settle_flushes_of_everything()
        self.report()

    def stats(self) -> ExportStats:
        """A consistent snapshot of the counts."""
        stored = self._store.stats()
        with self._lock:
            dropped = dict(self._dropped)
            if self._dropped_reentering:
                dropped[RECURSION] = dropped.get(RECURSION, 0) + self._dropped_reentering
            return ExportStats(
                enqueued=self._sent + sum(self._failed.values()) + self._events + self._backlog,
                sent=self._sent,
                dropped=sum(dropped.values()),
                failed=sum(self._failed.values()),
                retried=self._retried,
                queued=self._events + self._backlog,
                queued_bytes=self._bytes,
                dropped_by_reason=dropped,
                failed_by_reason=dict(self._failed),
                # Resolved ones are deleted by the next store step: not counted meanwhile.
                spooled=max(0, stored.events - len(self._forget)),
                spooled_bytes=max(0, stored.bytes - self._forget_bytes),
                spooled_oldest_age=stored.oldest_age,
                replayed=self._replayed,
            )
