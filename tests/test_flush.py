"""Flushes that wait for what the caller needs: one session's events (``flush(session_id=...)``),
and, for asyncio code, ``aflush`` and ``ashutdown`` that leave the event loop running.

The server is the local collector: ``hang(matching=...)`` holds the requests of
one session (their bodies carry a marker in the action's data) while the others
are answered, ``delay`` makes every answer slow, ``fail_next`` refuses one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest

from layer_sdk import Client, LayerSchemaValidationError
from layer_sdk._export._queue import EVENT_OVERHEAD
from layer_sdk._schemas import action_body
from layer_sdk.collector import LocalCollector

from .helpers import PROMPT, MakeClient, wait_until

T = TypeVar("T")

HELD = b'"who":"held"'


def conversation(client: Client, who: str, actions: int = 2) -> str:
    """A session of ``actions`` prompts whose data says ``who`` (matched by the collector)."""
    session_id = client.create_session()
    for n in range(actions):
        client.append_action(session_id, kind=PROMPT, data={"who": who, "n": n})
    return session_id


def events_of(collector: LocalCollector, session_id: str) -> int:
    """Events of ``session_id`` the collector stored: its create and its actions."""
    created = any(s["session_id"] == session_id for s in collector.sessions)
    return created + len(collector.actions(session_id))


class RefusingExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor that refuses work: the SDK must never use the loop's own."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.asked = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        raise RuntimeError("the loop's default executor was used")


def run_ticking(work: Callable[[], Awaitable[T]]) -> tuple[T, int, RefusingExecutor]:
    """Run ``work()`` on a fresh event loop beside a task that ticks every 10 ms; its
    result, the ticks counted while it ran, and the loop's (refusing) default executor."""
    executor = RefusingExecutor()

    async def main() -> tuple[T, int]:
        asyncio.get_running_loop().set_default_executor(executor)
        ticks = 0
        running = True

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                if running:
                    ticks += 1

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        try:
            result = await work()
        finally:
            running = False
            ticker.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    return result, ticks, executor


# -- flush(session_id=...) ------------------------------------------------------------


def test_a_session_flush_waits_for_that_session_only(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """With one session's requests held by the server, a flush of another session returns
    True once that session is delivered; the held session's flush (and a flush of
    everything) wait for it until their timeout, then return False."""
    client = make_client()
    collector.hang(matching=HELD)
    held = conversation(client, "held")
    free = conversation(client, "free")

    assert client.flush(timeout=10, session_id=free) is True
    assert events_of(collector, free) == 3
    assert events_of(collector, held) == 0
    assert client.flush(timeout=0.2, session_id=held) is False
    assert client.flush(timeout=0.2) is False
    assert client.stats().queued == 3  # the held session's create and its two actions

    collector.release()
    assert client.flush(timeout=10, session_id=held) is True
    assert events_of(collector, held) == 3
    assert client.flush(timeout=10) is True


def test_a_session_flush_waits_for_events_queued_behind_a_request_in_flight(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Actions appended while the session's create is in flight are waited for too: the
    flush returns True only once every event appended before it was delivered."""
    client = make_client()
    collector.hang(matching=HELD)
    session_id = conversation(client, "held", actions=1)
    assert collector.wait_for(lambda c: c.unanswered == 1)  # the create is in flight, held
    client.append_action(session_id, kind=PROMPT, data={"n": 1})
    client.append_action(session_id, kind=PROMPT, data={"n": 2})
    assert client.flush(timeout=0.2, session_id=session_id) is False

    collector.release()
    assert client.flush(timeout=10, session_id=session_id) is True
    assert events_of(collector, session_id) == 4


def test_a_session_flush_says_false_once_for_each_loss_of_that_session(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """An action of the session refused by the server (400, not retried) makes its next
    flush return False, once; another session's flush is not told of it. A drop at
    the door (the queue full) is told the same way."""
    client = make_client(max_queue_size=4)
    refused = client.create_session()
    other = client.create_session()
    assert client.flush(timeout=10) is True
    collector.fail_next(1, 400, matching=b'"bad":true')
    client.append_action(refused, kind=PROMPT, data={"bad": True})
    client.append_action(other, kind=PROMPT, data={"bad": False})

    assert client.flush(timeout=10, session_id=other) is True
    assert client.flush(timeout=10, session_id=refused) is False
    assert client.flush(timeout=10, session_id=refused) is True  # told once
    assert client.stats().failed_by_reason == {"rejected": 1}

    collector.hang()
    for n in range(5):  # the queue holds 4: the fifth is dropped at the door
        client.append_action(refused if n == 4 else other, kind=PROMPT, data={"n": n})
    assert client.stats().dropped_by_reason == {"queue_full": 1}
    collector.release()
    assert client.flush(timeout=10, session_id=other) is True
    assert client.flush(timeout=10, session_id=refused) is False
    assert client.flush(timeout=10, session_id=refused) is True


def test_a_session_flush_with_nothing_queued_returns_at_once_and_a_bad_id_raises(
    client: Client,
) -> None:
    """A session with nothing queued (or unknown) is flushed at once; a session ID that is
    no UUID is the caller's error, raised at the call."""
    session_id = client.create_session()
    assert client.flush(timeout=10, session_id=session_id) is True
    assert client.flush(timeout=0, session_id=session_id) is True
    with pytest.raises(LayerSchemaValidationError, match="session_id must be a UUID"):
        client.flush(session_id="not-a-session")



@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), "1", True, [1]])
def test_a_timeout_that_is_no_finite_number_raises_at_every_wait(
    make_client: MakeClient, collector: LocalCollector, timeout: Any
) -> None:
    """flush, aflush, shutdown and ashutdown refuse a timeout that is no finite number
    of seconds, naming it, before they wait (and on a client shut down already); a
    negative one is a deadline already past: nothing is waited for."""
    client = make_client()
    collector.hang()
    session_id = conversation(client, "held")
    with pytest.raises(ValueError, match=r"^timeout must be"):
        client.flush(timeout)
    with pytest.raises(ValueError, match=r"^timeout must be"):
        client.flush(timeout, session_id=session_id)
    with pytest.raises(ValueError, match=r"^timeout must be"):
        asyncio.run(client.aflush(timeout))
    with pytest.raises(ValueError, match=r"^timeout must be"):
        client.shutdown(timeout)
    with pytest.raises(ValueError, match=r"^timeout must be"):
        asyncio.run(client.ashutdown(timeout))
    assert client.flush(-1) is False  # held by the server: not delivered, and no wait
    collector.release()
    assert client.shutdown(10) is True
    with pytest.raises(ValueError, match=r"^timeout must be"):
        client.shutdown(timeout)

