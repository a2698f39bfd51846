"""The one way requests reach the Layer API, used by the synchronous path and the worker alike.

``Transport.send`` (the synchronous path) and ``Transport.deliver`` (the
worker) post a JSON body, add the standard and authentication headers, and
retry what is worth retrying in one loop (``_exchange``) with two budgets: the
synchronous path retries ``max_retries`` times and raises the documented
exception; the worker retries until ``max_retry_time`` has passed, waits in the
shared ``SendGate`` (``_retry``), and gets back a ``Delivery`` that names the
loss reason, so that it never re-classifies errors itself.

The bytes travel through a backend (``_backends``): the SDK's own HTTP client
by default, ``requests`` behind a proxy or with a user's ``http_session``,
whose own retry policy then governs: the SDK adds no retry on top.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import msgspec

from .._auth import warn_if_cleartext
from .._config import Config
from .._entropy import random_16
from .._exceptions import (
    LayerAuthError,
    LayerHTTPError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
    LayerSDKException,
)
from .._platform import USER_AGENT
from .._redact import scrub
from ._backends import Backend, Exchange, Response, choose_backend
from ._losses import REJECTED, RETRIES_EXHAUSTED, SHUTDOWN
from ._retry import Admission, RetryPolicy, SendGate, is_retryable, parse_retry_after

logger = logging.getLogger("layer_sdk")

RetryCallback = Callable[[LayerSDKException | None, float, int], None]
"""``on_retry(error, delay, count)``: told before ``count`` bodies are sent again (the
error that made them fail, or None when the server only ended the exchange early)."""

REQUEST_ID_HEADER = "X-Request-Id"
"""Same value on every attempt of one request, so that the server can de-duplicate."""


class Delivery(NamedTuple):
    """What became of one request: delivered (``loss`` is None) or why it was given up on."""

    response: Response | None
    loss: str | None = None
    error: LayerSDKException | None = None

    @property
    def status(self) -> int | None:
        """The status of the last answer, if the server answered at all."""
        return None if self.response is None else self.response.status


class BodySplicer(Protocol):
    """Fills in what was not known when bodies were encoded (``_applications``: the ID of an
    application given by name) before they are sent."""

    def splice(self, bodies: list[bytes], deadline: float) -> list[bytes] | LayerSDKException:
        """The bodies to send, or why they cannot be (after waiting until ``deadline``)."""

    def close(self) -> None:
        """Stop waiting (shutdown)."""

    def restart_in_child(self) -> None:
        """In a forked child: new locks, and whatever work was under way started again."""


#: What a body's result is before it is settled (every body is, before _exchange returns).
_UNSETTLED = Delivery(None, "unsettled")


class Transport:
    """Sends requests to the Layer API with headers, authentication and retries."""

    def __init__(
        self,
        config: Config,
        backend: Backend | None = None,
        splicer: BodySplicer | None = None,
    ) -> None:
        self._config = config
        self._own_backend = backend is None
        self._base_url = config.base_url
        self._timeout = config.http_timeout
        self._splicer = splicer
        self._auth = config.auth_provider
        if self._auth is not None:
            warn_if_cleartext(config.base_url, "the access token")
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self.retry = RetryPolicy(
            max_retries=config.max_retries, max_retry_time=config.max_retry_time
        )
        self.gate = SendGate(self.retry)
        self._backend = choose_backend(config) if backend is None else backend
        # A user's session brings its own retry policy: exactly one retry layer.
        self._own_retries = config.http_session is None

    def send(self, path: str, body: bytes, *, method: str = "POST") -> Response:
        """POST ``body`` to ``path`` now (the synchronous path); returns a 2xx response or raises.

        ``method="GET"`` reads ``path`` instead (``body`` is then ``b""``).
        Retries up to ``max_retries`` times. Raises ``LayerHTTPError`` for a
        non-2xx answer, ``LayerRequestError`` when the server cannot be reached,
        and ``LayerAuthError`` when no credentials can be had.
        """
        try:
            (delivery,) = self._exchange(path, [body], sync=True, on_retry=None, method=method)
        except LayerSDKException as exc:
            error = exc
        else:
            if delivery.error is None:
                assert delivery.response is not None
                return delivery.response
            error = delivery.error
            del delivery  # holds the server's raw answer
        # Raised from here, with no frame below: those held our headers (the token) and the
        # server's raw answer, which an error tracker capturing frame locals would send on.
        raise error.with_traceback(None)

    def deliver(self, path: str, bodies: list[bytes], *, on_retry: RetryCallback) -> list[Delivery]:
        """POST each of ``bodies`` to ``path``, in order, for the worker; says what became of
        each. Never raises for trouble on the way.

        Several bodies are pipelined on one connection (see ``_http``). Each is
        retried until ``max_retry_time`` has passed since the first attempt,
        keeping its request ID. Waits go through the shared ``SendGate``:
        shutdown cuts them short, and an unreachable API is probed by one
        request at a time. Refused credentials are retried too: the events are
        not at fault.
        """
        return self._exchange(path, bodies, sync=False, on_retry=on_retry)

    def _exchange(
        self,
        path: str,
        bodies: list[bytes],
        *,
        sync: bool,
        on_retry: RetryCallback | None,
        method: str = "POST",
    ) -> list[Delivery]:
        """The one retry loop of both paths: sends what is not settled, in order, until
        each body is delivered or given up on."""
        gate = None if sync else self.gate
        if self._splicer is not None:
            wait = self._timeout if sync else self.retry.max_retry_time
            spliced = self._splicer.splice(bodies, time.monotonic() + wait)
            if isinstance(spliced, LayerSDKException):
                if sync:
                    raise spliced
                why = (
                    REJECTED
                    if isinstance(spliced, LayerMissingRequiredConfigurationError)
                    else (SHUTDOWN if self.gate.closed else RETRIES_EXHAUSTED)
                )
                return [Delivery(None, why, spliced) for _ in bodies]
            bodies = spliced
        url = self._base_url + path
        request_ids = [random_16().hex() for _ in bodies]
        results: list[Delivery] = [_UNSETTLED] * len(bodies)
        pending = list(range(len(bodies)))  # not settled yet, in order
        last_answers: dict[int, Response] = {}
        retries = 0
        reauthenticated = False
        started = not_before = time.monotonic()
        deadline = started + self.retry.max_retry_time
        error: LayerSDKException | None = None
        while pending:
            probe = False
            if gate is not None:
                admission = gate.admit(not_before, deadline)
                if admission is Admission.CLOSED:
                    why = f"gave up: the client is shutting down (last error: {error})"
                    _give_up(results, pending, last_answers, SHUTDOWN, LayerRequestError(why))
                    break
                if admission is Admission.EXPIRED:
                    why = f"the Layer API stayed unavailable for {self.retry.max_retry_time:g} s"
                    error = error or LayerRequestError(why)
                    _give_up(results, pending, last_answers, RETRIES_EXHAUSTED, error)
                    break
                probe = admission is Admission.PROBE
            try:
                headers = self._headers
                if self._auth is not None:
                    headers = {**headers, **self._auth.get_headers()}
                if method == "GET":
                    exchange = _get(self._backend, url, headers)
                else:
                    exchange = self._backend.post_all(
                        url,
                        [
                            (bodies[i], {**headers, REQUEST_ID_HEADER: request_ids[i]})
                            for i in pending
                        ],
                    )
            except LayerAuthError as exc:
                if sync:
                    raise  # the caller learns at once that no credentials can be had
                exchange = Exchange([], exc)
            except LayerRequestError as exc:
                exchange = Exchange([], exc)
            except BaseException:
                if gate is not None:
                    gate.abandon(probe=probe)
                raise

            responses = exchange.responses
            again: list[int] = []  # sent again, in order
            unauthorized: list[int] = []
            transient = False
            retry_after: float | None = None
            for i, response in zip(pending, responses, strict=False):
                if 200 <= response.status < 300:
                    results[i] = Delivery(response)
                    continue
                refused = http_error(response)
                if response.status == 401 and self._auth is not None and not reauthenticated:
                    unauthorized.append(i)
                    again.append(i)
                    error = refused
                elif not is_retryable(response.status):
                    results[i] = Delivery(response, REJECTED, refused)
                else:
                    transient, error = True, refused
                    last_answers[i] = response
                    # Header names: lower-case from _http, case-insensitive from requests.
                    wish = parse_retry_after(response.headers.get("retry-after"))
                    if wish is not None:
                        retry_after = max(retry_after or 0.0, wish)
                    again.append(i)
            unanswered = pending[len(responses) :]
            if unanswered and (exchange.error is not None or not responses):
                # No answer at all is a failure to reach the API, whatever the backend said.
                transient = True
                error = exchange.error or LayerRequestError("the Layer API answered nothing")
            pending = again + unanswered
            if not pending:
                if gate is not None:
                    gate.passed()
                break
            if unauthorized:
                # A token the server no longer accepts: one fresh token, one more try.
                reauthenticated = True
                if self._auth is not None and self._auth.invalidate():
                    if gate is not None:
                        gate.passed()
                    continue
                for i in unauthorized:
                    results[i] = Delivery(None, REJECTED, error)
                pending = [i for i in pending if i not in unauthorized]
                if not pending:
                    if gate is not None:
                        gate.passed()
                    break
            if not transient:
                # The server answered, then ended the exchange early: the rest at once.
                if gate is not None:
                    gate.passed()
                if on_retry is not None:
                    on_retry(None, 0.0, len(pending))
                continue
            if not self._own_retries and not isinstance(error, LayerAuthError):
                if gate is not None:
                    gate.abandon(probe=probe)
                # The user's session retried already.
                _give_up(results, pending, last_answers, RETRIES_EXHAUSTED, error)
                break
            if gate is not None:
                gate.failed(probe=probe, retry_after=retry_after)
            delay = self.retry.backoff(retries, retry_after)
            now = time.monotonic()
            if retries >= self.retry.max_retries if sync else now + delay > deadline:
                _give_up(results, pending, last_answers, RETRIES_EXHAUSTED, error)
                break
            logger.debug("retrying %s in %.2f s after: %s", path, delay, error)
            retries += 1
            if on_retry is not None:
                on_retry(error, delay, len(pending))
            if sync:
                time.sleep(delay)
            else:
                not_before = now + delay
        return results

    def fresh(self) -> Transport:
        """A transport like this one, with connections of its own (for a forked child)."""
        return Transport(self._config, None if self._own_backend else self._backend, self._splicer)

    def close(self) -> None:
        """Stop waits for the send gate and release pooled connections."""
        self.gate.close()
        if self._splicer is not None:
            self._splicer.close()
        self._backend.close()


def _get(backend: Backend, url: str, headers: dict[str, str]) -> Exchange:
    """A GET as the retry loop reads an exchange: it has no body, so no Content-Type."""
    headers = {name: value for name, value in headers.items() if name != "Content-Type"}
    try:
        return Exchange([backend.get(url, headers)], None)
    except LayerRequestError as exc:
        return Exchange([], exc)


def _give_up(
    results: list[Delivery],
    pending: list[int],
    last_answers: dict[int, Response],
    loss: str,
    why: LayerSDKException | None,
) -> None:
    """Settle every body still pending as lost, for ``loss``."""
    for i in pending:
        results[i] = Delivery(last_answers.get(i), loss, why)


def http_error(response: Response) -> LayerHTTPError:
    """A LayerHTTPError carrying the server's status, message and decoded body.

    The body is scrubbed of tokens and secrets (a server may echo our
    Authorization header) before anything is taken from it, and before it is cut.
    """
    text = scrub(response.body.decode("utf-8", "replace")) if response.body else ""
    data: Any = None
    try:
        data = msgspec.json.decode(text) if text else None
    except msgspec.DecodeError:
        data = None
    message = None
    if isinstance(data, dict):
        for key in ("error", "message", "detail", "error_description"):
            if isinstance(data.get(key), str):
                message = data[key]
                break
    if message is None:
        message = text[:500] or f"HTTP {response.status}"
    return LayerHTTPError(response.status, message, data)
