"""Error handling: what raises where, and how to see what was lost."""

import logging

from layer_sdk import (
    LayerHTTPError,
    LayerRequestError,
    LayerSchemaValidationError,
    SessionActionKind,
    layer,
)

logging.basicConfig(level=logging.WARNING)  # the SDK logs losses on the "layer_sdk" logger

layer.init(on_drop=lambda reason, count: print(f"lost {count} event(s): {reason}"))

# Bad input raises at the call, buffered or not.
try:
    layer.append_action("not-a-session-id", kind=SessionActionKind.COMPLETION_PROMPT)
except LayerSchemaValidationError as error:
    print(f"refused: {error}")

# The synchronous path raises for network trouble and for the server's refusals.
try:
    session_id = layer.create_session(attributes={"user.id": "user-004"}, sync=True)
    print(f"the server confirmed session {session_id}")
except LayerHTTPError as error:
    print(f"the API answered {error.status_code}: {error.message}")
except LayerRequestError as error:
    print(f"the API could not be reached: {error}")

# The buffered path never raises for network trouble; stats() tells what happened.
layer.create_session(attributes={"user.id": "user-005"})
layer.flush(timeout=10)
stats = layer.stats()
print(f"sent {stats.sent}, dropped {stats.dropped}, failed {stats.failed}, queued {stats.queued}")
