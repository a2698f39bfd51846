"""The span processor's hand-off: the thread that ends a span only hands it over.

``LayerSpanProcessor.on_end`` puts the ended span in a bounded backlog that a
reader thread of the processor reads. What that must never cost: a span lost
without a count, a span that ended before ``flush()``, ``shutdown()`` or the
interpreter's exit and is not delivered, a span read twice after fork, a
lock a forked child waits on forever, an exception in the tracer, a log
record of the reader fed back to Layer.

``HeldSpan`` holds the reader where a test needs it: an ended span (handed
to ``on_end`` as the SDK hands its own) whose reading waits until released,
or raises.
"""

from __future__ import annotations

import gc
import logging
import random
import textwrap
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanContext

from layer_sdk import Client
from layer_sdk.collector import LocalCollector
from layer_sdk.instrumentation import _patch
from layer_sdk.otel import LayerCompletionHook, LayerSpanProcessor
from layer_sdk.otel._problems import PROBLEMS

from .helpers import APP_ID, MakeClient, ReportingHandler, held_by_another_thread, run_python
from .openai_server import OpenAIServer
from .otel_helpers import Traced, assert_all_accepted, make_traced
from .test_lifecycle import assert_each_event_once, forks_with_threads, in_forked_child

#: A chat span without content: a prompt and an output, in a session of its own trace.
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
ACTIONS_PER_CHAT = 2
READER = "layer-sdk-otel-reader"


class HeldSpan(ReadableSpan):
    """An ended span whose reading (after the hand-off's look: no GenAI call) waits for
    ``release``, or raises ``raises``."""

    def __init__(self, raises: BaseException | None = None) -> None:
        context = SpanContext(random.getrandbits(128), random.getrandbits(64), is_remote=False)
        super().__init__("held", context=context, start_time=1, end_time=2)
        self.reading = threading.Event()
        self.release = threading.Event()
        self.raises = raises
        self.looked = False

    @property
    def attributes(self) -> Any:
        if not self.looked and threading.current_thread().name != READER:
            # The hand-off's look, on the caller's thread: a GenAI call, handed over.
            self.looked = True
            return MappingProxyType(CHAT)
        self.reading.set()
        if self.raises is not None:
            raise self.raises
        assert self.release.wait(30), "the test never released the reader"
        return MappingProxyType({})


def hold_reader(processor: LayerSpanProcessor) -> HeldSpan:
    """The processor's reader, held inside the reading of a span until ``release`` is set."""
    held = HeldSpan()
    processor.on_end(held)
    assert held.reading.wait(10), "the reader never read the span"
    return held


@pytest.fixture
def traced(make_client: MakeClient, collector: LocalCollector) -> Iterator[Traced]:
    setup = make_traced(make_client, collector)
    yield setup
    setup.provider.shutdown()


# -- the bound ---------------------------------------------------------------------------


def test_a_full_backlog_loses_the_span_counted_told_and_logged_never_blocking(
    make_client: MakeClient, collector: LocalCollector, caplog: Any
) -> None:
    """With the reader held, 5 of 8 spans wait and 3 are lost: counted, told, logged."""
    told: list[tuple[str, int]] = []
    client = make_client(
        disable_instrumentations=["openai", "anthropic"],
        on_drop=lambda reason, count: told.append((reason, count)),
    )
    processor = LayerSpanProcessor(client, max_backlog=5)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests.otel")
    held = hold_reader(processor)
    with caplog.at_level(logging.WARNING, logger="layer_sdk"):
        for _ in range(8):
            tracer.start_span("chat", attributes=CHAT).end()  # never blocks
    held.release.set()

    assert client.flush(10) is False  # something was lost since the last flush
    assert client.stats().dropped_by_reason == {"span_backlog": 3}
    assert told == [("span_backlog", 1)] * 3
    lines = [r.getMessage() for r in caplog.records if "span_backlog" in r.getMessage()]
    assert lines == [
        "layer-sdk lost 1 event(s): span_backlog "
        "(5 ended OpenTelemetry spans were already waiting to be read)"
    ]
    assert len(collector.actions()) == 5 * ACTIONS_PER_CHAT
    assert len(collector.sessions) == 5
    assert_all_accepted(collector)
    provider.shutdown()


