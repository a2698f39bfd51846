"""SQLite persistence of :class:`~layer_sdk.collector.LocalCollector` (``db=`` option).

What the collector stores is written here as it is stored, and read back when
a collector is made on the same file, so that a restarted collector still has
what the previous run kept. The schema (``PRAGMA user_version`` 1)::

    CREATE TABLE sessions (
        session_id     TEXT PRIMARY KEY,  -- canonical lower-case UUID
        application_id TEXT NOT NULL,
        start_time     TEXT,              -- RFC 3339, as sent (NULL when absent)
        end_time       TEXT,
        received_at    REAL NOT NULL,     -- Unix time when the collector stored it
        body           TEXT NOT NULL      -- the session as JSON, without its actions
    );
    CREATE TABLE actions (
        seq         INTEGER PRIMARY KEY,  -- arrival order
        session_id  TEXT NOT NULL REFERENCES sessions(session_id),
        kind        TEXT NOT NULL,
        start_time  TEXT NOT NULL,
        end_time    TEXT NOT NULL,
        received_at REAL NOT NULL,
        body        TEXT NOT NULL         -- the action as JSON, as sent
    );

Attributes and data are queried with SQLite's JSON functions, e.g.
``SELECT json_extract(body, '$.attributes."model.id"') FROM actions``.

One writer thread owns the writing connection (WAL journal, ``synchronous=NORMAL``):
the server's thread only puts each event on a queue, and the writer commits what
has piled up in one transaction. Reading at start uses a connection of its own,
closed before the writer starts.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from typing import Any

import msgspec

__all__ = ["SqliteStore", "StoredEvent"]

logger = logging.getLogger("layer_sdk")

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id     TEXT PRIMARY KEY,
    application_id TEXT NOT NULL,
    start_time     TEXT,
    end_time       TEXT,
    received_at    REAL NOT NULL,
    body           TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    seq         INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(session_id),
    kind        TEXT NOT NULL,
    start_time  TEXT NOT NULL,
    end_time    TEXT NOT NULL,
    received_at REAL NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_session ON actions (session_id, seq);
"""
_BATCH = 1000  # events written in one transaction at most


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """A session or an action, just stored by the collector.

    ``body`` is what was stored: for a session, its fields without ``actions``
    (its inline actions follow as events of their own); for an action, the
    action as sent. It is shared with the collector: read it, do not change it.
    ``stored_at`` is the Unix time (``time.time()``) of storage.
    """

    kind: str  # "session" or "action"
    session_id: str
    body: dict[str, Any]
    stored_at: float


_CLEAR = object()
_STOP = object()


class SqliteStore:
    """Writes events to an SQLite file from a thread of its own; reads them back at start."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.errors = 0  # batches that could not be written

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def load(
        self,
    ) -> tuple[list[tuple[dict[str, Any], float]], list[tuple[str, dict[str, Any]]]]:
        """Create the tables if need be; the (session, stored at) and (session id, action) kept."""
        connection = self._connect()
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise ValueError(
                    f"{self.path}: schema version {version}, this collector knows {_SCHEMA_VERSION}"
                )
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            decode = msgspec.json.decode
            sessions = [
                (decode(body), received_at)
                for body, received_at in connection.execute(
                    "SELECT body, received_at FROM sessions ORDER BY rowid"
                )
            ]
            actions = [
                (session_id, decode(body))
                for session_id, body in connection.execute(
                    "SELECT session_id, body FROM actions ORDER BY seq"
                )
            ]
        finally:
            connection.close()
        return sessions, actions

    # -- called by the collector -------------------------------------------------

    def put(self, event: StoredEvent) -> None:
        """Queue an event for writing (from any thread; never blocks)."""
        self._queue.put(event)

    def clear(self) -> None:
        """Queue the deletion of everything written (after the events queued before)."""
        self._queue.put(_CLEAR)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write, name="LocalCollector:db", daemon=True
            )
            self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what was queued before is committed; False if ``timeout`` passes first."""
        if self._thread is None:
            return self._queue.empty()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Commit what is queued, close the connection and end the writer thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    # -- the writer thread ---------------------------------------------------------

    def _write(self) -> None:
        connection = self._connect()
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < _BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                self._commit(connection, batch)
                for item in batch:
                    if isinstance(item, threading.Event):
                        item.set()
                if _STOP in batch:
                    return
        finally:
            connection.close()

    def _commit(self, connection: sqlite3.Connection, batch: list[object]) -> None:
        encode = msgspec.json.encode
        try:
            connection.execute("BEGIN")
            for item in batch:
                if isinstance(item, StoredEvent):
                    body = item.body
                    if item.kind == "session":
                        connection.execute(
                            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                            (
                                item.session_id,
                                body.get("application_id"),
                                body.get("start_time"),
                                body.get("end_time"),
                                item.stored_at,
                                encode(body).decode(),
                            ),
                        )
                    else:
                        connection.execute(
                            "INSERT INTO actions (session_id, kind, start_time, end_time,"
                            " received_at, body) VALUES (?, ?, ?, ?, ?, ?)",
                            (
                                item.session_id,
                                body.get("kind"),
                                body.get("start_time"),
                                body.get("end_time"),
                                item.stored_at,
                                encode(body).decode(),
                            ),
                        )
                elif item is _CLEAR:
                    connection.execute("DELETE FROM actions")
                    connection.execute("DELETE FROM sessions")
            connection.execute("COMMIT")
        except sqlite3.Error:
            self.errors += 1
            logger.exception("the local collector could not write to %s", self.path)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
