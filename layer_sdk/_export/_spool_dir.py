"""A spool directory as a whole: what it holds, and emptying it (``layer-sdk spool``).

Read without disturbing the processes that use it: each file is opened read-only,
and whether its owner lives is asked of its lease (``_leases``), which the look
leaves as it found it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import NamedTuple

from ._leases import AVAILABLE, LOCK_SUFFIX, Lease, holder_lives
from ._spool_file import ROW_OVERHEAD, SUFFIX, SpoolFile, Unusable, file_bytes, remove_files


class FileReport(NamedTuple):
    """One spool file: whose, whether its owner (or the process replaying it) lives, and
    what it holds."""

    name: str
    live: bool
    events: int
    sessions: int
    bytes: int  # the events' bytes, as spool_max_bytes counts them
    disk_bytes: int  # what the file and its WAL take on disk
    oldest_age: float  # seconds; 0.0 when it holds none
    problem: str | None = None  # why it could not be read


class DirectoryReport(NamedTuple):
    """What a spool directory holds."""

    directory: str
    files: list[FileReport]
    #: Files set aside (damaged, of another format): kept for a look, never sent.
    aside: list[str]

    @property
    def events(self) -> int:
        return sum(report.events for report in self.files)

    @property
    def bytes(self) -> int:
        return sum(report.bytes for report in self.files)

    @property
    def oldest_age(self) -> float:
        return max((report.oldest_age for report in self.files), default=0.0)

    @property
    def live(self) -> list[FileReport]:
        return [report for report in self.files if report.live]


def inspect(directory: str) -> DirectoryReport:
    """What ``directory`` holds. Raises ``OSError`` when it cannot be listed."""
    names = sorted(os.listdir(directory))
    files: list[FileReport] = []
    aside: list[str] = []
    for name in names:
        if f"{SUFFIX}." in name and not name.endswith(("-wal", "-shm")):
            aside.append(name)
        if not name.endswith(SUFFIX):
            continue
        path = os.path.join(directory, name)
        live = _lives(directory, name)
        try:
            file = SpoolFile.open(path, "normal", read_only=True)
        except (Unusable, OSError, sqlite3.Error) as exc:
            files.append(FileReport(name, live, 0, 0, 0, file_bytes(path), 0.0, str(exc)))
            continue
        try:
            batches = file.summary().batches
            sessions = file.sessions()
        except sqlite3.Error as exc:
            files.append(FileReport(name, live, 0, 0, 0, file_bytes(path), 0.0, str(exc)))
            continue
        finally:
            file.close()
        events = sum(rows for _, _, rows, _, _ in batches)
        size = sum(size for _, _, _, size, _ in batches) + events * ROW_OVERHEAD
        oldest = min((written for *_, written in batches), default=None)
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        files.append(FileReport(name, live, events, sessions, size, file_bytes(path), age))
    return DirectoryReport(directory, files, aside)


class Purged(NamedTuple):
    """What ``purge`` did: the files it deleted and those it left to live processes."""

    removed: list[str]
    refused: list[str]


def purge(directory: str, *, force: bool = False) -> Purged:
    """Delete what the spool directory holds: the files of processes that are gone, and
    those set aside. A file whose lease a live process holds is left (``refused``)
    unless ``force``: that process then goes on in memory only for what it queued.
    Raises ``OSError`` when the directory cannot be listed."""
    removed: list[str] = []
    refused: list[str] = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(SUFFIX):
            owner = name[: -len(SUFFIX)]
            lease = Lease.take(os.path.join(directory, owner + LOCK_SUFFIX)) if AVAILABLE else None
            if lease is None and not force:
                refused.append(name)
                continue
            remove_files(path)
            if lease is not None:
                lease.release(remove=True)
            removed.append(name)
        elif f"{SUFFIX}." in name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            removed.append(name)
    # Lock files left without a spool file (a process that ended before its first write).
    for name in os.listdir(directory):
        if name.endswith(LOCK_SUFFIX):
            owner = name[: -len(LOCK_SUFFIX)]
            if not os.path.exists(os.path.join(directory, owner + SUFFIX)):
                lease = Lease.take(os.path.join(directory, name))
                if lease is not None:
                    lease.release(remove=True)
    return Purged(removed, refused)


def _lives(directory: str, name: str) -> bool:
    owner = name[: -len(SUFFIX)]
    return AVAILABLE and holder_lives(os.path.join(directory, owner + LOCK_SUFFIX))
