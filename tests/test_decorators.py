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
    SessionActionScanner,
)
from layer_sdk.collector import LocalCollector

from .helpers import PROMPT, closed_port


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
            return (
                {"messages": [{"role": "user", "content": "hi"}]},
                None,
                [SessionActionScanner("usage", {"tokens": 2})],
            )

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
    assert action["error"] == {"message": "model overloaded", "details": {"type": "ValueError"}}
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
        assert [action["data"] for action in session["actions"]] == [
            {"value": "one"},
            {"value": "two"},
        ]


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
        await asyncio.sleep(0)  # a real suspension, not synchronization
        return text

    @client.action(kind="completion_output")
    async def broken() -> None:
        await asyncio.sleep(0)  # a real suspension, not synchronization
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
            ("completion_prompt", {"value": "hello"}, None),
            (
                "completion_output",
                None,
                {"message": "stream reset", "details": {"type": "RuntimeError"}},
            ),
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


class _ServiceUnavailable(Exception):
    """An HTTP client's error, carrying the status as such libraries do."""

    status_code = 503


def test_a_recorded_exception_fits_the_contract(client: Client, collector: LocalCollector) -> None:
    """The class name goes in error.details, an int status in error.code."""
    session_id = client.create_session()

    @client.action(session_id=session_id, kind="completion_output")
    def call(failure: Exception) -> None:
        raise failure

    for failure in (_ServiceUnavailable("try later"), KeyError("k")):
        with pytest.raises(type(failure)):
            call(failure)
    assert client.flush(5)
    assert [a["error"] for a in collector.actions(session_id)] == [
        {"message": "try later", "code": 503, "details": {"type": "_ServiceUnavailable"}},
        {"message": "'k'", "details": {"type": "KeyError"}},
    ]


def test_a_scalar_return_value_is_wrapped_as_an_object(
    client: Client, collector: LocalCollector
) -> None:
    """A decorated function returning a string records {"value": ...}."""
    session_id = client.create_session()

    @client.action(session_id=session_id, kind="completion_output")
    def answer(value: Any) -> Any:
        return value

    assert answer("Lisbon") == "Lisbon"
    assert answer(42) == 42
    assert answer(("a", "b")) == ("a", "b")
    assert client.flush(5)
    data = [a["data"] for a in collector.actions(session_id)]
    assert data == [{"value": "Lisbon"}, {"value": 42}, ["a", "b"]]


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_an_exception_whose_str_fails_propagates_unchanged(
    client: Client, collector: LocalCollector
) -> None:
    """An exception whose __str__ raises reaches the caller, not the SDK's."""
    session_id = client.create_session()
    failure = _Unprintable()

    @client.action(session_id=session_id, kind=PROMPT)
    def prompt() -> None:
        raise failure

    with pytest.raises(_Unprintable) as raised:
        prompt()
    assert raised.value is failure
    assert client.flush(5)
    (action,) = collector.actions(session_id)
    assert action["error"] == {"message": "_Unprintable", "details": {"type": "_Unprintable"}}


@pytest.mark.parametrize("shape", ["cyclic", "deep"])
def test_data_that_cannot_be_encoded_for_depth_leaves_the_result_alone(
    client: Client, collector: LocalCollector, caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    """Cyclic or very deep data is logged; the function's result is returned."""
    session_id = client.create_session()
    data: dict[str, Any] = {}
    if shape == "cyclic":
        data["self"] = data
    else:
        inner = data
        for _ in range(100_000):
            inner["x"] = inner = {}

    @client.action(session_id=session_id, kind=PROMPT)
    def prompt() -> dict[str, Any]:
        return data

    @client.action(session_id=session_id, kind=PROMPT)
    def fails() -> Any:
        raise ValueError("the model failed")

    assert prompt() is data
    assert "nested too deeply" in caplog.text
    with pytest.raises(ValueError, match="the model failed"):
        fails()
    assert client.flush(5)
    assert [a["error"]["message"] for a in collector.actions(session_id)] == ["the model failed"]


def test_an_action_outside_any_session_runs_and_logs(
    client: Client, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A decorator's own failure is logged; the function runs."""

    @client.action(kind=PROMPT)
    def prompt(text: str) -> str:
        return text

    assert prompt("outside any session") == "outside any session"
    assert "needs session_id=" in caplog.text
    assert client.flush(5)
    assert collector.event_count == 0


def test_a_session_function_runs_before_init(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """@layer.session before init() logs and runs, with session_id=None."""
    client = Client()
    seen: list[Any] = []

    @client.action(kind=PROMPT)
    def prompt() -> str:
        return "hello"

    @client.session(attributes={"user.id": "u-1"})
    def conversation(question: str, session_id: str | None) -> str:
        seen.append(session_id)
        return prompt() + " " + question

    assert conversation("there") == "hello there"
    assert seen == [None]
    assert "could not open the session of" in caplog.text and "init()" in caplog.text
    assert "needs session_id=" in caplog.text  # the inner action joins no other session


def test_a_session_function_runs_when_a_sync_create_fails(
    make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    """@layer.session with sync=True and the API down logs and runs."""
    client = make_client(base_url=f"http://127.0.0.1:{closed_port()}", sync=True, max_retries=0)

    @client.session()
    async def conversation(session_id: str | None = "unset") -> str | None:
        await asyncio.sleep(0)  # a real suspension, not synchronization
        return session_id

    assert asyncio.run(conversation()) is None
    assert "could not open the session of" in caplog.text
    assert "LayerRequestError" in caplog.text


def test_bad_session_attributes_are_refused_when_decorating(client: Client) -> None:
    """A decorator's own arguments are checked once, when decorating."""
    with pytest.raises(LayerSchemaValidationError, match="'nested'"):
        client.session(attributes={"nested": {"x": 1}})
    with pytest.raises(LayerSchemaValidationError, match="attributes"):
        client.action(kind=PROMPT, attributes=["model.id"])  # type: ignore[arg-type]


def test_a_session_id_given_positionally_is_not_given_twice(
    client: Client, collector: LocalCollector
) -> None:
    """@layer.session never makes the call itself fail (no duplicate argument)."""

    @client.session()
    def handle(request: str, session_id: str | None = None) -> tuple[str, str | None]:
        return request, session_id

    assert handle("r", "mine") == ("r", "mine")
    minted = handle("r")[1]
    assert minted is not None
    assert client.flush(5)
    assert len(collector.sessions) == 2 and collector.session(minted) is not None
