"""The firewall's answer about a session: its decision, and why.

``GET {firewall_base_url}/v1/sessions/{id}`` answers ``{"session_id",
"decision", "context": {"violated_policies": [...]}}``. The decision is what
the SDK acts on, so it is read on its own (in any letter case); the context is
read as far as it fits, so that a firewall whose policies carry a string ID or
a numeric severity still blocks what it says it blocks. A context that cannot
be read at all (a number out of range, nesting deeper than the decoder goes)
is left out; the decision still stands.
"""

from __future__ import annotations

import enum
import re

import msgspec

from ._exceptions import LayerFirewallRequestError


class FirewallLookupDecision(str, enum.Enum):
    """What the firewall decided about a session."""

    NO_DATA = "no_data"  # nothing evaluated yet
    PASS = "pass"  # no policy violated
    SKIP = "skip"  # violations whose policies only monitor
    ALERT = "alert"  # violations whose policies at most inform
    BLOCK = "block"  # a violated policy says block


class FirewallViolatedPolicy(msgspec.Struct, frozen=True):
    """A policy the session violated (each field as the firewall sent it, when it could be read)."""

    id: int | str | None = None
    name: str | None = None
    severity: str | None = None
    action: str | None = None


class FirewallLookupContext(msgspec.Struct, frozen=True):
    """Why the firewall decided as it did."""

    violated_policies: list[FirewallViolatedPolicy] = msgspec.field(default_factory=list)


class FirewallSessionLookupResponse(msgspec.Struct, frozen=True):
    """The answer of ``firewall_session_lookup``."""

    session_id: str
    decision: FirewallLookupDecision
    context: FirewallLookupContext = msgspec.field(default_factory=FirewallLookupContext)


class _Answer(msgspec.Struct):
    """The firewall's answer as it travels: the decision, and the rest kept raw to be read
    apart, so that a context we cannot read never hides the decision."""

    decision: str
    session_id: object = None
    context: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


def decode_answer(body: bytes, session_id: str) -> FirewallSessionLookupResponse:
    """The lookup response in ``body``; ``LayerFirewallRequestError`` naming what is wrong.

    Only the decision must be readable (in any letter case). The context is
    read as far as it can be: a policy ID given as a string, a numeric
    severity or an unexpected shape never turn a ``block`` into a failed look-up.
    """
    try:
        answer = _decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise LayerFirewallRequestError(
            f"the Layer firewall's answer is not a session lookup response: {exc}"
        ) from None
    try:
        decision = FirewallLookupDecision(answer.decision.strip().lower())
    except ValueError:
        raise LayerFirewallRequestError(
            "the Layer firewall's answer is not a session lookup response: "
            f"unknown decision {answer.decision[:40]!r}"
        ) from None
    found = answer.session_id if isinstance(answer.session_id, str) else None
    return FirewallSessionLookupResponse(found or session_id, decision, _context(answer.context))


def _decode(body: bytes) -> _Answer:
    """The answer's top level. Skipping a member still descends into it, so an answer nested
    deeper than the decoder goes (``RecursionError``) is read again with every nested
    member left out: its decision is still read, its context is lost."""
    try:
        return msgspec.json.decode(body, type=_Answer)
    except RecursionError:
        pass
    flat = top_level(body)
    if flat is None:
        raise msgspec.DecodeError("JSON is malformed: unbalanced brackets")
    return msgspec.json.decode(flat, type=_Answer)


#: A JSON string (escapes included) or a bracket; brackets inside strings are not structure.
#: A string left open runs to the end (then the brackets cannot balance): each byte is
#: scanned once, however many quotes a hostile answer holds.
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def top_level(document: bytes) -> bytes | None:
    """``document`` with each array or object nested in its top-level value replaced by
    ``null``: what a decoder reads without descending, however deep the rest goes.

    Only the nesting is undone here; the decoder still checks all that is kept. ``None``
    when the brackets do not balance.
    """
    kept: list[bytes] = []
    depth = 0
    start = 0  # where the text kept since the last nested value starts
    for token in _STRUCTURE.finditer(document):
        opening = token[0]
        if opening[:1] == b'"':
            continue
        if opening in (b"[", b"{"):
            depth += 1
            if depth == 2:
                kept.append(document[start : token.start()])
        else:
            if depth == 2:
                kept.append(b"null")
                start = token.end()
            depth -= 1
            if depth < 0:
                return None
    if depth != 0:
        return None
    kept.append(document[start:])
    return b"".join(kept)


def _context(raw: msgspec.Raw) -> FirewallLookupContext:
    """The context of an answer; what of it cannot be read is left out."""
    if not raw:
        return FirewallLookupContext()
    try:
        return (
            msgspec.json.decode(raw, type=FirewallLookupContext | None) or FirewallLookupContext()
        )
    except (msgspec.DecodeError, RecursionError):
        pass  # not our schema: read it field by field
    try:
        found = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # e.g. a number out of range, deep nesting
        return FirewallLookupContext()
    policies = found.get("violated_policies") if isinstance(found, dict) else None
    if not isinstance(policies, list):
        return FirewallLookupContext()
    return FirewallLookupContext(
        [_policy(policy) for policy in policies if isinstance(policy, (dict, str))]
    )


def _policy(fields: dict[str, object] | str) -> FirewallViolatedPolicy:
    if isinstance(fields, str):  # a policy given by its name alone
        return FirewallViolatedPolicy(name=fields)
    policy_id = fields.get("id")
    if isinstance(policy_id, float) and policy_id.is_integer():
        policy_id = int(policy_id)
    if not isinstance(policy_id, (int, str)) or isinstance(policy_id, bool):
        policy_id = None
    return FirewallViolatedPolicy(
        policy_id,
        _text(fields.get("name")),
        _text(fields.get("severity")),
        _text(fields.get("action")),
    )


def _text(value: object) -> str | None:
    """A string field as a string: numbers are written out, anything else is left out."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


__all__ = [
    "FirewallLookupContext",
    "FirewallLookupDecision",
    "FirewallSessionLookupResponse",
    "FirewallViolatedPolicy",
    "decode_answer",
]
