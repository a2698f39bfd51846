"""The off switch: ``init(enabled=False)`` or ``LAYER_ENABLED=false``.

A disabled client needs no setting, starts no thread, opens no socket and
patches no provider; every call returns at once with a well-formed answer.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from layer_sdk import (
    Client,
    FirewallLookupDecision,
    LayerMissingRequiredConfigurationError,
    SessionActionKind,
)
from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, FAST, MakeClient, run_python

# Run in a fresh interpreter: an audit hook cannot be removed once added.
WATCHED = r"""
import json, sys, threading
import openai
from openai.resources.chat.completions import Completions
from layer_sdk import SessionActionKind, layer
from layer_sdk.instrumentation import instrumented_by

original_create = Completions.create
threads_before = set(threading.enumerate())
network = []
sys.addaudithook(
    lambda event, args: network.append(event)
    if event.startswith("socket.") or event == "http.client.connect" else None
)

layer.init(**OPTIONS)
session_id = layer.create_session(attributes={"user.id": "u-1"})
layer.append_action(session_id, kind=SessionActionKind.COMPLETION_PROMPT, data={"n": 1})

@layer.session()
def conversation(session_id=None):
    return answer()

@layer.action(kind=SessionActionKind.COMPLETION_OUTPUT)
def answer():
    return {"messages": [{"role": "assistant", "content": "hi"}]}

