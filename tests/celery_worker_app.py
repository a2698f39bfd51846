"""The Celery app of the prefork worker test, run by ``celery -A tests.celery_worker_app worker``.

Its tasks report through the global ``layer``, initialized at import (in the
worker's main process, before the pool's children are forked) so that
nothing is sent before a flush: a pool child's events reach the collector
only through the flush at the child's end. The broker and the result store
are folders (``LAYER_TEST_CELERY_DIR``): no service to run.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from layer_sdk import SessionActionKind, layer
from layer_sdk.integrations import current_session_id
from layer_sdk.integrations.celery import instrument


def configured(name: str, folder: str) -> Celery:
    """A Celery app on the folder broker and result store under ``folder``."""
    app = Celery(name, broker="filesystem://", backend=f"file://{folder}/results")
    os.makedirs(f"{folder}/queue", exist_ok=True)
    os.makedirs(f"{folder}/results", exist_ok=True)
    app.conf.broker_transport_options = {
        "data_folder_in": f"{folder}/queue",
        "data_folder_out": f"{folder}/queue",
        "store_processed": False,
        "polling_interval": 0.05,
    }
    app.conf.worker_hijack_root_logger = False
    return app


if os.environ.get("LAYER_TEST_CELERY_WORKER"):  # in the worker only, not in the test's producer
    app = configured("layer-prefork", os.environ["LAYER_TEST_CELERY_DIR"])
    layer.init(flush_interval=60.0)  # the background sender waits a minute: flushes only
    instrument(app)

    @layer.action(kind=SessionActionKind.COMPLETION_TOOL_CALL)
    def note(number: int) -> dict[str, Any]:
        return {"number": number, "pid": os.getpid()}

    @app.task(name="record")
    def record(count: int) -> list[Any]:
        for number in range(count):
            note(number)
        return [current_session_id(), os.getpid()]
