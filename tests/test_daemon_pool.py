"""Daemon threads for calls that may hang: bounded waits, a bounded queue, nothing left behind."""

from __future__ import annotations

import asyncio
import threading

from layer_sdk._daemon_pool import DaemonPool, Expired, Interrupt, interrupted

from .helpers import wait_until


def test_a_call_waits_for_a_thread_only_until_its_deadline_and_the_queue_stays_short() -> None:
    """With every thread held (a call that hangs), later calls are dropped unrun once their
    deadline passes, and the queue holds only those still in time, however many come."""
    pool = DaemonPool("test-pool", 2)
    release = threading.Event()
    held = [pool.submit(lambda: release.wait(30), 30.0) for _ in range(2)]
    waiting = [pool.submit(lambda: "ran", 0.05) for _ in range(3)]
    assert not any(p.wait() for p in waiting)  # each returns at its deadline
    ran = []
    for _ in range(500):
        ran.append(pool.submit(lambda: "ran", 0.0))
        assert len(pool._calls) <= 1  # the overdue ones left as the next came
    assert [type(p.error) for p in waiting] == [Expired] * 3
    release.set()
    assert all(p.wait() and p.value is True for p in held)
    assert wait_until(lambda: ran[-1].done())
    assert {p.value for p in ran} == {None} and {type(p.error) for p in ran} == {Expired}
    pool.close()


def test_outcomes_are_values_and_errors_carry_no_traceback() -> None:
    """What a call returned or raised reaches whoever waits, the exception without the frames
    of the pool's thread (they may hold what the call handled)."""
    pool = DaemonPool("test-pool", 1)

    def fails() -> None:
        secret = "s3cr3t"  # noqa: F841 (a local of the frame that raised)
        raise ValueError("no")

    done, failed = pool.submit(lambda: 42, 5.0), pool.submit(fails, 5.0)
    assert done.wait() and failed.wait()
    assert (done.value, done.error) == (42, None)
    assert isinstance(failed.error, ValueError) and failed.error.__traceback__ is None
    pool.close()


def test_an_async_caller_waits_on_its_loop_and_threads_end_with_the_pool() -> None:
    """wait_async() lets the loop run meanwhile, using no thread of the loop's executor;
    closing the pool drops the calls not started and ends its idle threads."""
    pool = DaemonPool("test-pool-async", 4)
    release = threading.Event()
    ticks = 0

    async def main() -> bool:
        nonlocal ticks
        pending = pool.submit(lambda: release.wait(5), 5.0)
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, release.set)
        waiting = asyncio.ensure_future(pending.wait_async())
        while not waiting.done():
            await asyncio.sleep(0.01)
            ticks += 1
        return await waiting

    assert asyncio.run(main()) is True and ticks > 5
    pool.close()
    late = pool.submit(lambda: "ran", 5.0)
    assert late.done() and isinstance(late.error, Expired)
    assert wait_until(lambda: not any(t.name == "test-pool-async" for t in threading.enumerate()))


def test_an_interrupt_ends_the_waits_of_the_threads_it_applies_to() -> None:
    """Fired while a thread waits, or before it waits, an interrupt that applies to the
    thread ends its wait with the call not ended; a thread it does not apply to waits on."""
    pool = DaemonPool("test-pool", 2)
    release = threading.Event()
    pending = pool.submit(lambda: release.wait(30), 30.0)
    interrupt = Interrupt()
    waits: list[tuple[bool, bool]] = []

    def waiter() -> None:
        with interrupt.applies():
            waits.append((pending.wait(), interrupted()))

    during = threading.Thread(target=waiter)
    during.start()
    assert wait_until(lambda: len(interrupt._wakers) == 1)  # it waits
    interrupt.fire()
    during.join(10)
    waiter()  # fired already: no wait at all
    assert waits == [(False, True), (False, True)]
    assert not interrupted()  # this thread, outside applies()

    bystander = threading.Thread(target=lambda: waits.append((pending.wait(), interrupted())))
    bystander.start()
    bystander.join(0.2)
    assert bystander.is_alive()  # not interrupted: it waits for the call
    release.set()
    bystander.join(10)
    assert waits[-1] == (True, False)
    pool.close()
