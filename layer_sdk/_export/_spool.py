"""The durable spool: the queue's events on disk, so that a crash or an outage loses none.

``Spool`` is the ``EventStore`` (``_store``) of a client initialized with
``spool_dir``. A sender hands it each batch before the batch is sent (at most
every half ``flush_interval``: ``append_action`` itself never touches the
disk) and the events resolved since, to be deleted; so a process killed at any
moment loses at most the events of its last ``flush_interval``. The files
(``_spool_file``) are one per process; a lease (``_leases``) says which live
process may send the events of each:

- **Its own file**, made at its first write. Memory is a window onto it: once
  the queue is half full, batches stay in the file only and are read back in
  order as memory frees up, so an outage longer than ``max_queue_bytes`` loses
  nothing (up to ``spool_max_bytes``).
- **Files of dead processes**, taken over (``tend``, at the start and every
  ``TEND_INTERVAL``) when their lease is free, read back like its own, and
  deleted once every event in them is resolved. Their events are sent under
  their request IDs, in the bodies they had (a create with the actions it
  carried), so that what the dead process had sent already is a duplicate the
  server answers without storing it again.

Bounds: ``spool_max_bytes`` over the whole directory (other processes' files as
measured at each ``tend``), ``spool_max_age`` per event. What has to go is the
oldest of what waits on disk only (never what is in memory, on its way), a
batch at a time, counted as ``spool_full`` or ``expired``; a session whose
create went loses its later actions as ``session_failed``.

Never harming the host: nothing here raises. A directory that cannot be used
(read-only, no permission, a full disk) turns the spool into memory only, with
one warning; what the file holds still goes out, and the file is deleted whole
(which needs no free space) once everything in it is resolved. A file of
another process that is damaged or of an unknown format is renamed aside, with
one warning, and the others are read on.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable

from .._entropy import random_16
from ._event import Event
from ._leases import AVAILABLE, LOCK_SUFFIX, Lease
from ._leases import _inherited as inherited
from ._losses import EXPIRED, SPOOL_FULL, SPOOL_UNREADABLE, LossLog
from ._spool_file import (
    ROW_OVERHEAD,
    SUFFIX,
    Row,
    SpoolFile,
    Unusable,
    file_bytes,
    set_aside,
)
from ._store import NOTHING, Lost, News, StoreStats

logger = logging.getLogger("layer_sdk")

#: Files of dead processes replayed at once, at most (each holds a connection and a lease).
MAX_CLAIMED = 8
#: An own file emptied (every event in it resolved) is deleted and made anew when it has
#: grown past this, so that a backlog's peak does not stay on disk.
RECYCLE_BYTES = 16 * 1024 * 1024
#: When the spool is full, what goes makes this share of ``spool_max_bytes`` room beyond
#: the need, so that the next batches do not each have to make room.
ROOM_SLACK = 0.01


class _Source:
    """A spool file whose lease this process holds: its own, or a dead process's.

    Rows after ``loaded_to`` are held on disk only (``unloaded`` of them); the
    others are in memory, on their way. ``rows`` and ``bytes`` count every row
    not yet resolved, batch by batch (for the age of the oldest).
    """

    def __init__(self, file: SpoolFile, lease: Lease, *, own: bool, epoch: int = 0) -> None:
        self.file = file
        self.lease = lease
        self.own = own
        #: A dead process's file: the flush epoch its events were counted in.
        self.epoch = epoch
        self.loaded_to = 0
        self.unloaded = 0
        self.rows = 0
        self.bytes = 0
        # Per batch, in order: its first seq, its rows left, when it was written.
        self._starts: list[int] = []
        self._left: list[int] = []
        self._written: list[float] = []
        self._first = 0  # the first batch with rows left
        #: Own file: the flush epochs of the rows held on disk only, per batch (what a
        #: file that cannot be read back loses).
        self.spilled: dict[int, Counter[int]] = {}

    def add_batch(self, first_seq: int, count: int, size: int, written: float) -> None:
        self._starts.append(first_seq)
        self._left.append(count)
        self._written.append(written)
        self.rows += count
        self.bytes += size

    def resolve(self, seq: int, size: int) -> None:
        """A row is resolved (delivered, given up on, or gone to make room)."""
        index = bisect.bisect_right(self._starts, seq) - 1
        if index < self._first or self._left[index] <= 0:
            return  # counted already
        self._left[index] -= 1
        self.rows -= 1
        self.bytes -= size
        left = self._left
        while self._first < len(left) and not left[self._first]:
            self._first += 1
        if self._first > 1024:  # drop what is done, now and then
            del self._starts[: self._first], self._left[: self._first]
            del self._written[: self._first]
            self._first = 0

    def oldest(self) -> float | None:
        """When its oldest unresolved row was written (None: none is left). Read by
        ``stats()`` without the spool's lock: a sender may be changing the lists."""
        try:
            return self._written[self._first]
        except IndexError:
            return None

    def spilled_epochs(self) -> list[int]:
        """The epochs of every row held on disk only (own file)."""
        return [epoch for epochs in self.spilled.values() for epoch in epochs.elements()]

    def unspill(self, batch: int, epoch: int) -> None:
        epochs = self.spilled.get(batch)
        if epochs is not None:
            epochs[epoch] -= 1
            if epochs[epoch] <= 0:
                del epochs[epoch]
            if not epochs:
                del self.spilled[batch]


