"""A collector's SQLite file filled with a day of work: what the page's load is measured on.

``fill(path)`` writes 10,000 sessions and 100,000 actions through the collector's
own store (``collector/_store.py``), as a collector started with ``db=`` would
have kept them: 9,999 sessions of a chat turn repeated (a prompt of a system
and a user message, an answer with token usage, now and then a tool call or
a failed answer), and one session of 1,000 actions, the long one the page
opens. ``serving(path)`` runs ``layer-sdk collector --db path`` on it, as a user
would. Shared by the browser test and ``benchmarks/collector_page.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from layer_sdk.collector._store import SqliteStore, StoredEvent

SESSIONS = 10_000
ACTIONS = 100_000
LONG_SESSION_ACTIONS = 1_000
LONG_SESSION = str(uuid.uuid5(uuid.NAMESPACE_URL, "the-long-session"))
APPLICATIONS = ("travel-bot", "support-bot", "search")

_QUESTION = "Which tours leave from Lisbon on Saturday mornings, and how long do they last? "
_ANSWER = "Three tours leave on Saturdays: the tram tour at 9:00, the Belém walk at 10:00. "


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _actions(count: int, start: datetime, seed: int) -> list[dict[str, Any]]:
    """``count`` actions: prompt and answer, a tool call every 4th turn, a failure every 50th."""
    actions: list[dict[str, Any]] = []
    history = [{"role": "system", "content": "You are a travel assistant. Answer briefly."}]
    turn = 0
    while len(actions) < count:
        began = start + timedelta(seconds=2 * turn)
        ended = began + timedelta(milliseconds=350 + (seed + turn) % 400)
        attributes = {"model.id": "gpt-4o-mini", "model.provider": "openai"}
        history = [*history[-6:], {"role": "user", "content": f"{_QUESTION}({turn})"}]
        actions.append(
            {
                "kind": "completion_prompt",
                "start_time": _time(began),
                "end_time": _time(began),
                "attributes": attributes,
                "data": {"messages": history},
            }
        )
        output: dict[str, Any] = {
            "kind": "completion_output",
            "start_time": _time(began),
            "end_time": _time(ended),
            "attributes": {**attributes, "finish_reason": "stop"},
        }
        if (seed + turn) % 50 == 49:
            output["error"] = {"message": "Error code: 429 - rate limited", "code": 429}
        else:
            output["data"] = {"messages": [{"role": "assistant", "content": _ANSWER}]}
            output["scanners"] = [
                {"name": "usage", "data": {"prompt_tokens": 41, "completion_tokens": 23}}
            ]
            history = [*history, {"role": "assistant", "content": _ANSWER}]
        actions.append(output)
        if turn % 4 == 2:
            actions.append(
                {
                    "kind": "completion_tool_call",
                    "start_time": _time(ended),
                    "end_time": _time(ended),
                    "attributes": attributes,
                    "data": {"name": "find_tours", "arguments": '{"city": "Lisbon"}'},
                }
            )
        turn += 1
    return actions[:count]


def fill(
    path: str | os.PathLike[str],
    sessions: int = SESSIONS,
    actions: int = ACTIONS,
    long_session_actions: int = LONG_SESSION_ACTIONS,
) -> None:
    """Write ``sessions`` sessions holding ``actions`` actions in all to a new file at ``path``;
    the first is ``LONG_SESSION``, with ``long_session_actions`` of them."""
    store = SqliteStore(path)
    store.load()
    store.start()
    began = datetime(2026, 5, 1, 8, 0, tzinfo=timezone.utc)
    stored_at = began.timestamp()
    rest = actions - long_session_actions
    for n in range(sessions):
        session_id = LONG_SESSION if n == 0 else str(uuid.uuid5(uuid.NAMESPACE_URL, f"day-{n}"))
        start = began + timedelta(seconds=5 * n)
        count = (
            long_session_actions
            if n == 0
            else rest // (sessions - 1) + (1 if n <= rest % (sessions - 1) else 0)
        )
        body = {
            "application_id": APPLICATIONS[n % len(APPLICATIONS)],
            "session_id": session_id,
            "attributes": {"environment": "dev", "user.id": f"user-{n % 300}"},
            "start_time": _time(start),
        }
        store.put(StoredEvent("session", session_id, body, stored_at + 5 * n))
        for action in _actions(count, start, n):
            store.put(StoredEvent("action", session_id, action, stored_at + 5 * n))
    store.stop()


@contextlib.contextmanager
def serving(path: str | os.PathLike[str]) -> Iterator[str]:
    """``layer-sdk collector --db path`` in a process of its own; yields its URL once it serves."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "layer_sdk", "collector", "--port", "0", "--json"]
    process = subprocess.Popen(
        [*command, "--db", os.fspath(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        listening = json.loads(process.stdout.readline())
        yield listening["url"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
