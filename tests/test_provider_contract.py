"""The provider contract, held by every instrumented provider (openai, anthropic, google-genai).

Each test runs once per provider (``provider_contract.ADAPTERS``), with the
provider's real client against its local server (``tests/*_server.py``) and
the real local collector: the caller's results, requests and exceptions are
what they would be without the SDK; a stream, however it ends, is recorded
once; the session is picked by the header (removed before the request
leaves), ``session_context()`` or ``@layer.session``; the firewall can
refuse a call before its request leaves; the patches come and go with
``init()`` and ``shutdown()``. How each provider's requests and answers
read as actions is checked in its own file (``test_openai.py``, ...).
A provider whose SDK is not installed is skipped.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from layer_sdk import Client, LayerFirewallSessionBlocked
from layer_sdk.collector import LocalCollector
from layer_sdk.instrumentation import instrumented_by, uninstrument

from .helpers import (
    actions_of,
    assert_patched_for_each_init,
    check_error,
    drain,
    leave_early,
    one,
    run_python,
    then,
    wait_until,
)
from .provider_contract import ADAPTERS, Adapter, installed

MODES = ["sync", "async"]
SESSION_HEADERS = ["X-Layer-Session-Id", "Layer-Session-Id", "x-layer-session-id"]


@pytest.fixture(params=sorted(ADAPTERS))
def adapter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Adapter:
    """The provider under test (skipped when its SDK is not installed), with no patches
    left owned by another test's client and a fresh "logged once" state."""
    found = installed(request.param)
    owner = instrumented_by(found.name)
    if owner is not None:
        uninstrument(owner)
    monkeypatch.setattr(found.provider().problems, "reported", set())
    return found


@pytest.fixture
def server(adapter: Adapter) -> Iterator[Any]:
    with adapter.server_class() as running:
        yield running


@pytest.fixture
def layer(adapter: Adapter, make_client: Callable[..., Client]) -> Client:
    client = make_client()
    assert instrumented_by(adapter.name) is client
    return client


