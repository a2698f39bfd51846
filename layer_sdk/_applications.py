"""Applications by name: listing and creating them, and resolving ``init(application_name=...)``.

``GET {base_url}/v1/applications`` lists them (a JSON array of ``{id, name, ...}``);
``POST {base_url}/v1/applications`` ``{"name", "source": "manual"}`` creates one
and answers ``{"application_id"}``.

**How a name becomes an ID without costing the caller.** ``init`` starts the
resolution (list, then create when the name is missing) on a thread of its own
and waits for it at most ``http_timeout`` seconds:

- resolved in time: the client runs with that ID, as if it had been given;
- a definite answer that the name can be neither found nor created (a 4xx
  other than 408/425/429, refused credentials, an answer that is no listing):
  ``init`` raises ``LayerMissingRequiredConfigurationError`` naming the name,
  the step and the server's answer, as clearly as a missing ID;
- a name the API calls taken (409 to the create) but does not list yet (a
  listing that lags behind creates): not a refusal; only listed again, with
  backoff, until ``max_retry_time``;
- no answer in time (the API is slow or down): ``init`` returns and the
  resolution goes on in the background, retried with backoff for up to
  ``max_retry_time``. Nothing is lost meanwhile: sessions are encoded with a
  placeholder ID, queued as usual, and the sender splices the real ID into
  each create body when it sends it (``splice``), waiting for the resolution
  first. If it fails for good, those sessions (and their actions) fail,
  counted as rejected, and the reason is logged.

The trade-off against resolving in every case before ``init`` returns: an
application whose API is briefly down starts at once instead of failing or
hanging, at the price of a name error surfacing in the log (and ``stats()``)
rather than at ``init`` when the API was unreachable at start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import msgspec

from ._exceptions import (
    LayerAuthError,
    LayerHTTPError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
    LayerSDKException,
)
from ._export._retry import RetryPolicy, is_retryable
from ._export._transport import Transport
from ._schemas import APPLICATIONS_PATH

logger = logging.getLogger("layer_sdk")

#: What a session body starts with until the application's ID is known.
PENDING_ID = "layer-application-id-pending"
_PENDING = b'{"application_id":"' + PENDING_ID.encode() + b'"'


class _Nonsense(LayerRequestError):
    """The API answered 2xx with something that is not what the call returns."""


class _NotListedYet(LayerRequestError):
    """The API refused to create the name as taken, yet does not list it (not yet)."""


def list_applications(transport: Transport) -> list[dict[str, Any]]:
    """Every application, as the API lists it; raises like a ``sync=True`` call."""
    answer = transport.send(APPLICATIONS_PATH, b"", method="GET")
    try:
        apps = msgspec.json.decode(answer.body)
    except msgspec.DecodeError:
        apps = None
    if not isinstance(apps, list) or not all(
        isinstance(app, dict)
        and isinstance(app.get("id"), str)
        and isinstance(app.get("name"), str)
        for app in apps
    ):
        raise _Nonsense(
            f"the Layer API's list of applications is not a JSON array of "
            f"{{id, name}} objects: {answer.body[:200]!r}"
        )
    return apps


def create_application(transport: Transport, name: str) -> str:
    """Create an application named ``name``; its ID. Raises like a ``sync=True`` call."""
    body = msgspec.json.encode({"name": name, "source": "manual"})
    answer = transport.send(APPLICATIONS_PATH, body)
    try:
        app_id = msgspec.json.decode(answer.body).get("application_id")
    except (msgspec.DecodeError, AttributeError):
        app_id = None
    if not isinstance(app_id, str) or not app_id:
        raise _Nonsense(
            f"the Layer API created application {name!r} but answered no application_id: "
            f"{answer.body[:200]!r}"
        )
    return app_id


def check_name(name: Any) -> str:
    """An application name, as a caller may pass it; raises ``ValueError`` naming the problem."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"an application name must be a non-empty string, got {name!r}")
    return name.strip()


class ApplicationId:
    """The ID sessions are created with: known at once, or resolved from a name."""

    def __init__(self, application_id: str) -> None:
        #: The ID, or ``PENDING_ID`` until a name is resolved.
        self.id = application_id

    def close(self) -> None:
        """Stop whatever work is under way (nothing here)."""


