"""Where queued events are kept: the interface behind the queue, and the in-memory store.

The ``ExportQueue`` does the bookkeeping (bounds, per-session lines, flush epochs,
retries) whatever keeps the events; an ``EventStore`` says whether they also
outlive the process. Two implement it:

- ``MemoryStore`` (the default): nothing beyond memory. Every method is a no-op,
  and the queue never calls them on its hot path.
- ``Spool`` (``_spool``, with ``spool_dir``): each batch is written to an SQLite
  file before it is sent, deleted once resolved, and replayed by the next
  process when this one dies first.

The store is called by a sender thread, outside the queue's lock, never by the
caller of ``append_action``. An event's durable identity travels with the
``Event`` itself (its session, request ID, body, the actions a create carries,
and its row in the store), so that a replay rebuilds the very bodies, under the
very request IDs, that were sent before.

A store never raises: a disk that fails is reported once, and the store turns
into memory only (``durable`` stays True so that what it holds is still read
back and deleted where it can be).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ._event import Event

#: Bytes a stored event costs beyond its body (its session, request ID, numbers), as
#: ``spool_max_bytes`` and ``stats().spooled_bytes`` count them.
SPOOL_ROW_OVERHEAD = 128


class Lost(NamedTuple):
    """Events the store gave up on that only it held (not in memory): why, and for each
    its flush epoch; the sessions whose create went with them."""

    reason: str
    epochs: list[int]
    sessions: list[str]


class News(NamedTuple):
    """What changed in the store that the queue must count."""

    #: Events of dead processes taken over, to be loaded later (they count as enqueued).
    claimed: int = 0
    #: Events only the store held, given up on (the spool full, expired, unreadable).
    lost: tuple[Lost, ...] = ()


NOTHING = News()


class StoreStats(NamedTuple):
    """What the store holds for this client: its own events and those it replays."""

    events: int = 0
    bytes: int = 0
    #: Seconds since the oldest of them was written (0.0 when none).
    oldest_age: float = 0.0


class EventStore(Protocol):
    """What the queue asks of a store; see the module docstring."""

    #: Whether events are written anywhere beyond memory (False: no method does anything).
    durable: bool

    @property
    def spilled(self) -> bool:
        """Whether events of this process wait only in the store (memory was full): newer
        events then wait behind them, so that each session keeps its order."""

    @property
    def loadable(self) -> bool:
        """Whether events wait only in the store to be read back (``load``)."""

    def write(self, batch: list[Event], *, keep: bool, forget: list[Event]) -> tuple[bool, News]:
        """Make ``batch`` durable (minting the request IDs it lacks) and delete the resolved
        events of ``forget``, in one transaction. ``keep``: the batch stays in memory too;
        else only the store holds it until ``load``. Returns whether the batch was
        written (False: it stays in memory only) and what the store had to give up."""

    def load(self, max_events: int, max_bytes: int, epoch: int) -> tuple[list[Event], News]:
        """Events held only by the store, back into memory, oldest first and in whole batches
        (a create with the actions it carries), about up to the bounds; ``epoch`` is the
        flush epoch of events taken over from dead processes."""

    def regroup(self, create: Event) -> bool:
        """Record that a create refused with its actions travels alone now (with the new
        request ID it was given). False when that could not be made durable."""

    def tend(self, epoch: int) -> News:
        """Periodic care: take over what dead processes left, give up on what expired."""

    def stats(self) -> StoreStats:
        """What the store holds now (from memory: no I/O)."""

    def close(self) -> None:
        """Let go of the files (what is left in them waits for the next process)."""


class MemoryStore:
    """The default store: events live in memory only."""

    durable = False
    spilled = False
    loadable = False

    def write(self, batch: list[Event], *, keep: bool, forget: list[Event]) -> tuple[bool, News]:
        """Nothing to write: the batch stays in memory."""
        return False, NOTHING

    def load(self, max_events: int, max_bytes: int, epoch: int) -> tuple[list[Event], News]:
        """Nothing is held beyond memory."""
        return [], NOTHING

    def regroup(self, create: Event) -> bool:
        """Nothing to record: the new request ID lives with the event."""
        return True

    def tend(self, epoch: int) -> News:
        """Nothing to tend."""
        return NOTHING

    def stats(self) -> StoreStats:
        """Nothing held beyond memory."""
        return StoreStats()

    def close(self) -> None:
        """Nothing to let go of."""
