"""@layer.session and @layer.action, for plain and async functions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from layer_sdk import (
    Client,
    LayerSchemaValidationError,
    SessionActionError,
    SessionActionKind,
    SessionActionScanner,
)
from layer_sdk.collector import LocalCollector

PROMPT = SessionActionKind.COMPLETION_PROMPT


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client(flush_interval=30)


def test_session_passes_its_id_and_action_records_the_returned_tuple(
    client: Client, collector: LocalCollector
) -> None:
    @client.session(attributes={"user.id": "user-002"})
    def conversation(session_id: str) -> Any:
        @client.action(session_id=session_id, kind=PROMPT, attributes={"model.id": "m"})
        def prompt() -> Any:
            return {"messages": [{"role": "user", "content": "hi"}]}, None, [
                SessionActionScanner("usage", {"tokens": 2})
            ]

        return session_id, prompt()

    session_id, result = conversation()
    assert result[0] == {"messages": [{"role": "user", "content": "hi"}]}  # returned unchanged
    assert client.flush(5)
    session = collector.session(session_id)
    assert session is not None and session["attributes"]["user.id"] == "user-002"
    (action,) = session["actions"]
    assert action["kind"] == "completion_prompt"
    assert action["attributes"] == {"model.id": "m"}
    assert action["data"] == {"messages": [{"role": "user", "content": "hi"}]}
    assert action["scanners"] == [{"name": "usage", "data": {"tokens": 2}}]
    assert "error" not in action
    assert action["start_time"] <= action["end_time"]


def test_a_plain_return_value_is_recorded_as_data(
    client: Client, collector: LocalCollector
) -> None:
    session_id = client.create_session()

    @client.action(session_id=session_id, kind="embeddings")
    def embed() -> list[float]:
        return [0.1, 0.2]

    assert embed() == [0.1, 0.2]
    assert client.flush(5)
    assert collector.actions(session_id)[0]["data"] == [0.1, 0.2]


def test_an_exception_is_recorded_as_the_error_and_propagates_unchanged(
    client: Client, collector: LocalCollector
) -> None:
    session_id = client.create_session()
    failure = ValueError("model overloaded")

    @client.action(session_id=session_id, kind=PROMPT)
    def prompt() -> None:
        raise failure

    with pytest.raises(ValueError) as raised:
        prompt()
    assert raised.value is failure
    assert client.flush(5)
    (action,) = collector.actions(session_id)
    assert action["error"] == {"message": "model overloaded", "code": "ValueError"}
    assert "data" not in action


def test_a_returned_error_is_recorded(client: Client, collector: LocalCollector) -> None:
    session_id = client.create_session()

    @client.action(session_id=session_id, kind="moderation")
    def moderate() -> Any:
        return None, SessionActionError("flagged", code=451), None

    moderate()
    assert client.flush(5)
    assert collector.actions(session_id)[0]["error"] == {"message": "flagged", "code": 451}


def test_action_inside_a_session_function_uses_that_session_by_default(
    client: Client, collector: LocalCollector
) -> None:
    @client.action(kind=PROMPT)
    def prompt(text: str) -> str:
        return text

    @client.session()
    def conversation() -> None:
        prompt("one")
        prompt("two")

    conversation()
    conversation()
    assert client.flush(5)
    assert len(collector.sessions) == 2
    for session in collector.sessions:
        assert [action["data"] for action in session["actions"]] == ["one", "two"]
    with pytest.raises(LayerSchemaValidationError, match="session"):
        prompt("outside any session")


def test_a_session_function_without_a_session_id_parameter_is_called_as_is(
    client: Client, collector: LocalCollector
) -> None:
    @client.session(attributes={"job": "nightly"})
    def job(x: int) -> int:
        return x * 2

    assert job(21) == 42
    assert client.flush(5)
    assert collector.sessions[0]["attributes"]["job"] == "nightly"


def test_async_functions_are_decorated_too(client: Client, collector: LocalCollector) -> None:
    @client.action(kind=PROMPT)
    async def prompt(text: str) -> str:
        await asyncio.sleep(0)
        return text

    @client.action(kind="completion_output")
    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("stream reset")

    @client.session(attributes={"kind": "async"})
    async def conversation(session_id: str) -> str:
        await prompt("hello")
        with pytest.raises(RuntimeError, match="stream reset"):
            await broken()
        return session_id

    async def main() -> list[str]:
        return list(await asyncio.gather(conversation(), conversation()))

    session_ids = asyncio.run(main())
    assert asyncio.iscoroutinefunction(conversation)
    assert client.flush(5)
    for session_id in session_ids:
        kinds = [(a["kind"], a.get("data"), a.get("error")) for a in collector.actions(session_id)]
        assert kinds == [
            ("completion_prompt", "hello", None),
            ("completion_output", None, {"message": "stream reset", "code": "RuntimeError"}),
        ]


def test_a_result_that_cannot_be_encoded_is_logged_not_raised(
    client: Client, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = client.create_session()

    @client.action(session_id=session_id, kind=PROMPT)
    def prompt() -> object:
        return object()

    prompt()
    assert "could not record" in caplog.text
    assert client.flush(5)
    assert collector.actions(session_id) == []


def test_a_bad_kind_is_refused_when_decorating(client: Client) -> None:
    with pytest.raises(LayerSchemaValidationError, match="kind"):
        client.action(kind="chat")