def test_max_backlog_must_be_a_positive_integer(make_client: MakeClient) -> None:
    client = make_client()
    for wrong in (0, -1, 1.5, "10"):
        with pytest.raises(ValueError, match="max_backlog"):
            LayerSpanProcessor(client, max_backlog=wrong)  # type: ignore[arg-type]


# -- flush and shutdown ------------------------------------------------------------------


def test_flush_after_spans_ended_delivers_them(traced: Traced, collector: LocalCollector) -> None:
    """``layer.flush()`` waits for the spans still waiting for the reader, then their events."""
    held = hold_reader(traced.processor)
    for _ in range(3):
        traced.span("chat", CHAT)
    assert traced.client.stats().enqueued == 0  # all three wait behind the held one
    threading.Timer(0.2, held.release.set).start()  # while flush() waits

    assert traced.client.flush(10) is True
    assert len(collector.actions()) == 3 * ACTIONS_PER_CHAT


def test_force_flush_of_the_processor_reads_the_spans_whatever_the_client(
    collector: LocalCollector, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even for a client that has nothing to deliver (not initialized), ``force_flush``
    returns once the spans that ended before it were read (here: found undeliverable)."""
    monkeypatch.setattr(PROBLEMS, "_reported", set())
    setup = Traced(Client(), collector)
    held = hold_reader(setup.processor)
    setup.span("chat", CHAT)
    threading.Timer(0.2, held.release.set).start()

    with caplog.at_level(logging.WARNING, logger="layer_sdk"):
        assert setup.provider.force_flush(10_000) is True
        assert any("init()" in r.getMessage() for r in caplog.records)
    setup.provider.shutdown()


def test_spans_of_no_genai_call_never_take_the_backlogs_room(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """With the reader held and room for 5, a burst of 200 web and database spans leaves
    that room to the 5 chat spans that follow: none is lost."""
    client = make_client(disable_instrumentations=["openai", "anthropic"])
    processor = LayerSpanProcessor(client, max_backlog=5)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("tests.otel")
    held = hold_reader(processor)
    with client.session_context():  # noted at start, as in a request of the middleware
        for number in range(200):
            tracer.start_span("GET /items", attributes={"http.route": "/items", "n": number}).end()
            tracer.start_span("SELECT", attributes={"db.system": "postgresql"}).end()
    for _ in range(5):
        tracer.start_span("chat", attributes=CHAT).end()
    held.release.set()

    assert client.flush(10) is True
    assert client.stats().dropped_by_reason == {}
    assert len(collector.actions()) == 5 * ACTIONS_PER_CHAT
    assert_all_accepted(collector)
    provider.shutdown()


def test_a_flush_that_times_out_waiting_for_the_reader_says_false(traced: Traced) -> None:
    held = hold_reader(traced.processor)
    traced.span("chat", CHAT)
    try:
        assert traced.client.flush(0.2) is False
    finally:
        held.release.set()
    assert traced.client.flush(10) is True


def test_client_shutdown_after_spans_ended_delivers_them(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    setup = make_traced(make_client, collector)
    held = hold_reader(setup.processor)
    for _ in range(3):
        setup.span("chat", CHAT)
    threading.Timer(0.2, held.release.set).start()

    assert setup.client.shutdown(10) is True
    assert setup.client.stats().dropped == 0
    assert len(collector.actions()) == 3 * ACTIONS_PER_CHAT


def test_after_the_processor_shuts_down_a_span_is_read_where_it_ends(
    traced: Traced, collector: LocalCollector
) -> None:
    """``shutdown()`` reads what waits and ends the reader; a later span is still recorded."""
    held = hold_reader(traced.processor)
    traced.span("chat", CHAT)
    reader = traced.processor._backlog._reader
    assert reader is not None
    threading.Timer(0.2, held.release.set).start()
    traced.processor.shutdown()
    assert traced.client.stats().enqueued == 1 + ACTIONS_PER_CHAT  # read before it returned
    reader.join(5)
    assert not reader.is_alive()

    traced.span("chat", CHAT)  # read on this thread, before end() returns
    assert traced.client.stats().enqueued == 2 * (1 + ACTIONS_PER_CHAT)
    traced.actions(2 * ACTIONS_PER_CHAT)


# -- order -------------------------------------------------------------------------------

TOOL_RUN = {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "get_weather",
    "gen_ai.tool.call.result": "sunny",
}


def test_a_natively_recorded_call_follows_the_spans_that_ended_before_it(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A tool run's span waits for the reader when the next model call, recorded natively
    on this thread, begins: the call reads it first, so the session keeps their order."""
    setup = make_traced(make_client, collector, disable_instrumentations=["anthropic"])
    held = hold_reader(setup.processor)
    with OpenAIServer() as server, setup.client.session_context():
        setup.span("execute_tool get_weather", TOOL_RUN)
        threading.Timer(0.2, held.release.set).start()
        client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "Hi"}])
        client.close()
    actions = setup.actions(3)
    assert [a["kind"] for a in actions] == [
        "completion_tool_call",
        "completion_prompt",
        "completion_output",
    ]
    setup.provider.shutdown()


