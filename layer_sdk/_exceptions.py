"""Exceptions raised by layer-sdk.

Everything derives from :class:`LayerSDKException`, so one ``except`` catches
all of them::

    LayerSDKException
    ├── LayerMissingRequiredConfigurationError   a setting is missing or invalid
    ├── LayerAlreadyInitializedError             init() on an initialized client
    ├── LayerRequestPreparationError             the event cannot be encoded (caller's data)
    │   └── LayerSchemaValidationError           a field has the wrong value or type
    ├── LayerRequestError                        the request could not be sent (network)
    │   └── LayerHTTPError                       the server answered with a non-2xx status
    ├── LayerAuthError                           no credentials could be obtained
    └── LayerFirewallException                   anything the firewall says or fails to say
        ├── LayerFirewallRequestError            the firewall could not be asked (network)
        │   └── LayerFirewallHTTPError           the firewall answered with a non-2xx status
        └── LayerFirewallSessionBlocked          the firewall's decision for the session is block

Only the synchronous path (``sync=True``, ``firewall_session_lookup``) raises
for network trouble; the buffered path counts and logs it instead. With
``enable_firewall_instrumentation=True``, ``append_action`` and instrumented
provider calls raise ``LayerFirewallSessionBlocked`` for a blocked session.
Messages never contain secrets, tokens or Authorization headers.
"""

from __future__ import annotations

from typing import Any


class LayerSDKException(Exception):
    """Base class of every exception raised by layer-sdk."""


class LayerMissingRequiredConfigurationError(LayerSDKException):
    """A required setting is missing, or a setting has an invalid value."""


class LayerAlreadyInitializedError(LayerSDKException):
    """``init()`` was called on a client that is already initialized."""


class LayerRequestPreparationError(LayerSDKException, ValueError):
    """The event could not be turned into a request body (e.g. not serializable)."""


class LayerSchemaValidationError(LayerRequestPreparationError):
    """A field of a session or action has a wrong type or value."""


class LayerRequestError(LayerSDKException):
    """The request could not be completed: connection error, timeout, shutdown."""


class LayerHTTPError(LayerRequestError):
    """The Layer API answered with a status outside 2xx.

    ``status_code`` is the HTTP status, ``message`` the server's explanation
    (its ``error``/``message`` field, or the raw text), ``response_data`` the
    decoded JSON body when there was one.
    """

    def __init__(self, status_code: int, message: str, response_data: Any = None) -> None:
        super().__init__(f"Layer API answered {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.response_data = response_data


class LayerAuthError(LayerSDKException):
    """Credentials could not be obtained, e.g. the token endpoint refused the client."""


class LayerFirewallException(LayerSDKException):
    """Base class of the firewall's exceptions."""


class LayerFirewallRequestError(LayerFirewallException):
    """The firewall could not be asked: connection error, timeout, or an answer that is no
    lookup response."""


class LayerFirewallHTTPError(LayerFirewallRequestError):
    """The firewall answered with a status outside 2xx (same fields as ``LayerHTTPError``)."""

    def __init__(self, status_code: int, message: str, response_data: Any = None) -> None:
        super().__init__(f"the Layer firewall answered {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.response_data = response_data


class LayerFirewallSessionBlocked(LayerFirewallException):
    """The firewall's decision for the session is ``block``, or (``firewall_fail_closed=True``)
    no decision could be had.

    ``session_id`` is the session; ``response`` the ``FirewallSessionLookupResponse``
    that blocked it, with the violated policies (None when it was refused because
    the firewall could not be asked, and the client fails closed).
    """

    def __init__(self, message: str, session_id: str, response: Any = None) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.response = response
