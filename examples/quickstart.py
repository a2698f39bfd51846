"""Quick start: one session, two actions, delivered in the background.

Run against the local collector: ``layer-sdk collector`` in one terminal, then
``LAYER_BASE_URL=http://127.0.0.1:8080 LAYER_APPLICATION_ID=demo python examples/quickstart.py``.
"""

from datetime import datetime, timedelta, timezone

from layer_sdk import SessionActionKind, layer

layer.init()  # base_url and application_id from LAYER_BASE_URL / LAYER_APPLICATION_ID

started = datetime.now(timezone.utc)
session_id = layer.create_session(attributes={"user.id": "user-001"}, start_time=started)
print(f"session {session_id}")

layer.append_action(
    session_id,
    kind=SessionActionKind.COMPLETION_PROMPT,
    start_time=started,
    end_time=started + timedelta(milliseconds=5),
    attributes={"model.id": "gpt-4o-mini"},
    data={"messages": [{"role": "user", "content": "Plan a weekend in Lisbon"}]},
)
layer.append_action(
    session_id,
    kind=SessionActionKind.COMPLETION_OUTPUT,
    attributes={"model.id": "gpt-4o-mini"},
    data={"messages": [{"role": "assistant", "content": "Day one: Alfama and the castle..."}]},
    scanners=[{"name": "usage", "data": {"prompt_tokens": 9, "completion_tokens": 12}}],
)
# Nothing else to do: the queue is drained when the interpreter exits.
