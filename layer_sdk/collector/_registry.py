"""What the local collector knows besides sessions: firewall decisions and applications.

- ``GET /v1/sessions/{session_id}`` answers the firewall's decision on a
  session, ``{"session_id", "decision", "context": {"violated_policies": [...]}}``:
  ``no_data`` until a test sets one with ``LocalCollector.set_firewall_decision``,
  so that a user can rehearse a block. Point ``firewall_base_url`` at the collector.
- ``GET /v1/applications`` lists the applications (a JSON array of
  ``{"id", "name", "source"}``); ``POST /v1/applications`` with
  ``{"name": str, "source": str}`` (both required, nothing else) creates one and
  answers 201 ``{"application_id"}``; 409 when the name is taken.

The collector holds its lock around every call here.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from ._server import Reply

__all__ = ["DECISIONS", "Registry"]

#: The firewall's decisions, as the Layer API spells them.
DECISIONS = frozenset({"no_data", "pass", "skip", "alert", "block"})


class _PolicyIn(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    name: str
    severity: str
    action: str


class _ApplicationIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    source: str


class Registry:
    """Decisions per session and the applications, with their answers."""

    def __init__(self) -> None:
        self.decisions: dict[str, dict[str, Any]] = {}
        self.applications: list[dict[str, Any]] = []

    def set_decision(
        self, session_id: str, decision: str, policies: list[dict[str, Any]] | None
    ) -> None:
        """Validate and keep what the firewall answers for ``session_id`` from now on."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}, got {decision!r}")
        checked = msgspec.convert(policies or [], list[_PolicyIn])
        self.decisions[session_id] = {
            "session_id": session_id,
            "decision": decision,
            "context": {"violated_policies": msgspec.to_builtins(checked)},
        }

    def lookup(self, session_id: str) -> Reply:
        """The answer of ``GET /v1/sessions/{session_id}``."""
        found = self.decisions.get(session_id)
        if found is None:
            found = {"session_id": session_id, "decision": "no_data", "context": {}}
        return Reply(200, msgspec.json.encode(found))

    def add(self, name: str, application_id: str | None, source: str = "manual") -> str:
        """Add an application; its ID (a new UUID unless given)."""
        if any(app["name"] == name for app in self.applications):
            raise ValueError(f"an application named {name!r} exists already")
        app_id = application_id or str(uuid.uuid4())
        self.applications.append({"id": app_id, "name": name, "source": source})
        return app_id

    def listing(self) -> Reply:
        """The answer of ``GET /v1/applications``."""
        return Reply(200, msgspec.json.encode(self.applications))

    def create(self, body: Any) -> Reply:
        """The answer of ``POST /v1/applications``; raises ``ValidationError`` (422)."""
        app = msgspec.convert(body, _ApplicationIn)
        try:
            app_id = self.add(app.name, None, app.source)
        except ValueError as exc:
            return Reply(409, msgspec.json.encode({"error": f"{exc} - at `$.name`"}))
        return Reply(201, msgspec.json.encode({"application_id": app_id}))
