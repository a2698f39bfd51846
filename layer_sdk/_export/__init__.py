"""The export pipeline behind the client: queue → worker → transport → HTTP client.

Read in this order: ``_exporter`` (what one ``init()`` builds, and its life
across exit and fork), ``_queue`` (the bounded store of events), ``_worker``
(the sender threads), ``_transport`` (the one retry loop), ``_retry`` (backoff
and the shared send gate), ``_backends`` (how the bytes travel), ``_http`` (the
SDK's own HTTP/1.1 client), and ``_losses`` (why events are lost, and who is told).
"""

from ._backends import Backend, Exchange, Response
from ._event import Event
from ._exporter import Exporter, Feeder, add_feeder, drain_feeders, lifecycle_lock
from ._queue import ExportStats, Put

__all__ = [
    "Backend",
    "Event",
    "Exchange",
    "ExportStats",
    "Exporter",
    "Feeder",
    "Put",
    "Response",
    "add_feeder",
    "drain_feeders",
    "lifecycle_lock",
]
