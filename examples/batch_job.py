"""A batch job: report many sessions, flush at checkpoints, check that nothing was lost."""

import sys

from layer_sdk import SessionActionKind, layer

layer.init()

documents = [f"document {n}" for n in range(500)]
for start in range(0, len(documents), 100):
    for document in documents[start : start + 100]:
        session_id = layer.create_session(attributes={"job": "nightly-summaries"})
        layer.append_action(session_id, kind=SessionActionKind.COMPLETION_PROMPT, data=document)
        layer.append_action(
            session_id, kind=SessionActionKind.COMPLETION_OUTPUT, data=f"summary of {document}"
        )
    # A checkpoint: every event so far delivered, or we know it was not.
    if not layer.flush(timeout=30):
        print(f"checkpoint at {start + 100}: some events were not delivered", file=sys.stderr)

delivered = layer.shutdown(timeout=30)
print(f"sent {layer.stats().sent} events; all delivered: {delivered}")
sys.exit(0 if delivered else 1)
