"""Framework integrations: sessions per request or task, and delivery before a process stops.

Each lives in its own module and imports its framework only when imported:

- ``layer_sdk.integrations.asgi.LayerMiddleware``: FastAPI, Starlette, Django (ASGI)...
- ``layer_sdk.integrations.wsgi.LayerMiddleware``: Flask, Django (WSGI)...
- ``layer_sdk.integrations.celery.instrument(app)``: Celery tasks and workers.
- ``layer_sdk.integrations.aws_lambda.flush_after``: handlers of AWS Lambda and other
  platforms that freeze the process after it returns.

Inside a request or task they run, :func:`current_session_id` gives the ID of its
session (e.g. to hand back to the caller, who names it on the next request of
the conversation).
"""

from __future__ import annotations

from .._context import current_session

__all__ = ["current_session_id"]


def current_session_id() -> str | None:
    """The ID of the session the current request, task or ``session_context()`` runs in.

    A new session of an integration exists at Layer once something is recorded in
    it: asking for its ID creates it now. None outside any session.
    """
    return current_session()
