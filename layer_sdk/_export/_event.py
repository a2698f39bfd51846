"""One event as the export pipeline carries it, with its durable identity.

Leaf module: the queue (``_queue``), the stores behind it (``_store``, ``_spool``)
and the client share it.
"""

from __future__ import annotations

import msgspec


class Event(msgspec.Struct, gc=False):
    """One session or action, already encoded. Not tracked by the GC: a large
    backlog costs the collector nothing.

    Its identity (session, request ID, body, the actions a create carries, its
    row in a spool) is all a replay needs to send again the very body, under
    the very request ID, that a dead process may have sent.
    """

    session_id: str
    body: bytes
    creates_session: bool
    epoch: int = 0
    next: Event | None = None  # the next waiting event of the same session
    #: A create: how many of its session's actions that arrived with it (in the same
    #: batch, right behind it) travel in its body; set when its batch is sorted, and
    #: 0 once it was refused with them (it then travels alone, under a new request ID).
    joined: int = 0
    #: The X-Request-Id of the body this event travels in as its first event, the
    #: same on every attempt and every replay of that body ("": not minted yet;
    #: minted on a sender, when the event is first written to a spool or sent).
    request_id: str = ""
    #: Its row in a spool (0: kept in memory only) and the spool file holding it.
    seq: int = 0
    shelf: object = None
    #: Left by a process that died: it may have been sent already.
    replayed: bool = False