# -- failures ----------------------------------------------------------------------------


class BrokenContext(HeldSpan):
    @property
    def context(self) -> Any:
        raise RuntimeError("no context")


def test_failures_while_handing_over_or_reading_never_reach_the_tracer(
    traced: Traced, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A span that cannot be handed over or read is logged; the next spans are recorded."""
    monkeypatch.setattr(PROBLEMS, "_reported", set())
    with caplog.at_level(logging.WARNING, logger="layer_sdk"):
        traced.processor.on_end(BrokenContext())  # returns
        unreadable = HeldSpan(raises=RuntimeError("unreadable span"))
        traced.processor.on_end(unreadable)
        traced.span("chat", CHAT)
        traced.actions(ACTIONS_PER_CHAT)
    messages = [r.getMessage() for r in caplog.records]
    assert any("while handing a span over (RuntimeError: no context)" in m for m in messages)
    assert any("while recording a span (RuntimeError: unreadable span)" in m for m in messages)


def test_the_reader_survives_even_a_system_exit_while_reading(traced: Traced) -> None:
    """Even what is no Exception (a log handler raising SystemExit) leaves the reader running."""
    reader = traced.processor._backlog._reader
    traced.processor.on_end(HeldSpan(raises=SystemExit("bye")))
    traced.span("chat", CHAT)
    traced.actions(ACTIONS_PER_CHAT)
    assert reader is not None and reader.is_alive()
    assert traced.processor._backlog._reader is reader


def test_what_the_reader_logs_is_never_fed_back_but_the_spans_are_recorded(
    traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader is an SDK thread: a logging hook reporting to Layer from it is refused."""
    monkeypatch.setattr(PROBLEMS, "_reported", set())
    handler = ReportingHandler(traced.client, traced.client.create_session())
    sdk_logger = logging.getLogger("layer_sdk")
    sdk_logger.addHandler(handler)
    try:
        traced.processor.on_end(HeldSpan(raises=RuntimeError("unreadable")))  # a warning
        traced.span("chat", CHAT)
        assert traced.client.flush(10) is False  # the hook's event was dropped
    finally:
        sdk_logger.removeHandler(handler)
    assert handler.emitted >= 1
    assert READER in {t.name for t in threading.enumerate() if t.ident in handler.threads}
    assert traced.client.stats().dropped_by_reason == {"recursion": handler.emitted}
    assert Counter(a["kind"] for a in traced.collector.actions()) == {
        "completion_prompt": 1,
        "completion_output": 1,
    }


def test_a_processor_no_longer_used_ends_its_reader(make_client: MakeClient) -> None:
    processor = LayerSpanProcessor(make_client())
    reader = processor._backlog._reader
    assert reader is not None and reader.is_alive()
    gone = weakref.ref(processor)
    del processor
    gc.collect()
    assert gone() is None
    reader.join(5)
    assert not reader.is_alive()


# -- fork --------------------------------------------------------------------------------


def child_records_its_own_spans(setup: Traced) -> dict[str, Any]:
    """In a forked child, what takes each lock: a span in a session_context, a span whose
    reading fails, a span that a native call marks, a span the completion hook is given."""
    with setup.client.session_context():
        setup.span("chat", {**CHAT, "gen_ai.request.model": "child"})
    setup.processor.on_end(HeldSpan(raises=RuntimeError("unreadable in the child")))
    with setup.tracer.start_as_current_span("native"):
        hook = _patch.recorded_call_hook
        assert hook is not None
        hook()  # what a natively recorded call does first
    with setup.tracer.start_as_current_span("hooked") as span:
        LayerCompletionHook(setup.client).on_completion(
            inputs=[], outputs=[], system_instruction=[], span=span
        )
    delivered = setup.client.flush(10)
    return {"delivered": delivered, "enqueued": setup.client.stats().enqueued}


@forks_with_threads
def test_a_forked_child_starts_with_no_span_of_its_parent_and_no_lock_held(
    traced: Traced, collector: LocalCollector
) -> None:
    """Four parent spans wait behind a held reader at fork, and other threads hold the
    processor's locks: the child records its own span only, and the parent all of its own."""
    from layer_sdk.otel import _completion_hook, _native

    held = hold_reader(traced.processor)
    for _ in range(4):
        traced.span("chat", CHAT)
    processor = traced.processor
    locks = [processor._lock, processor._sessions._lock, PROBLEMS._lock]
    locks += [_native._lock, _completion_hook._lock]
    with held_by_another_thread(*locks):
        code, report = in_forked_child(child_records_its_own_spans, traced)
    assert code == 0, "the child hung or failed"
    assert report == {"delivered": True, "enqueued": 1 + ACTIONS_PER_CHAT}

    held.release.set()
    assert traced.client.flush(10) is True
    models = Counter(a["attributes"]["model.id"] for a in collector.actions())
    assert models == {"gpt-4o-mini": 4 * ACTIONS_PER_CHAT, "child": ACTIONS_PER_CHAT}
    assert_each_event_once(collector)


# -- exit --------------------------------------------------------------------------------

SPANS_AT_EXIT = 50

EXIT_SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading
    from types import MappingProxyType
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.trace import SpanContext
    from layer_sdk import Client
    from layer_sdk.otel import LayerSpanProcessor

    client = Client()
    client.init(base_url={url!r}, application_id={app!r}, flush_interval=0.05,
                disable_instrumentations=["openai", "anthropic"])
    processor = LayerSpanProcessor(client)
    # Not shut down at exit by the provider: Layer's own exit drain must deliver the spans.
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)

    reading, release = threading.Event(), threading.Event()

    class Held(ReadableSpan):
        @property
        def attributes(self):
            reading.set()
            release.wait(30)
            return MappingProxyType({{}})

    processor.on_end(Held("held", context=SpanContext(1, 1, is_remote=False)))
    assert reading.wait(10)
    tracer = provider.get_tracer("exit")
    for n in range({spans}):
        tracer.start_span("chat", attributes={chat!r}).end()

    def refuse_threads_like_python_312():
        def start(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        threading.Thread.start = start

    # Run first at exit (last registered): every span still waits for the reader then.
    atexit.register(refuse_threads_like_python_312)
    atexit.register(release.set)
    print("ENDED", client.stats().enqueued, flush=True)
    """
)


def test_spans_ended_just_before_exit_are_delivered(collector: LocalCollector) -> None:
    """No flush, no shutdown: the exit drain reads the waiting spans before the doors shut,
    with no thread started at exit (as Python 3.12+ refuses)."""
    script = EXIT_SCRIPT.format(url=collector.url, app=APP_ID, spans=SPANS_AT_EXIT, chat=CHAT)
    result = run_python(script, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ENDED", "0"]  # nothing was read before the exit
    assert "Traceback" not in result.stderr, result.stderr
    assert len(collector.sessions) == SPANS_AT_EXIT
    assert len(collector.actions()) == SPANS_AT_EXIT * ACTIONS_PER_CHAT
    assert_each_event_once(collector)