@pytest.fixture(autouse=True)
def _errors_fit_the_wire_contract(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every error recorded is one the API takes (an integer code or none, details)."""
    if "collector" not in request.fixturenames:
        yield
        return
    collector: LocalCollector = request.getfixturevalue("collector")
    yield
    for action in collector.actions():
        if "error" in action:
            check_error(action["error"])


def text_content(output: dict[str, Any]) -> str:
    return output["data"]["messages"][0]["content"] or ""


# -- what the caller and the server see -----------------------------------------------------------


def test_results_and_requests_are_identical_with_and_without_instrumentation(
    adapter: Adapter, make_client: Callable[..., Client], server: Any
) -> None:
    """Every call shape, with and without the instrumentation: the same results (class and
    content), the same requests (paths, bodies, headers), no header of Layer's on the wire."""

    def sent() -> list[Any]:
        return [(r.path, r.body, adapter.comparable(r.headers)) for r in server.requests]

    plain = adapter.perform("sync", server, adapter.every_call)
    plain_requests = sent()
    server.clear()
    make_client()
    instrumented = adapter.perform("sync", server, adapter.every_call)
    assert instrumented == plain
    assert sent() == plain_requests
    for request in server.requests:
        assert not any(name.startswith(("x-layer", "layer-")) for name in request.headers)


@pytest.mark.parametrize("mode", MODES)
def test_an_api_error_reaches_the_caller_unchanged_and_is_recorded(
    mode: str,
    adapter: Adapter,
    make_client: Callable[..., Client],
    collector: LocalCollector,
    server: Any,
) -> None:
    """The provider's exception, its class and its text, as without the SDK; the call is
    recorded with the error on its output and the HTTP status as its code."""

    def fail(client: Any) -> Any:
        return adapter.complete(client, model="fail-429")

    with pytest.raises(Exception) as without:
        adapter.perform(mode, server, fail)
    layer = make_client()
    with layer.session_context() as sid, pytest.raises(Exception) as raised:
        adapter.perform(mode, server, fail)
    assert type(raised.value) is type(without.value)
    request_id = re.compile(r"req_[0-9]+")  # each answer's own (in anthropic's text)
    assert request_id.sub("", str(raised.value)) == request_id.sub("", str(without.value))
    output = one(actions_of(layer, collector, sid, 2), "completion_output")
    assert output["error"]["code"] == 429


# -- streams -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_read_to_its_end_is_recorded_once_and_complete(
    mode: str, adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    with layer.session_context() as sid:
        items = adapter.perform(
            mode, server, lambda c: then(mode, adapter.stream(c), lambda s: drain(mode, s))
        )
    output = one(actions_of(layer, collector, sid, 2), "completion_output")
    assert output["attributes"]["stream"] is True
    assert output["attributes"]["incomplete"] is False
    assert text_content(output) == adapter.text_of(items) != ""
    gc.collect()
    assert layer.flush(5) and len(collector.actions(sid)) == 2  # nothing more later


def assert_left_after_three(
    layer: Client, collector: LocalCollector, session_id: str, received: list[Any], text: str
) -> None:
    """A ``slow`` stream left after three items: recorded once, incomplete, with the text
    received and no error."""
    assert len(received) == 3
    assert wait_until(lambda: layer.stats().enqueued == 3)  # session, prompt, output
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    assert text_content(output) == text
    assert "error" not in output
    gc.collect()
    assert layer.flush(5) and len(collector.actions(session_id)) == 2  # nothing more later


@pytest.mark.parametrize("how", ["close", "with", "gc"])
def test_a_stream_left_early_is_recorded_incomplete_once(
    how: str, adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """Closed (twice), left by a ``with`` block, or dropped and collected."""
    if how == "with" and not adapter.streams_are_context_managers:
        pytest.skip(f"{adapter.name}'s streams are plain generators, not context managers")
    client = adapter.open("sync", server)
    with layer.session_context() as session_id:
        stream = adapter.stream(client, model="slow")
        received = leave_early(stream, how, 3)
        del stream  # for "gc", the last reference
        gc.collect()
    assert_left_after_three(layer, collector, session_id, received, adapter.text_of(received))
    adapter.close(client)


@pytest.mark.parametrize("how", ["close", "async with", "abandon"])
def test_an_async_stream_left_early_is_recorded_incomplete_once(
    how: str, adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """Closed (``close()``/``aclose()``, or an ``async with`` block): recorded at the close
    (or soon after, for a provider whose ``records_at_close`` is False), the stream still
    held; abandoned: when it is collected."""
    if how == "async with" and not adapter.streams_are_context_managers:
        pytest.skip(f"{adapter.name}'s streams are plain generators, not context managers")
    enqueued_at_close: list[int] = []

    async def call(c: Any) -> list[Any]:
        stream = await adapter.stream(c, model="slow")
        if how == "async with":
            async with stream:
                received = await drain("async", stream, limit=3)
        else:
            received = await drain("async", stream, limit=3)
            if how == "close":
                await getattr(stream, adapter.async_close)()
        if how != "abandon" and not adapter.records_at_close:
            assert wait_until(lambda: layer.stats().enqueued == 3)
        enqueued_at_close.append(layer.stats().enqueued)  # the stream is still referenced
        return received  # type: ignore[no-any-return]

    with layer.session_context() as session_id:
        received = adapter.perform("async", server, call)
    assert enqueued_at_close == [2 if how == "abandon" else 3]  # session, prompt (, output)
    gc.collect()
    assert_left_after_three(layer, collector, session_id, received, adapter.text_of(received))


@pytest.mark.parametrize("mode", MODES)
def test_an_exception_in_the_callers_loop_propagates_and_the_stream_is_recorded(
    mode: str, adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """The caller's own exception, unchanged; the stream recorded once, incomplete."""

    class Stop(Exception):
        pass

    def call(c: Any) -> Any:
        async def read_async(stream: Any) -> None:
            async for _ in stream:
                raise Stop

        def read(stream: Any) -> Any:
            if mode == "async":
                return read_async(stream)
            for _ in stream:
                raise Stop
            return None

        return then(mode, adapter.stream(c, model="slow"), read)

    with layer.session_context() as session_id, pytest.raises(Stop):
        adapter.perform(mode, server, call)
    gc.collect()
    assert wait_until(lambda: layer.stats().enqueued == 3)
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    assert "error" not in output


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_cut_off_midway_records_its_error_once(
    mode: str, adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """The server closes the connection mid-stream: the caller gets the provider's
    exception; the output is recorded once, incomplete, with the error and the text so far."""

    def call(c: Any) -> Any:
        return then(mode, adapter.stream(c, model="drop"), lambda s: drain(mode, s))

    with layer.session_context() as session_id, pytest.raises(Exception) as raised:
        adapter.perform(mode, server, call)
    assert not isinstance(raised.value, AssertionError)
    gc.collect()
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    assert output["error"]["details"]["type"] == type(raised.value).__name__
    assert text_content(output) != ""


#: An API key of no shape a pattern knows (a gateway's own, say): only its value can mask it.
GATEWAY_KEY = "team-gateway-key-7Hq2xK9pLm4Nv8Rw"


@pytest.mark.parametrize("path", ["refusal", "stream error"])
@pytest.mark.parametrize("mode", MODES)
def test_provider_text_quoting_the_api_key_is_recorded_without_it(
    mode: str, path: str, adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """A refusal of the call, or an error event in the middle of its stream, that quotes the
    client's API key: the caller's exception keeps it; what Layer records has it masked.
    (An older google-genai reads an error in the middle of a stream as a piece without
    text, and raises nothing: then nothing is recorded of it either.)"""

    def call(c: Any) -> Any:
        if path == "refusal":
            return adapter.complete(c, model="refuse-key-plain")
        return then(
            mode, adapter.stream(c, model="stream-error-key-plain"), lambda s: drain(mode, s)
        )

    told: list[Exception] = []
    with layer.session_context() as sid:
        try:
            adapter.perform(mode, server, call, api_key=GATEWAY_KEY)
        except Exception as exc:
            told.append(exc)
    gc.collect()
    output = one(actions_of(layer, collector, sid, 2), "completion_output")
    if told or path == "refusal":
        assert GATEWAY_KEY in str(told[0])  # the caller's exception is unchanged
        assert "the key <redacted> was revoked" in output["error"]["message"]
    else:
        assert "error" not in output
    assert GATEWAY_KEY not in json.dumps(collector.actions())


# -- which session --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", SESSION_HEADERS)
@pytest.mark.parametrize("mode", MODES)
def test_the_session_header_picks_the_session_and_never_reaches_the_provider(
    mode: str, header: str, adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """The header picks the session, plain and streamed; it is removed from a copy of the
    caller's headers (theirs are left as they were) before the request leaves."""
    session_id = layer.create_session()
    headers = {header: session_id, "X-Other": "kept"}
    given = dict(headers)

    def call(c: Any) -> Any:
        plain = adapter.complete(c, **headers)
        return then(mode, plain, lambda _: then(mode, adapter.stream(c, **headers), read))

    def read(stream: Any) -> Any:
        return drain(mode, stream)

    adapter.perform(mode, server, call)
    assert headers == given
    assert len(server.requests) == 2
    for received in server.requests:
        assert "x-layer-session-id" not in received.headers
        assert "layer-session-id" not in received.headers
        assert received.headers["x-other"] == "kept"
    actions_of(layer, collector, session_id, 4)
    assert len(collector.sessions) == 1  # no session created for the calls


def test_a_bad_session_header_gets_a_new_session_and_is_still_removed(
    adapter: Adapter,
    layer: Client,
    collector: LocalCollector,
    server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="layer_sdk"):
        adapter.perform(
            "sync", server, lambda c: adapter.complete(c, **{"X-Layer-Session-Id": "nope"})
        )
    assert "x-layer-session-id" not in server.requests[0].headers
    assert layer.flush(10)
    (session,) = collector.sessions
    assert len(collector.actions(session["session_id"])) == 2
    assert any("session header" in r.getMessage() for r in caplog.records)


def test_each_call_without_a_session_gets_its_own(
    adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    adapter.perform("sync", server, lambda c: [adapter.complete(c), adapter.complete(c)])
    assert layer.flush(10)
    sessions = collector.sessions
    assert len(sessions) == 2
    for session in sessions:
        assert len(collector.actions(session["session_id"])) == 2


def test_session_context_across_await_and_layer_session_pick_the_session(
    adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """``@layer.session`` (the header wins over it), and ``session_context()`` across an
    ``await`` and into concurrent tasks."""
    other = layer.create_session()

    @layer.session(attributes={"user.id": "u1"})
    def conversation(session_id: str) -> str:
        adapter.perform("sync", server, adapter.complete)
        adapter.perform(
            "sync", server, lambda c: adapter.complete(c, **{"X-Layer-Session-Id": other})
        )
        return session_id

    decorated = conversation()

    async def calls(c: Any) -> None:
        await adapter.complete(c)
        await asyncio.sleep(0)  # the context must survive a suspension
        await asyncio.gather(adapter.complete(c), drain("async", await adapter.stream(c)))

    with layer.session_context() as session_id:
        adapter.perform("async", server, calls)
    actions_of(layer, collector, decorated, 2)
    actions_of(layer, collector, other, 2)
    actions_of(layer, collector, session_id, 6)


# -- arguments ------------------------------------------------------------------------------------


class BrokenSource(Exception):
    """What a caller's generator of messages raises midway."""


def test_one_shot_iterators_are_read_once_and_still_sent(
    adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """A generator of messages reaches the provider whole, and the prompt records it."""
    messages = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    with layer.session_context() as session_id:
        made = adapter.perform(
            "sync", server, lambda c: adapter.with_messages(c, (m for m in messages))
        )
    if made is None:
        pytest.skip(f"{adapter.name} takes no messages argument")
    assert server.requests[0].body["messages"] == messages
    prompt = one(actions_of(layer, collector, session_id, 2), "completion_prompt")
    assert prompt["data"]["messages"] == messages


@pytest.mark.parametrize("instrumented", [False, True])
def test_a_generator_that_raises_reaches_the_provider_and_its_exception_the_caller(
    instrumented: bool, adapter: Adapter, make_client: Callable[..., Client], server: Any
) -> None:
    """The provider takes a one-shot iterator as it would without the SDK: nothing is sent
    with the messages it lacks, and the caller gets the generator's exception."""
    if adapter.perform("sync", server, lambda c: adapter.with_messages(c, [])) is None:
        pytest.skip(f"{adapter.name} takes no messages argument")
    server.clear()
    if instrumented:
        make_client()

    def broken() -> Any:
        yield {"role": "user", "content": "one"}
        raise BrokenSource("the second message could not be read")

    with pytest.raises(BrokenSource, match="second message"):
        adapter.perform("sync", server, lambda c: adapter.with_messages(c, broken()))
    assert server.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_a_call_whose_one_shot_argument_raises_as_it_is_read_records_nothing(
    mode: str, adapter: Adapter, layer: Client, collector: LocalCollector, server: Any
) -> None:
    """The caller's generator of its prompt raises while the provider builds the request:
    no request is made, and nothing is recorded (no prompt, no session), as when the
    caller's code fails building a list before the call. The caller gets an exception:
    the generator's own, or (google-genai) the provider's for the prompt it lacks."""

    def broken() -> Any:
        yield "one"
        raise BrokenSource("the second text could not be read")

    with pytest.raises(Exception) as raised:  # a call of no session: it would get its own
        adapter.perform(mode, server, lambda c: adapter.from_texts(c, broken()))
    assert not isinstance(raised.value, AssertionError)
    assert server.requests == []
    assert layer.flush(5)
    assert layer.stats().enqueued == 0
    assert (collector.sessions, collector.actions()) == ([], [])

    adapter.perform(mode, server, lambda c: adapter.from_texts(c, iter(["one", "two"])))
    assert len(server.requests) == 1  # the same call, its texts all read: recorded
    assert layer.flush(5)
    assert len(collector.sessions) == 1
    assert sorted(a["kind"] for a in collector.actions()) == [
        "completion_output",
        "completion_prompt",
    ]


# -- the firewall ------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_the_firewall_refuses_a_blocked_session_before_the_request_leaves(
    mode: str,
    streamed: bool,
    adapter: Adapter,
    make_client: Callable[..., Client],
    collector: LocalCollector,
    server: Any,
) -> None:
    """With ``enable_firewall_instrumentation=True`` a call of a blocked session raises
    ``LayerFirewallSessionBlocked`` (for a stream of plain generators: as it is read, where
    the provider's own errors come) and the provider never sees the request; a session the
    firewall lets pass is called as usual."""
    layer = make_client(firewall_base_url=collector.url, enable_firewall_instrumentation=True)
    blocked, passed = layer.create_session(), layer.create_session()
    collector.set_firewall_decision(blocked, "block")
    collector.set_firewall_decision(passed, "pass")

    def call(session_id: str) -> Callable[[Any], Any]:
        headers = {"X-Layer-Session-Id": session_id}
        if not streamed:
            return lambda c: adapter.complete(c, **headers)
        return lambda c: then(mode, adapter.stream(c, **headers), lambda s: drain(mode, s))

    with pytest.raises(LayerFirewallSessionBlocked):
        adapter.perform(mode, server, call(blocked))
    assert server.requests == []
    adapter.perform(mode, server, call(passed))
    assert len(server.requests) == 1
    assert layer.flush(10)
    assert collector.actions(blocked) == []
    assert len(collector.actions(passed)) == 2


# -- shapes and the patches' lifecycle ----------------------------------------------------------


def test_wrappers_keep_the_shape_and_signature_of_the_originals(
    adapter: Adapter, layer: Client
) -> None:
    """A coroutine function stays one, a generator function stays one, a plain function
    stays plain; the name and the signature are the original's."""
    patched = adapter.patched()
    assert len(patched) >= 4
    for cls, name in patched:
        wrapper = cls.__dict__[name]
        original = wrapper.__wrapped__
        for shape in (inspect.iscoroutinefunction, inspect.isgeneratorfunction):
            assert shape(wrapper) == shape(original), (cls, name)
        assert wrapper.__name__ == original.__name__
        assert inspect.signature(wrapper) == inspect.signature(original)


def test_disable_instrumentations_leaves_the_provider_alone(
    adapter: Adapter, make_client: Callable[..., Client], collector: LocalCollector, server: Any
) -> None:
    cls, name = adapter.sync_method()
    original = cls.__dict__[name]
    client = make_client(disable_instrumentations=[adapter.name.upper()])
    assert instrumented_by(adapter.name) is None
    assert adapter.patched() == []
    assert cls.__dict__[name] is original
    adapter.perform("sync", server, adapter.complete)
    assert client.flush(5)
    assert collector.actions() == []
    make_client(disabled_instrumentors=[adapter.name])  # the alias
    assert adapter.patched() == []


def test_shutdown_unpatches_and_two_cycles_never_double_wrap(
    adapter: Adapter, collector: LocalCollector, server: Any, request: pytest.FixtureRequest
) -> None:
    assert_patched_for_each_init(
        collector,
        request,
        adapter.name,
        adapter.sync_method(),
        adapter.patched,
        lambda: adapter.perform("sync", server, adapter.complete),
    )


def test_a_second_client_does_not_patch_again(
    adapter: Adapter, make_client: Callable[..., Client], collector: LocalCollector, server: Any
) -> None:
    cls, name = adapter.sync_method()
    first = make_client()
    wrapper = cls.__dict__[name]
    second = make_client()
    assert cls.__dict__[name] is wrapper
    assert instrumented_by(adapter.name) is first
    second.shutdown()  # not the owner: the patches stay
    assert cls.__dict__[name] is wrapper
    with first.session_context() as sid:
        adapter.perform("sync", server, adapter.complete)
    actions_of(first, collector, sid, 2)  # received by the first client
    first.shutdown()
    assert adapter.patched() == []


def test_importing_layer_sdk_and_init_do_not_import_the_provider(adapter: Adapter) -> None:
    result = run_python(
        "import sys, layer_sdk, layer_sdk.instrumentation\n"
        f"print({adapter.package!r} in sys.modules)\n"
        "from layer_sdk.collector import LocalCollector\n"
        "with LocalCollector() as c:\n"
        "    layer_sdk.layer.init(base_url=c.url, application_id='app')\n"
        f"    print({adapter.package!r} in sys.modules)\n"
        "    layer_sdk.layer.shutdown()\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_a_provider_imported_after_init_is_patched_on_import(adapter: Adapter) -> None:
    """init() does not pay for importing the provider: it is patched when the application
    imports it; shutdown takes the patches and the import hook off."""
    server_module = adapter.server_class.__module__
    body = "\n".join("    " + line for line in adapter.import_and_call.splitlines())
    result = run_python(
        "import sys\n"
        "from layer_sdk import Client\n"
        "from layer_sdk.collector import LocalCollector\n"
        f"from {server_module} import {adapter.server_class.__name__} as Server\n"
        "with LocalCollector() as collector, Server() as server:\n"
        "    layer = Client()\n"
        "    layer.init(base_url=collector.url, application_id='app')\n"
        f"    print({adapter.package!r} in sys.modules)\n"
        f"{body}\n"
        f"    print({adapter.patched_expression}.__layer_instrumented__)\n"
        "    layer.flush(10)\n"
        "    print(len(collector.actions(sid)))\n"
        "    layer.shutdown()\n"
        f"    print(hasattr({adapter.patched_expression}, '__layer_instrumented__'))\n"
        "    print(any(type(f).__name__ == '_PostImportHook' for f in sys.meta_path))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "2", "False", "False"]


def test_a_client_shut_down_before_the_provider_is_imported_leaves_it_alone(
    adapter: Adapter,
) -> None:
    body = adapter.import_and_call.splitlines()[0]
    result = run_python(
        "import sys\n"
        "from layer_sdk import Client\n"
        "from layer_sdk.collector import LocalCollector\n"
        "with LocalCollector() as collector:\n"
        "    layer = Client()\n"
        "    layer.init(base_url=collector.url, application_id='app')\n"
        "    layer.shutdown()\n"
        f"    {body}\n"
        f"    print(hasattr({adapter.patched_expression}, '__layer_instrumented__'))\n"
        "    print(any(type(f).__name__ == '_PostImportHook' for f in sys.meta_path))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
