"""How the bytes of a request travel: the backends behind the ``Transport``.

A backend sends requests, in order, and says what came back; it never
retries (that is the transport's one retry loop) and never raises for
trouble on the network. Two are built in:

- ``DirectBackend``, the SDK's own keep-alive connections (``_http``): a
  fraction of a library's CPU per request, and pipelining of a session's
  actions. The default.
- ``RequestsBackend``: ``requests``, when the environment sets a proxy for
  the API (a session of the SDK's own), or the user's own ``http_session``
  (used as given, with its adapters and retry policy).

``choose_backend`` picks one from the ``Config``. Anything with ``post_all``
and ``close`` can stand in (the tests' in-memory backend does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from .._config import Config
from .._exceptions import LayerRequestError, LayerSDKException
from .._redact import scrub
from .._tls import describe_tls_failure, requests_verify
from ._framing import PipelineClosed, ProtocolError
from ._http import MAX_ANSWER_BYTES, ConnectionPool

REQUEST_ID_HEADER = "X-Request-Id"
"""Same value on every attempt of one body, so that the server can de-duplicate; a server
that echoes it on its answers has them matched to their requests (``_http``)."""


class Response(NamedTuple):
    """What the server answered."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class Exchange(NamedTuple):
    """What came back for requests sent in order: the answers to the first of them, and
    why the others went unanswered (None: the server ended the exchange early, or all
    were answered)."""

    responses: list[Response]
    error: LayerSDKException | None


class Backend(Protocol):
    """What the transport sends through."""

    def post_all(self, url: str, requests: list[tuple[bytes, dict[str, str]]]) -> Exchange:
        """POST each (body, headers) to ``url``, in order; what came back."""

    def get(self, url: str, headers: dict[str, str]) -> Response:
        """GET ``url``; raises ``LayerRequestError`` when no answer came."""

    def close(self) -> None:
        """Release connections."""


def choose_backend(config: Config) -> Backend:
    """The backend for ``config``: the user's session, else requests behind a proxy,
    else the SDK's own client."""
    if config.http_session is not None:
        return RequestsBackend(config.http_session, config.http_timeout)
    if _proxied(config.base_url):
        # requests knows proxies (HTTPS_PROXY and friends); our own client does not.
        return RequestsBackend.own(config.base_url, config.http_timeout)
    return DirectBackend(config.base_url, config.http_timeout, config.max_concurrent_requests)


class DirectBackend:
    """The SDK's own keep-alive connections (see ``_http``)."""

    def __init__(self, base_url: str, timeout: float, pool_size: int) -> None:
        self._prefix = len(base_url) - len(urlsplit(base_url).path)
        self._pool = ConnectionPool(base_url, timeout, pool_size, echo=REQUEST_ID_HEADER)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        """One request; raises ``LayerRequestError`` when no answer came."""
        try:
            answer = self._pool.post(url[self._prefix :], body, headers)
        except (OSError, ValueError) as exc:
            why = _failure(exc)
        else:
            return Response(answer.status, answer.body, answer.headers)
        raise LayerRequestError(why)  # out here, with nothing chained: see _send

    def get(self, url: str, headers: dict[str, str]) -> Response:
        """GET ``url``; raises ``LayerRequestError`` when no answer came."""
        try:
            answer = self._pool.send("GET", url[self._prefix :], b"", headers)
        except (OSError, ValueError) as exc:
            why = _failure(exc)
        else:
            return Response(answer.status, answer.body, answer.headers)
        raise LayerRequestError(why)  # out here, with nothing chained: see _send

    def post_all(self, url: str, requests: list[tuple[bytes, dict[str, str]]]) -> Exchange:
        """The requests in order: pipelined on one connection, unless the server showed
        that it does not pipeline."""
        if len(requests) == 1 or not self._pool.pipelining:
            return _in_turn(self.post, url, requests)
        answers, error = self._pool.post_pipelined(url[self._prefix :], requests)
        if isinstance(error, PipelineClosed) and not answers:
            # Every answer was suspect (bytes after the last): pipelining is off,
            # and the requests go again one at a time, now.
            return _in_turn(self.post, url, requests)
        responses = [Response(answer.status, answer.body, answer.headers) for answer in answers]
        if error is None or isinstance(error, PipelineClosed):
            return Exchange(responses, None)  # the rest, if any, may go again at once
        return Exchange(responses, LayerRequestError(_failure(error)))

    def close(self) -> None:
        self._pool.close()


