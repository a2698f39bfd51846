"""An in-memory ``Backend`` for tests: scripted answers, every request recorded.

The transport, the worker and the exporter send through any ``Backend`` (see
``layer_sdk/_export/_backends.py``). This one sends nothing anywhere: it answers
each request from a script, in order, and keeps what it was asked, so that
retry and ordering logic can be tested without sockets::

    backend = MemoryBackend(answer(503, retry_after="0"), answer(202))
    transport = Transport(config, backend)
    transport.send("/v1/sessions", b"{}")  # a 503, retried, then the 202
    first, second = backend.requests
    assert first.request_id == second.request_id  # a retry keeps its ID

Each request takes the next entry of the script, which is one of:

- a ``Response`` (``answer(status, ...)`` builds one): the answer to it;
- a ``LayerRequestError``: no answer to it, nor to the requests after it in
  the same exchange (a refused or dropped connection);
- ``CUT``: the server closed the connection there, after answering the
  requests before it (a pipeline cut short). As on a real connection, a cut
  before any answer is a connection error.

When the script runs out, ``then`` answers every request: an entry, or a
function of the request (``Sent``) returning one, e.g.
``then=lambda sent: answer(422) if b"bad" in sent.body else OK``. The
function runs outside the backend's lock, so it may block to hold requests
in flight. The backend is safe to use from several sender threads at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from layer_sdk._exceptions import LayerRequestError
from layer_sdk._export._backends import Exchange, Response
from layer_sdk._export._transport import REQUEST_ID_HEADER


class _Cut:
    def __repr__(self) -> str:
        return "CUT"


#: The server closes the connection here (see the module docstring).
CUT = _Cut()

Answer = Response | LayerRequestError | _Cut


def answer(
    status: int = 200,
    body: bytes = b"",
    *,
    retry_after: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A response; header names lower-cased, as the SDK's own client gives them."""
    fields = {name.lower(): value for name, value in (headers or {}).items()}
    if retry_after is not None:
        fields["retry-after"] = retry_after
    return Response(status, body, fields)


OK = answer(200)


class Sent(NamedTuple):
    """One request the backend was asked to send."""

    url: str
    body: bytes
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def request_id(self) -> str:
        return self.headers[REQUEST_ID_HEADER]


class MemoryBackend:
    """A ``Backend`` that answers from a script and records every request."""

    def __init__(self, *script: Answer, then: Answer | Callable[[Sent], Answer] = OK) -> None:
        self._changed = threading.Condition()
        self._script: deque[Answer] = deque(script)
        self._then = then
        self._exchanges: list[list[Sent]] = []
        self._delivered: list[Sent] = []
        self.closed = False

    def post_all(self, url: str, requests: list[tuple[bytes, dict[str, str]]]) -> Exchange:
        """Answer the requests in order from the script, until a cut or an error."""
        sent = [Sent(url, body, dict(headers)) for body, headers in requests]
        with self._changed:
            self._exchanges.append(sent)
            self._changed.notify_all()
        responses: list[Response] = []
        for request in sent:
            entry = self._next_entry(request)
            if isinstance(entry, Response):
                responses.append(entry)
                if 200 <= entry.status < 300:
                    with self._changed:
                        self._delivered.append(request)
                continue
            if isinstance(entry, _Cut) and responses:
                return Exchange(responses, None)
            if isinstance(entry, _Cut):
                entry = LayerRequestError("the server closed the connection without answering")
            return Exchange(responses, entry)
        return Exchange(responses, None)

    def _next_entry(self, request: Sent) -> Answer:
        with self._changed:
            entry = self._script.popleft() if self._script else self._then
        return entry(request) if callable(entry) else entry

    def close(self) -> None:
        self.closed = True

    # -- what was asked ------------------------------------------------------------------

    @property
    def exchanges(self) -> list[list[Sent]]:
        """Every call of ``post_all``: the requests of each, in order."""
        with self._changed:
            return [list(exchange) for exchange in self._exchanges]

    @property
    def requests(self) -> list[Sent]:
        """Every request, in the order they were posted (answered or not)."""
        return [request for exchange in self.exchanges for request in exchange]

    @property
    def delivered(self) -> list[Sent]:
        """The requests answered with a 2xx, in order: what a server would have kept."""
        with self._changed:
            return list(self._delivered)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` requests were posted; False after ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: sum(map(len, self._exchanges)) >= count, timeout)