class Spool:
    """The spool of one client (an ``EventStore``; see the module docstring)."""

    durable = True

    def __init__(
        self,
        directory: str,
        *,
        sync: str,
        max_bytes: int,
        max_age: float,
        losses: LossLog,
    ) -> None:
        self.directory = directory
        self._sync = sync
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._losses = losses
        # Held while a file is used: by one sender at a time (the queue sees to it),
        # and by close() and stats() callers.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._own: _Source | None = None
        self._owner = ""
        self._claimed: list[_Source] = []
        #: Why the spool takes no new events (None: it does).
        self._broken: str | None = None
        self._full_warned = False
        self._next_seq = 1
        self._batch = 0
        self._others_bytes = 0  # other processes' files, as last measured
        if not AVAILABLE:
            self._break_with("file locks (fcntl) are not available on this platform")
        _live.add(self)

    # -- what the queue reads (no I/O) --------------------------------------------------

    @property
    def spilled(self) -> bool:
        """Whether events of this process wait on disk only (newer ones wait behind)."""
        own = self._own
        return own is not None and own.unloaded > 0

    @property
    def loadable(self) -> bool:
        """Whether events wait on disk only, to be read back."""
        return self.spilled or any(source.unloaded for source in self._claimed)

    def stats(self) -> StoreStats:
        """What this client holds in the spool: its own events and those it replays."""
        sources = [*self._claimed, *([self._own] if self._own is not None else [])]
        oldest = [when for source in sources if (when := source.oldest()) is not None]
        age = max(0.0, time.time() - min(oldest)) if oldest else 0.0
        return StoreStats(
            sum(source.rows for source in sources), sum(source.bytes for source in sources), age
        )

    # -- the sender's calls ------------------------------------------------------------

    def write(self, batch: list[Event], *, keep: bool, forget: list[Event]) -> tuple[bool, News]:
        """Write ``batch`` to this process's file and delete the rows of ``forget``."""
        with self._lock:
            if self._gone():
                return False, NOTHING
            deletions = self._resolve(forget)
            own = self._own
            own_deletions = deletions.pop(own, []) if own is not None else []
            for source, seqs in deletions.items():
                self._delete(source, seqs)
            written, news = False, NOTHING
            if batch and self._broken is None:
                own = self._own or self._open_own()
                if own is not None:
                    room, lost = self._make_room(_size(batch))
                    news = News(lost=tuple(lost))
                    if room:
                        written = self._insert(own, batch, keep, own_deletions)
                        if written:
                            own_deletions = []
            if own is not None and own_deletions:
                self._delete(own, own_deletions)
            self._finish_sources()
            return written, news

    def load(self, max_events: int, max_bytes: int, epoch: int) -> tuple[list[Event], News]:
        """Events held on disk only, back into memory (dead processes' first), in order."""
        del epoch  # a dead process's events keep the epoch they were counted in
        with self._lock:
            if self._gone():
                return [], NOTHING
            loaded: list[Event] = []
            lost: list[Lost] = []
            own = self._own
            sources = [*self._claimed, *([own] if own is not None and own.unloaded else [])]
            for source in sources:
                if not source.unloaded:
                    continue
                if len(loaded) >= max_events or max_bytes <= 0:
                    break
                try:
                    events = self._read(source, max_events - len(loaded), max_bytes)
                except (sqlite3.Error, OSError) as exc:
                    lost.append(self._unreadable(source, exc))
                    continue
                loaded += events
                max_bytes -= _size(events)
            self._finish_sources()
            return loaded, News(lost=tuple(lost))

    def regroup(self, create: Event) -> bool:
        """Record that a create travels alone now, under its new request ID."""
        with self._lock:
            source = create.shelf
            if self._gone() or not isinstance(source, _Source):
                return False
            try:
                source.file.regroup(create.seq, create.request_id)
            except (sqlite3.Error, OSError) as exc:
                logger.warning(
                    "layer-sdk could not record in its spool that a refused session travels"
                    " alone (%s)",
                    exc,
                )
                return False
            return True

    def tend(self, epoch: int) -> News:
        """Take over the files of dead processes; give up on what waited too long."""
        with self._lock:
            if self._gone():
                return NOTHING
            claimed = 0 if self._broken is not None else self._claim(epoch)
            lost = self._expire()
            self._measure_others()
            self._finish_sources()
            return News(claimed, tuple(lost))

    def close(self) -> None:
        """Let go of every file; what is left in them waits for the next process."""
        with self._lock:
            if self._gone():
                return
            self._closed = True
            for source in self._claimed:
                source.file.close()
                source.lease.release()
            self._claimed = []
            own = self._own
            if own is not None:
                if own.rows:
                    own.file.close()
                else:
                    own.file.remove()
                own.lease.release(remove=True)
                self._own = None

    # -- writing -------------------------------------------------------------------------

    def _open_own(self) -> _Source | None:
        """This process's file, made at its first write."""
        lease: Lease | None = None
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            while lease is None:  # (a name taken by chance: another)
                owner = f"{int(time.time() * 1000):012x}-{os.getpid()}-{random_16().hex()[:8]}"
                lease = Lease.create(os.path.join(self.directory, owner + LOCK_SUFFIX))
            path = os.path.join(self.directory, owner + SUFFIX)
            file = SpoolFile.create(path, self._sync)
        except (OSError, sqlite3.Error) as exc:
            if lease is not None:
                lease.release(remove=True)
            self._break(exc)
            return None
        self._owner = owner
        self._own = _Source(file, lease, own=True)
        return self._own

    def _insert(self, own: _Source, batch: list[Event], keep: bool, forget: list[int]) -> bool:
        """One transaction: the batch in, the resolved rows out. False when it failed."""
        now = time.time()
        number = self._batch + 1
        first = seq = self._next_seq
        rows: list[tuple[object, ...]] = []
        for event in batch:
            if not event.request_id:
                event.request_id = random_16().hex()
            rows.append(
                (
                    seq,
                    number,
                    event.session_id,
                    int(event.creates_session),
                    event.joined,
                    event.request_id,
                    event.epoch,
                    now,
                    event.body,
                )
            )
            seq += 1
        try:
            own.file.insert(rows, forget)
        except (sqlite3.Error, OSError) as exc:
            self._break(exc)
            return False
        self._next_seq, self._batch = seq, number
        for event in batch:
            event.seq, event.shelf = first, own
            first += 1
        own.add_batch(self._next_seq - len(batch), len(batch), _size(batch), now)
        if keep and not own.unloaded:
            own.loaded_to = seq - 1
        else:
            own.unloaded += len(batch)
            own.spilled[number] = Counter(event.epoch for event in batch)
        return True

    def _resolve(self, events: list[Event]) -> dict[_Source, list[int]]:
        """Count resolved events out of their files; their rows to delete, by file."""
        deletions: dict[_Source, list[int]] = {}
        for event in events:
            source = event.shelf
            if isinstance(source, _Source):
                source.resolve(event.seq, len(event.body) + ROW_OVERHEAD)
                deletions.setdefault(source, []).append(event.seq)
        return deletions

    def _delete(self, source: _Source, seqs: list[int]) -> None:
        """Delete resolved rows; a failure leaves them (a replay then sends a duplicate,
        which the server answers from its request ID), and the file goes whole later."""
        if not source.rows:
            return  # the file goes whole (see _finish_sources)
        try:
            source.file.delete(seqs)
        except (sqlite3.Error, OSError) as exc:
            logger.debug("layer-sdk could not delete resolved events from its spool: %s", exc)

    def _finish_sources(self) -> None:
        """Delete the files every event of which is resolved (no free space needed)."""
        done = [s for s in self._claimed if not s.rows and not s.unloaded]
        for source in done:
            self._claimed.remove(source)
            source.file.remove()
            source.lease.release(remove=True)
        own = self._own
        if (
            own is not None
            and not own.rows
            and not own.unloaded
            and (self._broken is not None or file_bytes(own.file.path) > RECYCLE_BYTES)
        ):
            own.file.remove()  # made anew by the next write (unless broken)
            own.lease.release(remove=True)
            self._own = None

    # -- reading back ----------------------------------------------------------------------

    def _read(self, source: _Source, max_events: int, max_bytes: int) -> list[Event]:
        """Rows held on disk only, in order, up to about the bounds; never ends inside a
        create's body (the actions it carries come along)."""
        events: list[Event] = []
        carrying: dict[str, int] = {}  # per session: actions its create still carries
        owed = 0
        size = 0
        last = source.loaded_to
        replayed = not source.own
        for row in source.file.rows_after(source.loaded_to):
            if owed == 0 and (len(events) >= max_events or size >= max_bytes):
                break
            if row.creates:
                if row.joined:
                    carrying[row.session_id] = row.joined
                    owed += row.joined
            elif carrying.get(row.session_id):
                carrying[row.session_id] -= 1
                owed -= 1
            epoch = row.epoch if source.own else source.epoch
            events.append(
                Event(
                    row.session_id,
                    row.body,
                    bool(row.creates),
                    epoch,
                    joined=row.joined,
                    request_id=row.request_id,
                    seq=row.seq,
                    shelf=source,
                    replayed=replayed,
                )
            )
            if source.own:
                source.unspill(row.batch, row.epoch)
            size += len(row.body) + ROW_OVERHEAD
            last = row.seq
        source.loaded_to = last
        source.unloaded = max(0, source.unloaded - len(events))
        if events and not source.unloaded and source.own:
            source.spilled.clear()
        return events

    def _unreadable(self, source: _Source, exc: BaseException) -> Lost:
        """A file that cannot be read back: what it held on disk only is lost."""
        epochs = source.spilled_epochs() if source.own else [source.epoch] * source.unloaded
        logger.warning(
            "layer-sdk could not read back %d event(s) from its spool %s (%s): they are lost",
            source.unloaded,
            source.file.path,
            exc,
        )
        self._losses.explain(SPOOL_UNREADABLE, f"the spool {source.file.path} could not be read")
        source.unloaded = 0
        source.spilled.clear()
        if isinstance(exc, sqlite3.DatabaseError) and _damaged(exc) and not source.own:
            with contextlib.suppress(OSError):
                set_aside(source.file.path, "damaged")
        return Lost(SPOOL_UNREADABLE, epochs, [])

    # -- taking over, bounds -----------------------------------------------------------

    def _claim(self, epoch: int) -> int:
        """Take over the files of processes that are gone; how many events they hold."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return 0  # no directory yet (nothing written), or not readable: nothing to take
        taken = {source.file.owner for source in self._claimed} | {self._owner}
        count = 0
        for name in names:
            if len(self._claimed) >= MAX_CLAIMED:
                break
            owner = name[: -len(SUFFIX)]
            if not name.endswith(SUFFIX) or owner in taken:
                continue
            lease = Lease.take(os.path.join(self.directory, owner + LOCK_SUFFIX))
            if lease is None:
                continue  # a live process's (or gone meanwhile)
            source = self._open_claimed(os.path.join(self.directory, name), lease, epoch)
            if source is not None:
                self._claimed.append(source)
                count += source.unloaded
        return count

    def _open_claimed(self, path: str, lease: Lease, epoch: int) -> _Source | None:
        try:
            file = SpoolFile.open(path, self._sync)
            summary = file.summary()
        except Unusable as exc:
            with contextlib.suppress(OSError):
                aside = set_aside(path, "unusable")
                logger.warning(
                    "layer-sdk set aside a spool file it cannot read (%s): %s is now %s;"
                    " its events are not sent",
                    exc,
                    os.path.basename(path),
                    os.path.basename(aside),
                )
            lease.release(remove=True)
            return None
        except (OSError, sqlite3.Error) as exc:
            if os.path.exists(path):
                logger.warning("layer-sdk cannot open the spool file %s for now: %s", path, exc)
            lease.release(remove=not os.path.exists(path))
            return None
        source = _Source(file, lease, own=False, epoch=epoch)
        for _batch, first, rows, size, written in summary.batches:
            source.add_batch(first, rows, size + rows * ROW_OVERHEAD, written)
        source.unloaded = source.rows
        if not source.rows:
            file.remove()
            lease.release(remove=True)
            return None
        logger.info(
            "layer-sdk replays %d event(s) left in its spool by a process that ended (%s)",
            source.rows,
            os.path.basename(path),
        )
        return source

    def _make_room(self, needed: int) -> tuple[bool, list[Lost]]:
        """Room for ``needed`` more bytes within ``spool_max_bytes``: the oldest events
        held on disk only go, a batch at a time, if they must. False: no room."""
        excess = self._held_bytes() + needed - self._max_bytes
        if excess <= 0:
            return True, []
        excess += int(self._max_bytes * ROOM_SLACK)
        lost: list[Lost] = []
        sources = [*self._claimed, *([self._own] if self._own is not None else [])]
        for source in sources:
            if excess <= 0:
                break
            if source.unloaded:
                lost_here, freed = self._drop(source, SPOOL_FULL, bytes_at_least=excess)
                if lost_here is not None:
                    lost.append(lost_here)
                excess -= freed
        if lost:
            self._losses.explain(
                SPOOL_FULL,
                f"the spool in {self.directory} reached spool_max_bytes={self._max_bytes}:"
                " its oldest events went",
            )
        room = self._held_bytes() + needed <= self._max_bytes
        if not room and not self._full_warned:
            self._full_warned = True
            logger.warning(
                "layer-sdk's spool in %s is full (spool_max_bytes=%d, other processes' files"
                " included): new events are kept in memory only until it has room",
                self.directory,
                self._max_bytes,
            )
        return room, lost

    def _expire(self) -> list[Lost]:
        """Give up on events held on disk only for longer than ``spool_max_age``."""
        cutoff = time.time() - self._max_age
        lost: list[Lost] = []
        for source in [*self._claimed, *([self._own] if self._own is not None else [])]:
            oldest = source.oldest()
            if source.unloaded and oldest is not None and oldest < cutoff:
                lost_here, _ = self._drop(source, EXPIRED, written_before=cutoff)
                if lost_here is not None:
                    lost.append(lost_here)
        if lost:
            self._losses.explain(
                EXPIRED, f"they waited in the spool longer than spool_max_age={self._max_age:g} s"
            )
        return lost

    def _drop(
        self,
        source: _Source,
        reason: str,
        *,
        bytes_at_least: int = 0,
        written_before: float = 0.0,
    ) -> tuple[Lost | None, int]:
        """Delete the oldest rows held on disk only, whole batches: at least
        ``bytes_at_least`` bytes, or those written before ``written_before``. What was
        lost, and the bytes freed."""
        dropped: list[tuple[Row, int]] = []  # (the row without its body, its size)
        freed = 0
        batch = None
        try:
            for row in source.file.rows_after(source.loaded_to):
                if row.batch != batch:
                    enough = bytes_at_least and freed >= bytes_at_least
                    if enough or (written_before and row.written >= written_before):
                        break
                    batch = row.batch
                size = len(row.body) + ROW_OVERHEAD
                dropped.append((row._replace(body=b""), size))
                freed += size
        except (sqlite3.Error, OSError) as exc:
            return self._unreadable(source, exc), 0
        if not dropped:
            return None, 0
        try:
            source.file.delete_range(source.loaded_to, dropped[-1][0].seq)
        except (sqlite3.Error, OSError) as exc:
            # Given up all the same: never read back here (a later process may find them
            # and give them up again, or send them: a duplicate at worst, never a loss).
            logger.debug("layer-sdk could not delete events from its spool: %s", exc)
        epochs: list[int] = []
        sessions: list[str] = []
        for row, size in dropped:
            epochs.append(row.epoch if source.own else source.epoch)
            if row.creates:
                sessions.append(row.session_id)  # its later actions cannot follow
            if source.own:
                source.unspill(row.batch, row.epoch)
            source.resolve(row.seq, size)
        source.loaded_to = dropped[-1][0].seq
        source.unloaded -= len(dropped)
        return Lost(reason, epochs, sessions), freed

    def _held_bytes(self) -> int:
        """Bytes the spool directory holds: ours (rows not resolved) and the others' files."""
        own = self._own.bytes if self._own is not None else 0
        return own + sum(source.bytes for source in self._claimed) + self._others_bytes

    def _measure_others(self) -> None:
        """What the files of other processes take (for ``spool_max_bytes``)."""
        mine = {source.file.path for source in self._claimed}
        if self._own is not None:
            mine.add(self._own.file.path)
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        self._others_bytes = sum(
            file_bytes(path)
            for name in names
            if name.endswith(SUFFIX) and (path := os.path.join(self.directory, name)) not in mine
        )

    # -- trouble -------------------------------------------------------------------------

    def _break(self, exc: BaseException) -> None:
        """The spool cannot take new events: memory only from now on, said once."""
        self._break_with(_why(exc))

    def _break_with(self, why: str) -> None:
        if self._broken is not None:
            return
        self._broken = why
        logger.warning(
            "layer-sdk cannot use its spool in %s (%s): events are kept in memory only from"
            " now on, as without a spool (a crash loses what is queued). What the spool holds"
            " is still delivered",
            self.directory,
            why,
        )

    def _gone(self) -> bool:
        """Closed, or inherited by a forked child (which has its own spool)."""
        if os.getpid() != self._pid:
            forsake(self)
        return self._closed

    def __repr__(self) -> str:
        return f"Spool({self.directory!r}{', broken' if self._broken else ''})"


def _size(events: Iterable[Event]) -> int:
    return sum(len(event.body) + ROW_OVERHEAD for event in events)


def _why(exc: BaseException) -> str:
    """An error as a few words for the warning."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _damaged(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc)


#: Every spool not yet garbage-collected (what a forked child must leave alone).
_live: weakref.WeakSet[Spool] = weakref.WeakSet()


def forsake(spool: Spool) -> None:
    """In a forked child: the spool is its parent's. Its connections are kept, untouched
    (SQLite's connections must not cross a fork: not even closed), and it does nothing."""
    spool._pid = os.getpid()
    spool._closed = True
    sources = [*spool._claimed, *([spool._own] if spool._own is not None else [])]
    inherited.extend(source.file.connection for source in sources)
    spool._claimed, spool._own = [], None


def _forsake_in_child() -> None:
    for spool in list(_live):
        spool._lock = threading.Lock()
        if os.getpid() != spool._pid:
            forsake(spool)


os.register_at_fork(after_in_child=_forsake_in_child)