def test_many_threads_flushing_their_own_sessions_each_see_all_their_events(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Twenty threads each record a session and flush it: every flush returns True and,
    when it does, the collector holds every event of that session."""
    client = make_client(flush_interval=0.05)
    collector.delay = 0.02
    found: dict[str, tuple[bool, int]] = {}

    def handler() -> None:
        session_id = conversation(client, "free", actions=3)
        flushed = client.flush(timeout=20, session_id=session_id)
        found[session_id] = (flushed, events_of(collector, session_id))

    threads = [threading.Thread(target=handler) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(found) == 20
    assert set(found.values()) == {(True, 4)}


def test_a_session_flush_with_a_spool_waits_for_that_session_only(
    make_client: MakeClient, collector: LocalCollector, tmp_path: Path
) -> None:
    """With a spool (the spool's thread writes each batch before it is sent), a flush of a
    session returns True once that session is delivered, while another's requests are held;
    the held session's flush returns False until it is delivered too."""
    client = make_client(spool_dir=str(tmp_path / "spool"))
    collector.hang(matching=HELD)
    held = conversation(client, "held")
    free = conversation(client, "free")

    assert client.flush(timeout=10, session_id=free) is True
    assert events_of(collector, free) == 3
    assert client.flush(timeout=0.2, session_id=held) is False
    assert events_of(collector, held) == 0

    collector.release()
    assert client.flush(timeout=10, session_id=held) is True
    assert events_of(collector, held) == 3


def test_a_session_flush_with_events_in_the_spool_only_waits_until_they_are_delivered(
    make_client: MakeClient, collector: LocalCollector, tmp_path: Path
) -> None:
    """While the API is down and memory is half full, batches wait in the spool only. A
    flush of a session recorded then returns False while its events wait there, and True
    once the API is back and they were delivered (after all that waited before them)."""
    client = make_client(spool_dir=str(tmp_path / "spool"), max_queue_size=16, max_batch_size=4)
    earlier = client.create_session(sync=True)
    collector.fail_for(600, 503)
    at = datetime(2024, 1, 1, tzinfo=timezone.utc)  # fixed times: every action the same size
    size = len(action_body(PROMPT, at, at, None, {"n": 0}, None, None)) + EVENT_OVERHEAD
    for n in range(48):
        # At the pace the spool takes it: memory keeps room for what follows.
        assert wait_until(lambda: client.stats().queued_bytes <= 8 * size), client.stats()
        client.append_action(earlier, kind=PROMPT, start_time=at, end_time=at, data={"n": n})
    session_id = conversation(client, "late")
    assert client.stats().queued > 16  # more than memory holds: the rest in the spool only

    assert client.flush(timeout=0.3, session_id=session_id) is False
    collector.fail_for(0)
    assert client.flush(timeout=30, session_id=session_id) is True
    assert events_of(collector, session_id) == 3
    assert len(collector.actions(earlier)) == 48
    assert client.stats().dropped == 0


# -- aflush ---------------------------------------------------------------------------


def test_aflush_with_a_slow_server_returns_true_and_the_loop_runs_meanwhile(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Against a server that takes 0.3 s per answer, ``await aflush()`` returns True once
    everything is delivered; the loop ticks meanwhile, and its default executor is
    never used."""
    client = make_client()
    collector.delay = 0.3
    session_id = conversation(client, "free", actions=3)

    delivered, ticks, executor = run_ticking(lambda: client.aflush(timeout=10))

    assert delivered is True
    assert events_of(collector, session_id) == 4
    assert ticks >= 10  # the loop ran on through the 0.3 s the server took
    assert executor.asked == 0


@pytest.mark.parametrize("scope", ["everything", "session"])
def test_aflush_with_a_hung_server_returns_false_within_its_timeout(
    make_client: MakeClient, collector: LocalCollector, scope: str
) -> None:
    """A hung server: ``aflush(timeout=0.5)`` returns False in time, the loop ticking all
    along; the events stay queued and are delivered once the server answers."""
    client = make_client()
    collector.hang()
    session_id = conversation(client, "held")
    flushed = None if scope == "everything" else session_id

    started = time.monotonic()
    delivered, ticks, executor = run_ticking(lambda: client.aflush(timeout=0.5, session_id=flushed))
    took = time.monotonic() - started

    assert delivered is False
    assert took < 2.0, f"aflush(timeout=0.5) took {took:.2f} s"
    assert ticks >= 10
    assert executor.asked == 0
    assert client.stats().queued == 3
    collector.release()
    assert client.flush(timeout=10) is True


def test_aflush_of_a_session_waits_for_that_session_only(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """The async flush of a session returns True while another session is held."""
    client = make_client()
    collector.hang(matching=HELD)
    held = conversation(client, "held")
    free = conversation(client, "free")

    delivered, _, executor = run_ticking(lambda: client.aflush(timeout=10, session_id=free))

    assert delivered is True
    assert (events_of(collector, free), events_of(collector, held)) == (3, 0)
    assert executor.asked == 0
    collector.release()


def test_a_cancelled_aflush_leaves_nothing_waiting_in_the_queue(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """An ``aflush`` whose task is cancelled (a request handler timing out) stops waiting:
    the queue forgets it, and a later flush still tells the truth."""
    client = make_client()
    collector.hang()
    conversation(client, "held")

    async def cancelled() -> bool:
        task = asyncio.ensure_future(client.aflush(timeout=30))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return True

    assert asyncio.run(cancelled()) is True
    exporter = client._exporter
    assert exporter is not None and exporter.queue._flushes == []
    collector.release()
    assert client.flush(timeout=10) is True


def test_aflush_and_ashutdown_of_a_client_not_running_return_true() -> None:
    """A client never initialized, or disabled, has nothing to wait for."""
    idle, disabled = Client(), Client()
    disabled.init(enabled=False)

    async def main() -> list[bool]:
        return [
            await idle.aflush(),
            await disabled.aflush(timeout=1),
            await idle.ashutdown(),
            await disabled.ashutdown(),
        ]

    assert asyncio.run(main()) == [True, True, True, True]


# -- ashutdown ------------------------------------------------------------------------


def test_ashutdown_with_a_slow_server_delivers_everything_and_the_loop_runs(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """``await ashutdown()`` delivers what is queued (True), the loop ticking meanwhile, on
    no thread of the loop's executor; the client is shut down after it."""
    client = make_client()
    collector.delay = 0.3
    session_id = conversation(client, "free", actions=3)

    delivered, ticks, executor = run_ticking(lambda: client.ashutdown(timeout=10))

    assert delivered is True
    assert events_of(collector, session_id) == 4
    assert ticks >= 10
    assert executor.asked == 0
    client.create_session()  # after shutdown: refused at the door
    assert client.stats().dropped_by_reason == {"shutdown": 1}


def test_ashutdown_with_a_hung_server_returns_false_within_its_timeout(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A hung server: ``ashutdown(timeout=0.5)`` returns False in time, the loop ticking;
    what was queued counts as failed (shutdown), as with ``shutdown``."""
    client = make_client()
    collector.hang()
    conversation(client, "held")

    started = time.monotonic()
    delivered, ticks, executor = run_ticking(lambda: client.ashutdown(timeout=0.5))
    took = time.monotonic() - started

    assert delivered is False
    assert took < 2.0, f"ashutdown(timeout=0.5) took {took:.2f} s"
    assert ticks >= 10
    assert executor.asked == 0
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.failed, stats.queued) == (3, 0, 3, 0)
    assert stats.failed_by_reason == {"shutdown": 3}