class RequestsBackend:
    """``requests``: a session of the SDK's own (for proxies) or the user's ``http_session``.

    Redirects are never followed (a 3xx is an answer like any other non-2xx:
    a failure, not retried), and answers are capped at ``MAX_ANSWER_BYTES``
    as on the SDK's own client. ``verify`` is passed on each call only for a
    session of the SDK's own: the user's keeps its settings.
    """

    def __init__(self, session: Any, timeout: float, verify: str | bool | None = None) -> None:
        self._session = session
        self._options: dict[str, Any] = {
            "timeout": timeout,
            "allow_redirects": False,
            "stream": True,  # read below, up to the cap
        }
        if verify is not None:
            self._options["verify"] = verify

    @classmethod
    def own(cls, base_url: str, timeout: float) -> RequestsBackend:
        """A backend with a session of the SDK's own, verifying TLS against the trust store."""
        import requests

        verify = requests_verify() if base_url.startswith("https:") else None
        return cls(requests.Session(), timeout, verify=verify)

    def post_all(self, url: str, requests: list[tuple[bytes, dict[str, str]]]) -> Exchange:
        """The requests in order, one at a time (requests does not pipeline)."""
        return _in_turn(self.post, url, requests)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        """One request; raises ``LayerRequestError`` when no answer came."""
        return self._send("POST", url, body, headers)

    def get(self, url: str, headers: dict[str, str]) -> Response:
        """GET ``url``; raises ``LayerRequestError`` when no answer came."""
        return self._send("GET", url, None, headers)

    def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Response:
        try:
            # .post / .get rather than .request: a user's session may override either.
            send = self._session.post if method == "POST" else self._session.get
            answer = send(url, data=body, headers=headers, **self._options)
            try:
                content = _read_capped(answer)
            finally:
                answer.close()
        except LayerRequestError:
            raise
        except Exception as exc:
            # requests' own, or whatever a user's session raises (an OAuth2Session's
            # TokenExpiredError): no answer came, as with a connection error.
            why = scrub(_failure(exc))
        else:
            return Response(answer.status_code, content, answer.headers)
        # Raised out here, with nothing chained (``from None`` would only hide it): the
        # failure's traceback holds the frames that had our headers, the token among them.
        raise LayerRequestError(why)

    def close(self) -> None:
        """The user's session is theirs to close."""


def _in_turn(
    post: Callable[[str, bytes, dict[str, str]], Response],
    url: str,
    requests: list[tuple[bytes, dict[str, str]]],
) -> Exchange:
    """The requests one at a time, each after the answer before it. It stops at the first
    that is not delivered, so that what follows is sent after it is settled, in order."""
    responses: list[Response] = []
    for body, headers in requests:
        try:
            response = post(url, body, headers)
        except LayerRequestError as exc:
            return Exchange(responses, exc)
        responses.append(response)
        if not 200 <= response.status < 300:
            break
    return Exchange(responses, None)


def _read_capped(answer: Any) -> bytes:
    """The body of a streamed requests answer, refused past ``MAX_ANSWER_BYTES``."""
    length = answer.headers.get("Content-Length", "")
    body = bytearray()
    if not (length.isdigit() and int(length) > MAX_ANSWER_BYTES):
        for chunk in answer.iter_content(64 * 1024):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                break
        else:
            return bytes(body)
    raise LayerRequestError(
        f"the Layer API's answer is larger than {MAX_ANSWER_BYTES} bytes: refused"
    )


def _failure(exc: BaseException) -> str:
    """The message of the LayerRequestError for ``exc``: what failed, never our headers."""
    if isinstance(exc, ProtocolError):
        return f"the Layer API's answer was refused: {_describe(exc)}"
    return f"could not reach the Layer API: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    # These messages name the host and the cause, never our headers.
    tls = describe_tls_failure(exc)
    if tls is not None:
        return tls
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"


def _proxied(base_url: str) -> bool:
    """Whether the environment routes ``base_url`` through a proxy."""
    import urllib.request  # at init only: it costs a fifth of the package's import time

    host = urlsplit(base_url).hostname or ""
    proxies = urllib.request.getproxies()
    scheme = urlsplit(base_url).scheme
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)
