"""A short command-line tool: report and exit. The exit drain delivers what is queued."""

import sys

from layer_sdk import SessionActionKind, layer

layer.init(shutdown_timeout=5)  # at most 5 s of exit delay, even if the API is down

question = " ".join(sys.argv[1:]) or "What time is it in Lisbon?"
session_id = layer.create_session(attributes={"tool": "ask"})
layer.append_action(session_id, kind=SessionActionKind.COMPLETION_PROMPT, data=question)
print(f"asked: {question}")
# No flush() and no shutdown(): the atexit hook drains the queue within shutdown_timeout.
