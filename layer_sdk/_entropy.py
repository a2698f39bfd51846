"""Random bytes from the operating system, drawn in bulk.

Session IDs and request IDs need randomness that no host application can
seed (``random.seed(42)`` in two processes must not make them collide), so
it comes from ``os.urandom``. But a system call per ID costs more than the
call itself: it releases the GIL, and under load the caller then waits for
the sender threads to give it back (``create_session``'s p99 went from 9 µs
to 600 µs). So the bytes are drawn 4 KiB at a time and handed out 16 at a
time.

A forked child must never hand out what its parent drew, also after a fork
that runs no Python at-fork hook (one made by a C extension or an embedding
server). So every draw first checks that this process drew the pool: on
Linux by reading a byte of a page that the kernel zeroes in a forked child
(``MADV_WIPEONFORK``, as OpenSSL and the C libraries' ``arc4random`` detect a
fork), about 40 ns; elsewhere by comparing ``os.getpid()``, a system call.
"""

from __future__ import annotations

import mmap
import os
import sys
from typing import Any

#: Bytes drawn from the operating system at once (256 IDs' worth).
DRAW_BYTES = 4096

# Taken with list.pop() and refilled with list.extend(): both are atomic, so
# two threads never get the same bytes, without a lock.
_pool: list[bytes] = []


class _PidMark:
    """Where no page can be wiped at fork: ``mark[0]`` is true in the process that set it."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    def __getitem__(self, index: int) -> bool:
        return os.getpid() == self.pid

    def __setitem__(self, index: int, value: int) -> None:
        self.pid = os.getpid()


def fork_mark() -> Any:
    """``mark[0]`` is 1 once set, and 0 again in a forked child, however it was forked."""
    # The constant is Linux's (4.14+); Python names it only from 3.12 on some builds.
    advice = getattr(mmap, "MADV_WIPEONFORK", 18 if sys.platform.startswith("linux") else None)
    if advice is not None:
        try:
            page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            page.madvise(advice)
        except (AttributeError, OSError, ValueError):  # an older kernel, another system
            pass
        else:
            return page
    return _PidMark()


#: True (``_mark[0]``) in the process that drew the pool.
_mark = fork_mark()


def random_16() -> bytes:
    """Sixteen bytes from the operating system's randomness."""
    if _mark[0]:
        try:
            return _pool.pop()
        except IndexError:
            pass
    return _draw()


def _draw() -> bytes:
    """Refill the pool (emptied first in a process that did not draw it); one chunk of it."""
    if not _mark[0]:
        _pool.clear()  # the parent's: never handed out here
        _mark[0] = 1
    data = os.urandom(DRAW_BYTES)
    chunks = [data[i : i + 16] for i in range(0, DRAW_BYTES, 16)]
    mine = chunks.pop()
    _pool.extend(chunks)
    return mine


os.register_at_fork(after_in_child=_pool.clear)
