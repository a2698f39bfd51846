"""Bad input is refused at the call site, with an exception that names the problem."""

from __future__ import annotations

import dataclasses
import http
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layer_sdk import (
    Client,
    LayerRequestPreparationError,
    LayerSchemaValidationError,
    LayerSDKException,
    SessionActionError,
    SessionActionKind,
    SessionActionScanner,
)
from layer_sdk._schemas import (
    SessionIdFactory,
    _checked_action,
    action_body,
    session_attributes,
    utc,
)
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


def test_with_oversize_refuse_an_oversized_event_is_refused_and_counted(
    make_client: object, collector: LocalCollector
) -> None:
    client = make_client(max_event_bytes=2_000, oversize="refuse")  # type: ignore[operator]
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


def test_error_code_and_details_are_checked_at_the_call(
    client: Client, collector: LocalCollector
) -> None:
    """Error.code is an int or None, error.details a dict or None."""
    session_id = client.create_session()
    bad: list[Any] = [
        ({"message": "x", "code": "ValueError"}, "error.code"),
        ({"message": "x", "code": True}, "error.code"),
        ({"message": "x", "details": "ValueError"}, "error.details"),
        (SessionActionError("x", code="429"), "error.code"),  # type: ignore[arg-type]
        (SessionActionError("x", code=False), "error.code"),
        (SessionActionError("x", details=["a"]), "error.details"),  # type: ignore[arg-type]
        (SessionActionError(1), "error.message"),  # type: ignore[arg-type]
    ]
    for error, field in bad:
        with pytest.raises(LayerSchemaValidationError, match=field.replace(".", r"\.")):
            client.append_action(session_id, kind="completion_output", error=error)
    for error in (
        SessionActionError("x", code=http.HTTPStatus.TOO_MANY_REQUESTS, details={"a": 1}),
        {"message": "y", "code": -1, "details": None},
    ):
        client.append_action(session_id, kind="completion_output", error=error)
    assert client.flush(5)
    assert [a["error"] for a in collector.actions(session_id)] == [
        {"message": "x", "code": 429, "details": {"a": 1}},
        {"message": "y", "code": -1},
    ]


def test_scanner_data_must_be_an_object(client: Client, collector: LocalCollector) -> None:
    """A scanner is {"name": str, "data": object}."""
    session_id = client.create_session()
    for scanners in (
        [{"name": "usage", "data": {}}, {"name": "usage", "data": 3}],
        [SessionActionScanner("usage", {}), SessionActionScanner("usage", [1])],  # type: ignore[arg-type]
        [{"name": "usage"}, {"name": "usage"}],
    ):
        with pytest.raises(LayerSchemaValidationError, match=r"scanners\[[01]\]"):
            client.append_action(session_id, kind="completion_output", scanners=scanners)
    with pytest.raises(LayerSchemaValidationError, match=r"scanners\[0\]\.name"):
        client.append_action(
            session_id,
            kind="completion_output",
            scanners=[SessionActionScanner(1, {})],  # type: ignore[arg-type]
        )
    client.append_action(
        session_id, kind="completion_output", scanners=[SessionActionScanner("usage", {"t": 1})]
    )
    assert client.flush(5)
    assert collector.actions(session_id)[0]["scanners"] == [{"name": "usage", "data": {"t": 1}}]


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        ("text", {"value": "text"}),
        (3, {"value": 3}),
        (2.5, {"value": 2.5}),
        (False, {"value": False}),
        (SessionActionKind.EMBEDDINGS, {"value": "embeddings"}),
        (b"\x00", {"value": "AA=="}),
        ({"a": 1}, {"a": 1}),
        ([1, 2], [1, 2]),
        ((1, 2), [1, 2]),
        (_Point(1), {"x": 1}),
        ({}, {}),
        ([], []),
    ],
)
def test_scalar_data_is_wrapped_as_an_object(
    client: Client, collector: LocalCollector, data: Any, wire: Any
) -> None:
    """Data on the wire is an object or an array, never a bare scalar."""
    session_id = client.create_session(actions=[{"kind": "completion_prompt", "data": data}])
    client.append_action(session_id, kind="completion_output", data=data)
    assert client.flush(5)
    assert [a["data"] for a in collector.actions(session_id)] == [wire, wire]


def test_none_data_is_left_out(client: Client, collector: LocalCollector) -> None:
    """None data is absent from the body, not {"value": null}."""
    session_id = client.create_session()
    client.append_action(session_id, kind="completion_output", data=None)
    assert client.flush(5)
    assert "data" not in collector.actions(session_id)[0]


