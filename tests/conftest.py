"""Shared fixtures: a real local collector, and clients pointed at it.

Fixtures only: what tests import (settings, helpers, small servers) is in ``helpers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from layer_sdk import Client
from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, FAST, MakeClient


@pytest.fixture(autouse=True)
def _clean_layer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no LAYER_* variables unless they set them."""
    for name in list(os.environ):
        if name == "LAYER_TEST_VENVS":  # where the openai version matrix keeps its venvs
            continue
        if name.startswith("LAYER_") or name == "KUBERNETES_SERVICE_HOST":
            monkeypatch.delenv(name)


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    with LocalCollector() as server:
        yield server


@pytest.fixture
def make_client(collector: LocalCollector) -> Iterator[MakeClient]:
    """Build initialized clients against the collector; all are shut down afterwards."""
    clients: list[Client] = []

    def make(**options: Any) -> Client:
        client = Client()
        settings: dict[str, Any] = {
            "base_url": collector.url,
            "application_id": APP_ID,
            **FAST,
            **options,
        }
        client.init(**settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown(timeout=2.0)


@pytest.fixture
def client(make_client: MakeClient) -> Client:
    return make_client()
