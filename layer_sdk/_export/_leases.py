"""Leases on spool files: which live process may send the events of a file.

A process holds the lease of a spool file while it writes the file (its own)
or replays it (a dead process's): an exclusive POSIX record lock on
``<owner>.lock`` beside it. The kernel releases such a lock when its process
dies, however it dies (``kill -9`` included), and a forked child does not
inherit it. So a live process never sends what another live process may
send, a dead one's file is free for the first to take it, and a forked child
never replays its parent's events while the parent lives.

Two details of POSIX locks shape the code:

- They belong to the process, not to a file descriptor: a second lock taken on
  the same file by the same process succeeds, and closing *any* descriptor of
  the file releases the process's lock. So every lease held in this process is
  remembered here (``_held``), and a lease is never taken twice in one process
  (two clients on one directory, the CLI run in-process).
- A lock file may be deleted and made again while someone waits to lock it.
  A lock counts only if, once locked, the name still leads to the locked file.

Without POSIX locks (Windows) there are no leases: the spool is not used there.
"""

from __future__ import annotations

import contextlib
import os
import threading

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: Whether leases (and so the spool) work on this platform.
AVAILABLE = fcntl is not None
LOCK_SUFFIX = ".lock"

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_lock = threading.Lock()
#: Every lease this process holds, by the path of its lock file.
_held: dict[str, Lease] = {}
_pid = os.getpid()
#: What a forked child inherited (descriptors of its parent's leases): kept open and
#: untouched, never closed, so that nothing in the child can disturb the parent's locks.
_inherited: list[object] = []


class Lease:
    """A held lease: the lock file's descriptor, open and locked."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def create(cls, path: str) -> Lease | None:
        """A lease on a new name (a process's own file); None if the name is taken."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | _CLOEXEC, 0o600)
        except FileExistsError:
            return None
        return cls._lock(path, fd)

    @classmethod
    def take(cls, path: str) -> Lease | None:
        """The lease of a file left by a process that is gone; None while a live process
        holds it (this one included), or when the file went meanwhile."""
        with _lock:
            _forget_parent()
            if path in _held:
                return None  # held by this process: it lives
        try:
            fd = os.open(path, os.O_RDWR | _CLOEXEC)
        except FileNotFoundError:
            try:  # a spool file without its lock file (removed by hand): made anew
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | _CLOEXEC, 0o600)
            except FileExistsError:
                return None  # another process made it first: it is theirs
        return cls._lock(path, fd)

    @classmethod
    def _lock(cls, path: str, fd: int) -> Lease | None:
        assert fcntl is not None
        with _lock:
            _forget_parent()
            if path in _held:  # (another client of this process, meanwhile)
                os.close(fd)
                return None
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # held by a live process (this one holds no lock on it)
                return None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except OSError:
                same = False
            if not same:  # deleted (and maybe made again) while it was being locked
                os.close(fd)
                return None
            lease = _held[path] = cls(path, fd)
            return lease

    def release(self, *, remove: bool = False) -> None:
        """Let go of the lease (``remove``: and delete its lock file, first)."""
        with _lock:
            if _held.get(self.path) is not self:
                return  # released already, or inherited across fork
            del _held[self.path]
            if remove:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            with contextlib.suppress(OSError):
                os.close(self._fd)


def holder_lives(path: str) -> bool:
    """Whether a live process (this one included) holds the lease of ``path``; the look
    leaves it as it was (a lock file that is not there is not made)."""
    with _lock:
        _forget_parent()
        if path in _held:
            return True
    if not os.path.exists(path):
        return False
    lease = Lease.take(path)
    if lease is None:
        return os.path.exists(path)  # held (else it went meanwhile: nobody holds it)
    lease.release()
    return False


def _forget_parent() -> None:
    """In a forked child (the pid changed): the parent's leases are not ours. Their
    descriptors are kept open (closing one would be harmless, but nothing is touched)."""
    global _pid
    if os.getpid() != _pid:
        _pid = os.getpid()
        _inherited.extend(_held.values())
        _held.clear()


def _forget_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it at fork
    _forget_parent()


os.register_at_fork(after_in_child=_forget_in_child)
