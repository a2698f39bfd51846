"""One spool file: an SQLite database in WAL mode holding one process's events.

Each process that spools writes a file of its own, ``<owner>.spool`` in the
spool directory (``_spool``), so that processes sharing a directory never
contend for a write lock, and a dead process's file is taken over whole.

The format (``FORMAT``, in ``PRAGMA user_version``; ``APPLICATION_ID`` marks the
file as ours): one table, one row per event, in the order the events were
written (``seq``), a batch at a time (``batch``: the events one write made
durable, which a create's body never crosses). What a row holds is what a
replay needs to send the very body, under the very request ID, that may have
been sent before: the session, whether it is a create and how many actions
travel in its body (``joined``), the request ID, and the event's JSON body.
Never a token or a header.

Only bodies reach the disk; the file and its WAL are created owner-only (0600).
``spool_sync="normal"`` is WAL with ``synchronous=NORMAL``: a commit is in the
operating system's hands at once (a crash of the process loses nothing
committed), on disk at the next checkpoint (a power loss may lose the last
commits, never the file). ``"full"`` syncs the WAL at every commit.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import NamedTuple

from ._store import SPOOL_ROW_OVERHEAD

#: The format of the rows; a file of another is set aside, never read.
FORMAT = 1
#: Marks a file as a layer-sdk spool (``PRAGMA application_id``): "LaYs".
APPLICATION_ID = 0x4C615973
SUFFIX = ".spool"
#: The files SQLite keeps beside a database in WAL mode.
COMPANIONS = ("-wal", "-shm")
#: How long a statement waits for a lock another connection holds (the CLI reading), ms.
BUSY_TIMEOUT_MS = 2_000
#: Bytes a row costs beyond its body, counted against ``spool_max_bytes``.
ROW_OVERHEAD = SPOOL_ROW_OVERHEAD

_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    creates INTEGER NOT NULL,
    joined INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    written REAL NOT NULL,
    body BLOB NOT NULL
)
"""
_COLUMNS = "seq, batch, session_id, creates, joined, request_id, epoch, written, body"


class Unusable(Exception):
    """A file that cannot be read as a spool: damaged, of another format, not ours."""


class Row(NamedTuple):
    """One event as a spool file holds it."""

    seq: int
    batch: int
    session_id: str
    creates: int
    joined: int
    request_id: str
    epoch: int
    written: float
    body: bytes


class Summary(NamedTuple):
    """What a file holds: per batch, in order, its first row, its rows, bytes and age."""

    batches: list[tuple[int, int, int, int, float]]  # (batch, first seq, rows, bytes, written)


