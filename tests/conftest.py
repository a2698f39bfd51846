"""Shared fixtures: a real local collector, and clients pointed at it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layer_sdk import Client
from layer_sdk.collector import LocalCollector

ROOT = Path(__file__).resolve().parent.parent

#: Fast settings for tests: short batching delay and backoff-friendly timeouts.
FAST = {"flush_interval": 0.05, "shutdown_timeout": 5.0, "http_timeout": 5.0}

APP_ID = "0c7f6b4e-2f39-4d1b-9a55-6b1f0f0a1d2e"


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
def make_client(collector: LocalCollector) -> Iterator[Callable[..., Client]]:
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
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


def run_python(
    code: str, *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports this checkout of layer_sdk."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; for state no event signals."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
