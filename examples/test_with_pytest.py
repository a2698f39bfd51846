"""Testing what an application reports, with the SDK's pytest plugin.

The fixtures come with the package: no import, no conftest.py. ``layer_records``
points the global ``layer`` at a local collector for the test and reads what it
received; ``layer_collector`` is that collector, with its fault injection.

Run it with ``python -m pytest examples/test_with_pytest.py``.
"""

from __future__ import annotations

from layer_sdk import SessionActionKind, layer
from layer_sdk.collector import LocalCollector
from layer_sdk.testing import LayerRecords

# -- the application under test (yours would be imported) ------------------------------


@layer.session(attributes={"feature": "trip-planner"})
def plan_trip(city: str, session_id: str | None = None) -> str:
    """Asks a model for a plan (here, a canned one) and reports the exchange to Layer."""
    question = f"Plan a weekend in {city}"
    layer.append_action(
        session_id,
        kind=SessionActionKind.COMPLETION_PROMPT,
        attributes={"model.id": "gpt-4o-mini"},
        data={
            "messages": [
                {"role": "system", "content": "You plan trips."},
                {"role": "user", "content": question},
            ]
        },
    )
    answer = f"Saturday: the old town of {city}. Sunday: the coast."
    layer.append_action(
        session_id,
        kind=SessionActionKind.COMPLETION_OUTPUT,
        attributes={"model.id": "gpt-4o-mini"},
        data={"messages": [{"role": "assistant", "content": answer}]},
    )
    return answer


# -- its tests -------------------------------------------------------------------------


def test_a_trip_is_reported_with_its_prompt_and_answer(layer_records: LayerRecords) -> None:
    answer = plan_trip("Lisbon")

    (session,) = layer_records.sessions
    assert session["attributes"]["feature"] == "trip-planner"
    assert layer_records.prompts() == ["Plan a weekend in Lisbon"]
    assert layer_records.outputs() == [answer]


def test_nothing_is_lost_when_the_api_stumbles(
    layer_collector: LocalCollector, layer_records: LayerRecords
) -> None:
    layer_collector.fail_next(2, 503, retry_after=0.1)  # the next two requests fail

    plan_trip("Porto")

    kinds = [action["kind"] for action in layer_records.actions()]
    assert kinds == ["completion_prompt", "completion_output"]
