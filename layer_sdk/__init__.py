"""layer-sdk: report the sessions and actions of an LLM application to the Layer API.

Calls encode the event on the caller's thread and queue it; a background
worker batches and delivers it. See README.md for the tour.
"""

from ._auth import AuthProvider, OIDCClientCredentials
from ._client import Client
from ._exceptions import (
    LayerAlreadyInitializedError,
    LayerAuthError,
    LayerFirewallException,
    LayerFirewallHTTPError,
    LayerFirewallRequestError,
    LayerFirewallSessionBlocked,
    LayerHTTPError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
    LayerRequestPreparationError,
    LayerSchemaValidationError,
    LayerSDKException,
)
from ._export._queue import ExportStats
from ._firewall import (
    FirewallLookupContext,
    FirewallLookupDecision,
    FirewallSessionLookupResponse,
    FirewallStats,
    FirewallViolatedPolicy,
)
from ._schemas import (
    SessionActionError,
    SessionActionKind,
    SessionActionRequest,
    SessionActionScanner,
    SessionRequest,
)
from ._version import __version__

# No handler on the "layer_sdk" logger, not even a NullHandler: with no logging configured,
# its warnings reach stderr through Python's last resort (see _logging).

layer = Client()
"""The default client: ``from layer_sdk import layer; layer.init(...)``."""

__all__ = [
    "AuthProvider",
    "Client",
    "ExportStats",
    "FirewallLookupContext",
    "FirewallLookupDecision",
    "FirewallSessionLookupResponse",
    "FirewallStats",
    "FirewallViolatedPolicy",
    "LayerAlreadyInitializedError",
    "LayerAuthError",
    "LayerFirewallException",
    "LayerFirewallHTTPError",
    "LayerFirewallRequestError",
    "LayerFirewallSessionBlocked",
    "LayerHTTPError",
    "LayerMissingRequiredConfigurationError",
    "LayerRequestError",
    "LayerRequestPreparationError",
    "LayerSDKException",
    "LayerSchemaValidationError",
    "OIDCClientCredentials",
    "SessionActionError",
    "SessionActionKind",
    "SessionActionRequest",
    "SessionActionScanner",
    "SessionRequest",
    "__version__",
    "layer",
]
