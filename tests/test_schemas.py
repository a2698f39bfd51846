"""Bad input is refused at the call site, with an exception that names the problem."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from layer_sdk import (
    Client,
    LayerRequestPreparationError,
    LayerSchemaValidationError,
    SessionActionError,
    SessionActionKind,
    SessionActionScanner,
)
from layer_sdk._schemas import SessionIdFactory, session_attributes, utc
from layer_sdk.collector import LocalCollector


def test_minted_session_ids_are_uuid_version_5_and_unique() -> None:
    mint = SessionIdFactory("app")
    ids = {mint() for _ in range(10_000)}
    assert len(ids) == 10_000
    for text in list(ids)[:100]:
        parsed = uuid.UUID(text)
        assert parsed.version == 5
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_a_given_session_id_must_be_uuid_version_5(client: Client) -> None:
    with pytest.raises(LayerSchemaValidationError, match="version 5"):
        client.create_session(session_id=str(uuid.uuid4()))
    with pytest.raises(LayerSchemaValidationError, match="version 5"):
        client.create_session(session_id="not-a-uuid")
    v5 = uuid.uuid5(uuid.NAMESPACE_DNS, "example.com")
    assert client.create_session(session_id=v5) == str(v5)
    assert client.create_session(session_id=str(v5).upper()) == str(v5)


def test_append_action_refuses_a_session_id_that_is_no_uuid(client: Client) -> None:
    with pytest.raises(LayerSchemaValidationError, match="session_id"):
        client.append_action("session-1", kind="completion_prompt")
    with pytest.raises(LayerSchemaValidationError, match="session_id"):
        client.append_action(None, kind="completion_prompt")


@pytest.mark.parametrize("kind", ["completion", "COMPLETION_PROMPT", 3, None])
def test_a_kind_outside_session_action_kind_is_refused(client: Client, kind: object) -> None:
    session_id = client.create_session()
    with pytest.raises(LayerSchemaValidationError, match="kind"):
        client.append_action(session_id, kind=kind)  # type: ignore[arg-type]


def test_kind_values_are_fixed() -> None:
    assert {kind.value for kind in SessionActionKind} == {
        "embeddings",
        "moderation",
        "completion_prompt",
        "completion_output",
        "completion_prompt_attachment",
        "completion_tool_call",
    }


def test_non_serializable_data_is_refused_at_the_call(client: Client) -> None:
    session_id = client.create_session()
    with pytest.raises(LayerRequestPreparationError, match="object"):
        client.append_action(session_id, kind="completion_prompt", data={"x": object()})
    assert client.stats().enqueued == 1  # only the session


def test_the_data_is_snapshotted_at_the_call(client: Client, collector: LocalCollector) -> None:
    session_id = client.create_session()
    data = {"messages": [{"role": "user", "content": "before"}]}
    client.append_action(session_id, kind="completion_prompt", data=data)
    data["messages"][0]["content"] = "after"
    assert client.flush(5)
    assert collector.actions(session_id)[0]["data"]["messages"][0]["content"] == "before"


def test_an_oversized_event_is_refused_and_counted(
    make_client: object, collector: LocalCollector
) -> None:
    client = make_client(max_event_bytes=2_000)  # type: ignore[operator]
    session_id = client.create_session()
    with pytest.raises(LayerRequestPreparationError, match="max_event_bytes"):
        client.append_action(session_id, kind="completion_prompt", data="x" * 5_000)
    client.append_action(session_id, kind="completion_prompt", data="x" * 100)
    assert client.flush(5) is False  # something was dropped since the last flush
    stats = client.stats()
    assert stats.dropped_by_reason == {"too_large": 1}
    assert stats.sent == 2
    assert len(collector.actions(session_id)) == 1


def test_session_attributes_become_strings_and_none_is_left_out() -> None:
    assert session_attributes({"a": 1, "b": 2.5, "c": True, "d": None, "e": "x"}) == {
        "a": "1",
        "b": "2.5",
        "c": "True",
        "e": "x",
    }
    with pytest.raises(LayerSchemaValidationError, match="'nested'"):
        session_attributes({"nested": {"x": 1}})
    with pytest.raises(LayerSchemaValidationError, match="mapping"):
        session_attributes(["a"])  # type: ignore[arg-type]


def test_error_and_scanners_accept_dicts_and_refuse_nonsense(client: Client) -> None:
    session_id = client.create_session()
    client.append_action(
        session_id,
        kind="completion_output",
        error={"message": "boom", "code": 500},
        scanners=[{"name": "usage", "data": {"tokens": 3}}, SessionActionScanner("pii", {})],
    )
    client.append_action(session_id, kind="completion_output", error=SessionActionError("x"))
    with pytest.raises(LayerSchemaValidationError, match="error"):
        client.append_action(session_id, kind="completion_output", error={"code": 1})
    with pytest.raises(LayerSchemaValidationError, match="error"):
        client.append_action(session_id, kind="completion_output", error="boom")
    with pytest.raises(LayerSchemaValidationError, match="scanners"):
        client.append_action(session_id, kind="completion_output", scanners=[{"data": 1}])
    with pytest.raises(LayerSchemaValidationError, match="scanners"):
        client.append_action(session_id, kind="completion_output", scanners="usage")


def test_times_must_be_datetimes(client: Client) -> None:
    session_id = client.create_session()
    with pytest.raises(LayerSchemaValidationError, match="start_time"):
        client.append_action(session_id, kind="embeddings", start_time="2024-01-01")  # type: ignore[arg-type]
    with pytest.raises(LayerSchemaValidationError, match="end_time"):
        client.create_session(end_time=1700000000)  # type: ignore[arg-type]


def test_times_are_converted_to_utc() -> None:
    naive = datetime(2024, 5, 1, 12, 0, 0)
    assert utc(naive, "t") == datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    paris = datetime(2024, 5, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert utc(paris, "t") == datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert utc(paris, "t").utcoffset() == timedelta(0)  # type: ignore[union-attr]