class ApplicationName(ApplicationId):
    """The resolution of ``application_name`` into an ID (see the module doc)."""

    def __init__(self, name: str, transport: Transport, policy: RetryPolicy) -> None:
        super().__init__(PENDING_ID)
        self.name = name
        self._transport = transport
        self._policy = policy
        self.error: LayerSDKException | None = None
        self._step = "listing applications"
        self._exists = False  # the API answered 409 to creating the name
        self._new_locks()
        self.start()

    def _new_locks(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._closed = False
        self.pid = os.getpid()

    @property
    def settled(self) -> bool:
        """Resolved, or failed for good."""
        return self.id != PENDING_ID or self.error is not None

    def start(self) -> None:
        """Resolve on a daemon thread."""
        thread = threading.Thread(target=self._resolve, name="layer-sdk-application", daemon=True)
        thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the resolution to settle; whether it did."""
        with self._changed:
            return self._changed.wait_for(lambda: self.settled or self._closed, timeout)

    def splice(self, bodies: list[bytes], deadline: float) -> list[bytes] | LayerSDKException:
        """The create bodies with the real ID spliced in, once it is known (waits for it until
        ``deadline``, monotonic); the error when it cannot be had."""
        if not any(body.startswith(_PENDING) for body in bodies):
            return bodies  # not a create encoded before the ID was known
        if not self.settled:
            self.wait(max(0.0, deadline - time.monotonic()))
        if self.error is not None:
            return self.error
        if self.id == PENDING_ID:
            return LayerRequestError(
                f"application_name {self.name!r} is not resolved to an ID yet "
                "(the Layer API did not answer)"
            )
        resolved = b'{"application_id":' + msgspec.json.encode(self.id)
        return [
            resolved + body[len(_PENDING) :] if body.startswith(_PENDING) else body
            for body in bodies
        ]

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def restart_in_child(self) -> None:
        """In a forked child: fresh locks, and a thread of its own if the name is unresolved."""
        if self.pid == os.getpid():
            return
        self._new_locks()
        self._transport = self._transport.fresh()
        if not self.settled:
            self.start()

    def _resolve(self) -> None:
        try:
            self._resolve_until_settled()
        finally:
            self._transport.close()

    def _resolve_until_settled(self) -> None:
        started = time.monotonic()
        retries = 0
        while not self._closed:
            try:
                app_id = self._find_or_create()
            except LayerSDKException as exc:
                if _definite(exc) or time.monotonic() - started > self._policy.max_retry_time:
                    self._settle(None, self._refusal(exc))
                    return
                delay = self._policy.backoff(retries)
                retries += 1
                logger.debug(
                    "resolving application_name %r again in %.1f s: %s", self.name, delay, exc
                )
                with self._changed:
                    self._changed.wait_for(lambda: self._closed, delay)
                continue
            self._settle(app_id, None)
            return

    def _find_or_create(self) -> str:
        if self._exists:
            # The API said the name exists: only its listing is awaited.
            self._step = "listing applications after a conflict"
        else:
            self._step = "listing applications"
        found = self._listed()
        if found is not None:
            return found
        if not self._exists:
            self._step = "creating the application"
            try:
                return create_application(self._transport, self.name)
            except LayerHTTPError as exc:
                if exc.status_code != 409:
                    raise
            # Created meanwhile by another process (workers starting together): its ID.
            self._exists = True
            self._step = "listing applications after a conflict"
            found = self._listed()
            if found is not None:
                return found
        # A listing that lags behind creates (a replica, a cache): transient, listed again.
        raise _NotListedYet(
            f"the Layer API says application {self.name!r} exists, yet does not list it"
        )

    def _listed(self) -> str | None:
        """The ID of the application named ``self.name``, if the API lists it."""
        for app in list_applications(self._transport):
            if app["name"] == self.name:
                return str(app["id"])
        return None

    def _refusal(self, exc: LayerSDKException) -> LayerMissingRequiredConfigurationError:
        step = self._step
        error = LayerMissingRequiredConfigurationError(
            f"application_id is required: application_name {self.name!r} could not be "
            f"resolved to an ID ({step}: {exc}); pass application_id= or set "
            "LAYER_APPLICATION_ID, or fix the name"
        )
        error.__cause__ = exc
        return error

    def _settle(self, app_id: str | None, error: LayerSDKException | None) -> None:
        # Logged first: whoever waits learns of the outcome after the log has it.
        if error is not None:
            logger.error("layer-sdk: %s; its sessions fail", error)
        else:
            logger.debug("layer-sdk: application %r has ID %s", self.name, app_id)
        with self._changed:
            if app_id is not None:
                self.id = app_id
            self.error = error
            self._changed.notify_all()


def _definite(exc: LayerSDKException) -> bool:
    """Whether the API said no for good (asking again would get the same answer)."""
    if isinstance(exc, LayerHTTPError):
        return not is_retryable(exc.status_code)
    # Refused credentials, or an answer that makes no sense, are the API's final word too.
    return isinstance(exc, (LayerAuthError, _Nonsense))