def _deep(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    inner = data
    for _ in range(depth):
        inner["x"] = inner = {}
    return data


def test_cyclic_or_deep_data_is_refused_at_the_call(
    client: Client, collector: LocalCollector
) -> None:
    """LayerRequestPreparationError, not a raw RecursionError."""
    session_id = client.create_session()
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for fields in (
        {"data": cyclic},
        {"data": _deep(100_000)},
        {"attributes": {"deep": _deep(100_000)}},
        {"error": {"message": "x", "details": _deep(100_000)}},
        {"scanners": [{"name": "usage", "data": {"cycle": cyclic}}]},
    ):
        with pytest.raises(LayerRequestPreparationError, match="nested too deeply"):
            client.append_action(session_id, kind="completion_prompt", **fields)
    with pytest.raises(LayerRequestPreparationError, match="nested too deeply"):
        client.create_session(actions=[{"kind": "completion_prompt", "data": cyclic}])
    client.append_action(session_id, kind="completion_prompt", data={"still": "works"})
    assert client.flush(5)
    assert [a["data"] for a in collector.actions(session_id)] == [{"still": "works"}]


def test_an_integer_attribute_too_large_for_str_names_the_attribute(client: Client) -> None:
    """A 5,000-digit int attribute raises a LayerSDKException, not ValueError."""
    with pytest.raises(LayerSchemaValidationError, match="'big'"):
        client.create_session(attributes={"small": 1, "big": 10**5_000})


def test_an_action_that_is_no_mapping_names_actions(client: Client) -> None:
    """Actions=[1] raises a LayerSDKException naming the field."""
    with pytest.raises(LayerSchemaValidationError, match="actions"):
        client.create_session(actions=[1])  # type: ignore[list-item]
    for not_a_list in (5, "kind", {"kind": "completion_prompt"}):
        with pytest.raises(LayerSchemaValidationError, match="actions must be a list"):
            client.create_session(actions=not_a_list)  # type: ignore[arg-type]
    with pytest.raises(LayerSchemaValidationError, match=r"actions: .*error\.code"):
        client.create_session(
            actions=[{"kind": "completion_output", "error": {"message": "x", "code": "E"}}]
        )
    assert client.stats().enqueued == 0


def test_a_time_out_of_range_in_utc_names_the_field(client: Client) -> None:
    """A year-1 datetime ahead of UTC overflows; the error names the field."""
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    last_day = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2)))
    session_id = client.create_session()
    with pytest.raises(LayerSchemaValidationError, match="start_time"):
        client.create_session(start_time=year_one)
    with pytest.raises(LayerSchemaValidationError, match="end_time"):
        client.append_action(session_id, kind="embeddings", end_time=last_day)
    assert utc(datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "t") == datetime(
        1, 1, 1, tzinfo=timezone.utc
    )


def test_bad_input_never_escapes_as_a_raw_python_exception(client: Client) -> None:
    """Each of these raised ValueError/TypeError/OverflowError/RecursionError."""
    session_id = client.create_session()
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    calls = [
        lambda: client.create_session(attributes={"n": 10**5_000}),
        lambda: client.create_session(actions=[1]),  # type: ignore[list-item]
        lambda: client.create_session(start_time=datetime(1, 1, 1, tzinfo=timezone.max)),
        lambda: client.append_action(session_id, kind="embeddings", data=cyclic),
    ]
    for call in calls:
        with pytest.raises(LayerSDKException):
            call()


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=_JSON,
    code=st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=3),
    details=_JSON,
    scanner_data=_JSON,
)
def test_whatever_append_action_accepts_the_strict_collector_accepts(
    client: Client, data: Any, code: Any, details: Any, scanner_data: Any
) -> None:
    """The SDK refuses at the call exactly what the contract refuses, no less."""
    # (Not create_session(): hypothesis seeds the global random module per example.)
    session_id = client.create_session(
        session_id=uuid.uuid5(uuid.NAMESPACE_URL, uuid.uuid4().hex), sync=True
    )
    error = {"message": "m", "code": code, "details": details}
    scanners = [{"name": "s", "data": scanner_data}]
    valid_error = (code is None or type(code) is int) and (details is None or type(details) is dict)
    try:
        client.append_action(session_id, kind="embeddings", data=data, error=error, sync=True)
    except LayerSchemaValidationError as exc:
        assert not valid_error, exc
    else:
        assert valid_error
    try:
        client.append_action(session_id, kind="embeddings", scanners=scanners, sync=True)
    except LayerSchemaValidationError:
        assert type(scanner_data) is not dict
    else:
        assert type(scanner_data) is dict


_KINDS = st.sampled_from(list(SessionActionKind)) | st.sampled_from(
    [kind.value for kind in SessionActionKind]
)
_UTC_TIMES = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1), timezones=st.just(timezone.utc)
)
_ANY_TIMES = st.none() | _UTC_TIMES | st.datetimes(timezones=st.none() | st.timezones())


@settings(max_examples=300, deadline=None)
@given(
    kind=_KINDS,
    start=_ANY_TIMES,
    end=_ANY_TIMES,
    attributes=st.none() | st.dictionaries(st.text(max_size=5), _JSON, max_size=4),
    data=st.none() | st.dictionaries(st.text(max_size=5), _JSON, max_size=4) | _JSON,
)
def test_the_common_path_of_an_action_encodes_what_the_field_checks_make(
    kind: Any, start: datetime | None, end: datetime | None, attributes: Any, data: Any
) -> None:
    """What append_action's common path encodes (a valid kind, dicts, no times or UTC ones)
    is byte for byte what the checks of each field make of the same arguments, encoded by
    msgspec; missing times are one and the same now."""
    try:
        expected = _checked_action(kind, start, end, attributes, data, None, None)
    except LayerSDKException:
        return  # out of range once in UTC: refused on both paths (another test)
    body = action_body(kind, start, end, attributes, data, None, None)
    decoded = msgspec.json.decode(body)
    if start is None and end is None:
        assert decoded["start_time"] == decoded["end_time"]
    now = {  # the times that were missing: "now" on each path, as the body has them
        field: datetime.fromisoformat(decoded[field].replace("Z", "+00:00"))  # 3.10 too
        for field, given in (("start_time", start), ("end_time", end))
        if given is None
    }
    assert body == msgspec.json.encode(msgspec.structs.replace(expected, **now))