result = conversation()
import anthropic  # imported after init: the import hook must not patch it either
# Before shutdown, which would undo any patch.
unpatched = Completions.create is original_create
owners = [instrumented_by("openai") is None, instrumented_by("anthropic") is None]
new_threads = sorted(t.name for t in set(threading.enumerate()) - threads_before)
flushed, stats, shut = layer.flush(), layer.stats(), layer.shutdown()
print(json.dumps({
    "session_id": session_id,
    "result": result,
    "flushed": flushed,
    "shut_down": shut,
    "stats_disabled": stats.disabled,
    "enqueued": stats.enqueued,
    "new_threads": new_threads,
    "network": network,
    "openai_unpatched": unpatched,
    "owners": owners,
}))
"""


@pytest.mark.parametrize(
    ("options", "env"),
    [("enabled=False", {}), ("", {"LAYER_ENABLED": "false"})],
    ids=["argument", "environment"],
)
def test_a_disabled_client_starts_no_thread_opens_no_socket_and_patches_nothing(
    options: str, env: dict[str, str]
) -> None:
    pytest.importorskip("openai")
    pytest.importorskip("anthropic")
    code = WATCHED.replace("**OPTIONS", options)
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert uuid.UUID(seen["session_id"]).version == 5
    assert seen["result"] == {"messages": [{"role": "assistant", "content": "hi"}]}
    assert (seen["flushed"], seen["shut_down"]) == (True, True)
    assert (seen["stats_disabled"], seen["enqueued"]) == (True, 0)
    assert seen["new_threads"] == []
    assert seen["network"] == []
    assert seen["openai_unpatched"] is True
    assert seen["owners"] == [True, True]
    assert result.stderr == ""  # not a warning either


def test_every_call_returns_at_once_and_nothing_reaches_the_server(
    collector: LocalCollector,
) -> None:
    client = Client()
    client.init(enabled=False, base_url=collector.url, application_id=APP_ID, **FAST)
    minted = client.create_session(attributes={"user.id": "u-1"}, sync=True)
    assert uuid.UUID(minted).version == 5
    given = str(uuid.uuid5(uuid.NAMESPACE_URL, "given"))
    assert client.create_session(session_id=given) == given
    assert client.append_action(minted, kind=SessionActionKind.COMPLETION_PROMPT) is None
    with client.session_context() as bound:
        assert uuid.UUID(bound).version == 5

    @client.action(kind=SessionActionKind.COMPLETION_OUTPUT, session_id=minted)
    def fails() -> None:
        raise KeyError("unchanged")

    with pytest.raises(KeyError, match="unchanged"):
        fails()

    @client.session()
    async def chat(session_id: str | None = None) -> str | None:
        return session_id

    assert uuid.UUID(asyncio.run(chat())).version == 5
    assert client.firewall_session_lookup(minted).decision is FirewallLookupDecision.NO_DATA
    assert client.list_applications() == []
    assert client.get_applications_by_name("bot") == {}
    assert uuid.UUID(client.create_application("bot")).version == 5
    assert client.flush() is True
    stats = client.stats()
    assert stats.disabled is True
    assert (stats.enqueued, stats.dropped, stats.sent) == (0, 0, 0)
    assert repr(client) == "Client(disabled)"
    assert client.shutdown() is True
    assert client.create_session() != minted  # still answers after shutdown
    assert collector.requests == []


def test_a_disabled_client_needs_no_setting_but_checks_what_it_is_given() -> None:
    client = Client()
    client.init(enabled=False)  # no URL, no application
    assert client.shutdown() is True
    with pytest.raises(ValueError, match="max_queue_size"):
        Client().init(enabled=False, max_queue_size=-1)
    with pytest.raises(ValueError, match="base_url"):
        Client().init(enabled=False, base_url="layer.example.com")


@pytest.mark.parametrize("spelling", ["false", "FALSE", "0", "no", "Off", " off "])
def test_layer_enabled_turns_it_off_in_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    monkeypatch.setenv("LAYER_ENABLED", spelling)
    client = Client()
    client.init()
    assert client.stats().disabled is True
    client.shutdown()


@pytest.mark.parametrize("spelling", ["true", "True", "1", "yes", "ON"])
def test_layer_enabled_keeps_it_on_in_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, spelling: str, collector: LocalCollector
) -> None:
    monkeypatch.setenv("LAYER_ENABLED", spelling)
    with pytest.raises(LayerMissingRequiredConfigurationError, match="LAYER_BASE_URL"):
        Client().init()
    client = Client()
    client.init(base_url=collector.url, application_id=APP_ID, **FAST)
    try:
        client.create_session()
        assert client.flush(5) is True
        assert client.stats().disabled is False
        assert collector.event_count == 1
    finally:
        client.shutdown()


@pytest.mark.parametrize("spelling", ["maybe", "2", "disabled", "nein"])
def test_any_other_spelling_of_layer_enabled_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    monkeypatch.setenv("LAYER_ENABLED", spelling)
    with pytest.raises(ValueError, match=f"LAYER_ENABLED must be true or false.*{spelling!r}"):
        Client().init()


def test_the_argument_wins_over_the_variable_and_takes_no_string(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    monkeypatch.setenv("LAYER_ENABLED", "false")
    client = Client()
    client.init(enabled=True, base_url=collector.url, application_id=APP_ID, **FAST)
    try:
        assert client.stats().disabled is False
    finally:
        client.shutdown()
    with pytest.raises(ValueError, match="enabled must be True or False, got 'false'"):
        Client().init(enabled="false")  # type: ignore[arg-type]


def test_a_client_can_be_switched_on_and_off_across_shutdowns(collector: LocalCollector) -> None:
    client = Client()
    client.init(enabled=False)
    client.create_session()
    assert client.shutdown() is True
    client.init(base_url=collector.url, application_id=APP_ID, **FAST)
    client.create_session()
    assert client.flush(5) is True
    assert client.stats().enqueued == 1
    assert client.shutdown() is True
    client.init(enabled=False)
    client.create_session()
    assert client.stats().disabled is True
    assert client.stats().enqueued == 0
    assert client.shutdown() is True
    assert collector.event_count == 1


def test_opentelemetry_spans_of_a_disabled_client_record_nothing_and_say_nothing(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from layer_sdk.otel import conversation_session_id

    from .otel_helpers import make_traced
    from .test_otel import CURRENT_CHAT

    traced = make_traced(make_client, collector, enabled=False)
    try:
        traced.span("chat", {**CURRENT_CHAT, "gen_ai.conversation.id": "conv-7"})
    finally:
        traced.provider.shutdown()
    assert [record.getMessage() for record in caplog.records] == []
    assert collector.requests == []
    enabled = make_client()  # the same application: the same conversation, the same session
    assert conversation_session_id("conv-7", traced.client) == conversation_session_id(
        "conv-7", enabled
    )