class SpoolFile:
    """An open spool file: its SQLite connection (never shared across fork)."""

    def __init__(self, path: str, connection: sqlite3.Connection) -> None:
        self.path = path
        self.connection = connection
        #: The owner named by the file (``<owner>.spool``): whose lease guards it.
        self.owner = os.path.basename(path)[: -len(SUFFIX)]

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def create(cls, path: str, sync: str) -> SpoolFile:
        """A new, empty file at ``path``, owner-only. Raises ``OSError``/``sqlite3.Error``."""
        # Created here first, with its mode: SQLite gives the WAL the database's mode.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _CLOEXEC, 0o600))
        try:
            connection = _connect(path, sync)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {FORMAT}")
            connection.execute(_SCHEMA)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return cls(path, connection)

    @classmethod
    def open(cls, path: str, sync: str, *, read_only: bool = False) -> SpoolFile:
        """An existing file, left by another process (``read_only``: only to look at it).
        Raises ``Unusable`` when it cannot be read as a spool of this format,
        ``OSError``/``sqlite3.Error`` for other trouble."""
        try:
            connection = _connect(path, sync, read_only=read_only)
        except sqlite3.OperationalError as exc:
            if _damaged(exc):
                raise Unusable(str(exc)) from None
            raise  # cannot be opened here (permissions, a lock): not the file's fault
        except sqlite3.DatabaseError as exc:  # not a database at all
            raise Unusable(str(exc)) from None
        try:
            (application,) = connection.execute("PRAGMA application_id").fetchone()
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if application != APPLICATION_ID:
                raise Unusable("not a layer-sdk spool")
            if version != FORMAT:
                raise Unusable(f"format {version}, this version of layer-sdk reads {FORMAT}")
            connection.execute(f"SELECT {_COLUMNS} FROM events LIMIT 0").fetchall()
        except sqlite3.OperationalError as exc:
            # Locked, or a disk error: not the file's fault, and not set aside for it.
            connection.close()
            if _damaged(exc):
                raise Unusable(str(exc)) from None
            raise
        except (sqlite3.DatabaseError, Unusable) as exc:
            connection.close()
            raise Unusable(str(exc)) from None
        return cls(path, connection)

    # -- writing -------------------------------------------------------------------------

    def insert(self, rows: list[tuple[object, ...]], forget: list[int]) -> None:
        """Write ``rows`` (``Row`` fields, in order) and delete the rows ``forget``, in one
        transaction. Raises ``sqlite3.Error`` (nothing of it is then written)."""
        with self._transaction() as connection:
            if rows:
                connection.executemany(
                    f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
            if forget:
                connection.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in forget])

    def delete(self, seqs: list[int]) -> None:
        """Delete rows (resolved events). Raises ``sqlite3.Error``."""
        self.insert([], seqs)

    def delete_range(self, after: int, upto: int) -> None:
        """Delete the rows after ``after`` up to ``upto`` (the oldest that wait)."""
        with self._transaction() as connection:
            connection.execute("DELETE FROM events WHERE seq > ? AND seq <= ?", (after, upto))

    def regroup(self, seq: int, request_id: str) -> None:
        """The create in row ``seq`` travels alone now, under ``request_id``."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE events SET joined = 0, request_id = ? WHERE seq = ?", (request_id, seq)
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    # -- reading ---------------------------------------------------------------------------

    def rows_after(self, seq: int) -> Iterator[Row]:
        """The rows after ``seq``, in order (read lazily: stop at will)."""
        cursor = self.connection.execute(
            f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", (seq,)
        )
        try:
            for row in cursor:
                yield Row(*row)
        finally:
            cursor.close()

    def sessions(self) -> int:
        """How many sessions its rows belong to."""
        (count,) = self.connection.execute(
            "SELECT COUNT(DISTINCT session_id) FROM events"
        ).fetchone()
        return int(count)

    def summary(self) -> Summary:
        """What the file holds, batch by batch."""
        return Summary(
            self.connection.execute(
                "SELECT batch, MIN(seq), COUNT(*), SUM(LENGTH(body)), MIN(written)"
                " FROM events GROUP BY batch ORDER BY batch"
            ).fetchall()
        )

    # -- the end ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the file)."""
        with contextlib.suppress(sqlite3.Error):
            self.connection.close()

    def remove(self) -> None:
        """Close, then delete the file and its companions (needs no free space)."""
        self.close()
        remove_files(self.path)


def remove_files(path: str) -> None:
    """Delete a spool file and its WAL companions, whichever exist."""
    for name in (path, *(path + suffix for suffix in COMPANIONS)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def set_aside(path: str, why: str) -> str:
    """Rename an unusable spool file (and its WAL) out of the way, kept for a look; its
    new name. The ``-shm`` index is only a cache of the WAL: deleted."""
    aside = f"{path}.{why}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    os.replace(path, aside)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path + "-wal", aside + "-wal")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + "-shm")
    return aside


def file_bytes(path: str) -> int:
    """Bytes a spool file and its WAL take on disk (0 when gone)."""
    total = 0
    for name in (path, path + "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(name).st_size
    return total


def _connect(path: str, sync: str, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to an existing file (a file gone meanwhile is not made)."""
    uri = f"file:{_quote(path)}?mode={'ro' if read_only else 'rw'}"
    connection = sqlite3.connect(
        uri,
        uri=True,
        isolation_level=None,  # transactions are ours (BEGIN IMMEDIATE ... COMMIT)
        check_same_thread=False,  # used by one sender at a time, under the spool's lock
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    if read_only:
        return connection
    try:
        (journal,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(journal).lower() != "wal":
            raise sqlite3.OperationalError(f"WAL mode is not available here ({journal})")
        connection.execute(f"PRAGMA synchronous = {'FULL' if sync == 'full' else 'NORMAL'}")
        # The WAL is cut back to this after each checkpoint, so it does not keep its peak.
        connection.execute("PRAGMA journal_size_limit = 4194304")
    except BaseException:
        connection.close()
        raise
    return connection


def _quote(path: str) -> str:
    """``path`` as the path of a ``file:`` URI."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _damaged(exc: sqlite3.Error) -> bool:
    """Whether an error says the file itself is damaged (not a lock or a disk error)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc)


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
