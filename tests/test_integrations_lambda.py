"""``flush_after``: a frozen sandbox holds nothing undelivered.

A runtime of our own (``tests/lambda_runtime.py``, a process of its own)
invokes the handler and answers as soon as it returns; the test freezes that
process with SIGSTOP the moment the answer arrives, as Lambda freezes the
sandbox, and checks that the collector already holds every event of the
invocation. The same runtime without ``flush_after`` shows what is at stake.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from layer_sdk import Client
from layer_sdk.collector import LocalCollector
from layer_sdk.integrations.aws_lambda import (
    DEADLINE_RESERVE,
    DEFAULT_TIMEOUT,
    flush_after,
    flush_bound,
)

from .helpers import APP_ID, PROMPT, ROOT


@pytest.fixture(autouse=True)
def _sdk_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "layer_sdk")  # whatever the root logger's level


pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")


class Runtime:
    """The runtime process: ``invoke()`` returns the answer with the process frozen."""

    def __init__(self, mode: str, collector: LocalCollector) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LAYER_BASE_URL": collector.url,
            "LAYER_APPLICATION_ID": APP_ID,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.lambda_runtime", mode],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.invocations = 0

    def invoke(self, **event: Any) -> dict[str, Any]:
        """Invoke the handler; the process is frozen when this returns (``thaw()`` it)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.invocations += 1
        self.process.stdin.write(json.dumps({"number": self.invocations, **event}) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        os.kill(self.process.pid, signal.SIGSTOP)  # the handler returned: the sandbox freezes
        assert answer, self.process.stderr.read() if self.process.stderr else ""
        return dict(json.loads(answer))

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def end(self) -> str:
        """Thaw, close the input, and wait for the exit; its standard error."""
        self.thaw()
        _, errors = self.process.communicate(timeout=30)
        return errors


@pytest.fixture
def runtimes(collector: LocalCollector) -> Iterator[Any]:
    started: list[Runtime] = []

    def start(mode: str) -> Runtime:
        runtime = Runtime(mode, collector)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        if runtime.process.poll() is None:
            runtime.thaw()
            runtime.process.kill()
            runtime.process.communicate(timeout=10)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_event_is_delivered_before_the_sandbox_freezes(
    mode: str, collector: LocalCollector, runtimes: Any
) -> None:
    runtime = runtimes(mode)
    delivered = 0
    for actions in (3, 1, 5):
        answer = runtime.invoke(actions=actions)
        delivered += 1 + actions
        assert collector.event_count == delivered  # counted while the process is frozen
        assert len(collector.actions(answer["session_id"])) == actions
        runtime.thaw()
    assert "Traceback" not in runtime.end()
    assert len(collector.sessions) == 3
    assert collector.event_count == delivered


def test_a_handler_that_raises_is_flushed_too(collector: LocalCollector, runtimes: Any) -> None:
    runtime = runtimes("sync")
    answer = runtime.invoke(actions=2, fail=True)
    assert answer == {"error": "invocation 1 failed"}
    assert collector.event_count == 3
    (session,) = collector.sessions
    assert len(session["actions"]) == 2
    runtime.end()


def test_without_flush_after_the_frozen_sandbox_holds_the_events(
    collector: LocalCollector, runtimes: Any
) -> None:
    """What the harness guards against: the events wait in the frozen process."""
    runtime = runtimes("bare")
    runtime.invoke(actions=3)
    assert collector.event_count == 0
    runtime.end()  # thawed and ended: the exit drain delivers them after all
    assert collector.event_count == 4


# -- the bound ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "bound"),
    [
        (None, 5.0),
        (SimpleNamespace(), 5.0),
        (SimpleNamespace(get_remaining_time_in_millis=lambda: 60_000), 5.0),
        (SimpleNamespace(get_remaining_time_in_millis=lambda: 2_000), 2.0 - DEADLINE_RESERVE),
        (SimpleNamespace(get_remaining_time_in_millis=lambda: 300), 0.0),
        (SimpleNamespace(get_remaining_time_in_millis=lambda: math.nan), 5.0),
        (SimpleNamespace(get_remaining_time_in_millis=lambda: 1 / 0), 5.0),
        (SimpleNamespace(get_remaining_time_in_millis="soon"), 5.0),
    ],
)
def test_the_flush_bound_leaves_the_runtime_its_reserve(context: Any, bound: float) -> None:
    assert flush_bound(context, 5.0) == pytest.approx(bound)


def test_a_hung_api_costs_the_handler_only_its_remaining_time(
    client: Client,
    collector: LocalCollector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bounds: list[float] = []
    flush = client.flush

    def watched_flush(timeout: float | None = None) -> bool:
        bounds.append(timeout)  # type: ignore[arg-type]
        return flush(timeout)

    monkeypatch.setattr(client, "flush", watched_flush)

    @flush_after(client=client)
    def handler(event: dict[str, Any], context: Any) -> str:
        session_id = client.create_session()
        client.append_action(session_id, kind=PROMPT, data={"n": 1})
        return session_id

    collector.hang()
    try:
        handler({}, SimpleNamespace(get_remaining_time_in_millis=lambda: 800))
    finally:
        collector.release()
    handler({}, context=SimpleNamespace())  # no remaining time to read: the default bound
    assert bounds == [pytest.approx(0.8 - DEADLINE_RESERVE), DEFAULT_TIMEOUT]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2 events were still undelivered when the handler returned" in w for w in warnings)


def test_bad_arguments_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        flush_after(timeout=-1)
    with pytest.raises(TypeError, match="timeout must be a number"):
        flush_after(timeout="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decorates a handler function"):
        flush_after(42)  # type: ignore[call-overload]
