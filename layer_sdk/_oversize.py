"""An action larger than ``max_event_bytes``: its content cut to fit, its structure kept.

A long prompt is exactly what a security monitor must see, and an injection
sits as easily at its end as at its start. So an action is recorded whole
while its encoded event fits ``max_event_bytes``; beyond it, with
``oversize="truncate"`` (the default), :func:`fit` cuts its *content* until
it fits, rather than the action being refused (``oversize="refuse"``):

- **content**, which may be cut: every string value under ``data`` (message
  text, tool arguments and results, any payload), under ``error`` (its message
  and details) and under a scanner's ``data``;
- **structure**, never cut: object keys, ``kind``, the times, ``attributes``,
  a scanner's ``name``, numbers, booleans and nulls, and the number and order
  of items (messages keep their roles, IDs and places).

The largest strings are cut first, each down to the size of the next largest
(water-filling), so that a short role or ID is never touched while a long
message is; a string of at most ``MIN_KEPT`` characters, or of not much more
than its marker, is never cut. A cut string keeps its head and its tail, with
a marker between them that says how much is missing:
``…[812,345 characters cut]…``. The action says so in two attributes:
``layer.truncated.fields`` (how many strings were cut) and
``layer.truncated.characters`` (how many characters).

When even that cannot make the event fit (its attributes alone, or a payload
of a million numbers, are too large), :func:`fit` answers None and the event
is refused as ``too_large``, as with ``oversize="refuse"``.

Only an oversize event comes here: the hot path pays one comparison of sizes
(``Exporter.put``). The work is on the encoded JSON (decoded, cut, encoded
again), so whatever the caller's data was (dicts, Structs, dataclasses), the
cut is made on what would have gone on the wire.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

#: A cut string keeps at least this many bytes of its text (half at each end), so
#: that what is kept says something; a string of at most this many characters
#: (a role, an ID, a name) is never cut.
MIN_KEPT = 32
#: The marker put where characters were cut; it counts them.
MARKER = "…[{:,} characters cut]…"
#: The attributes that say an action was cut, and how much.
FIELDS_ATTRIBUTE = "layer.truncated.fields"
CHARACTERS_ATTRIBUTE = "layer.truncated.characters"


_encode = msgspec.json.encode


class Fitted(NamedTuple):
    """An action cut to fit: its new body, and how many strings and characters were cut."""

    body: bytes
    fields: int
    characters: int


class _Slot(NamedTuple):
    """A content string and where it sits (``container[key]``)."""

    container: Any
    key: Any
    text: str
    size: int  # its encoded bytes, without the quotes
    marker: int  # the encoded bytes of its marker, at most


def _marker_bytes(length: int) -> int:
    """The encoded bytes of the marker of a string of ``length`` characters, at most."""
    return len(MARKER.format(length).encode())


def fit(body: bytes, limit: int) -> Fitted | None:
    """``body`` (an encoded action over ``limit`` bytes) with its content cut to fit.

    None when no cut of its content makes it fit: then it is refused.
    """
    action = msgspec.json.decode(body)
    if not isinstance(action, dict) or not isinstance(action.get("attributes"), dict):
        return None
    slots = _content(action)
    if not slots:
        return None
    content = sum(slot.size for slot in slots)
    # The note's attributes, at their largest.
    note = len(
        f'"{FIELDS_ATTRIBUTE}":{len(slots)},'
        f'"{CHARACTERS_ATTRIBUTE}":{sum(len(slot.text) for slot in slots)}'
    ) + bool(action["attributes"])  # a comma after the caller's attributes
    # What the cut strings may take together, besides everything else in the event.
    cap = _cap(slots, limit - (len(body) - content) - note)
    if cap is None:
        return None
    fitted = _cut(action, slots, cap)
    # Every size above is exact or an upper bound: this holds. Checked all the same,
    # since an event over the limit would be refused by the queue.
    return fitted if len(fitted.body) <= limit else None


def _content(action: dict[str, Any]) -> list[_Slot]:
    """The strings of the action's content worth cutting, wherever they sit."""
    roots: list[tuple[Any, Any]] = [(action, "data")]
    error = action.get("error")
    if isinstance(error, dict):
        roots += [(error, "message"), (error, "details")]
    scanners = action.get("scanners")
    if isinstance(scanners, list):
        roots += [(scanner, "data") for scanner in scanners if isinstance(scanner, dict)]
    slots: list[_Slot] = []
    # Depth first, without recursion: a payload may nest deeper than Python's stack.
    stack = [(container, key) for container, key in reversed(roots) if key in container]
    while stack:
        container, key = stack.pop()
        value = container[key]
        if isinstance(value, str):
            if len(value) > MIN_KEPT:
                size = len(_encode(value)) - 2
                marker = _marker_bytes(len(value))
                if size > MIN_KEPT + marker:  # else cutting it would not make it smaller
                    slots.append(_Slot(container, key, value, size, marker))
        elif isinstance(value, dict):
            stack.extend((value, inner) for inner in reversed(list(value)))
        elif isinstance(value, list):
            stack.extend((value, index) for index in range(len(value) - 1, -1, -1))
    return slots


def _cap(slots: list[_Slot], budget: int) -> int | None:
    """The most bytes each cut string may keep so that all the strings take ``budget``.

    A string larger than the cap plus its marker is cut to the cap (plus the
    marker); the others stay whole. None when even ``MIN_KEPT`` is too much.
    """
    sizes = [(slot.size, slot.marker) for slot in slots]

    def total(cap: int) -> int:
        return sum(size if size <= cap + marker else cap + marker for size, marker in sizes)

    low, high = MIN_KEPT, max(size for size, _ in sizes)
    if total(low) > budget:
        return None
    while low < high:  # the largest cap whose total fits
        middle = (low + high + 1) // 2
        if total(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _cut(action: dict[str, Any], slots: list[_Slot], cap: int) -> Fitted:
    """The action with every content string larger than ``cap`` bytes cut to ``cap`` at most."""
    fields = characters = 0
    for slot in slots:
        text = slot.text
        if slot.size <= cap + slot.marker:
            slot.container[slot.key] = text
            continue
        head = _fitting(text, (cap + 1) // 2, from_end=False)
        tail = _fitting(text, cap // 2, from_end=True)
        cut = len(text) - head - tail
        slot.container[slot.key] = f"{text[:head]}{MARKER.format(cut)}{text[len(text) - tail :]}"
        fields += 1
        characters += cut
    attributes = dict(action["attributes"])
    attributes[FIELDS_ATTRIBUTE] = fields
    attributes[CHARACTERS_ATTRIBUTE] = characters
    body = _encode({**action, "attributes": attributes})
    return Fitted(body, fields, characters)


def _fitting(text: str, room: int, *, from_end: bool) -> int:
    """How many characters of ``text``'s head (or tail) encode in ``room`` bytes, about the most.

    A character takes 1 to 6 bytes (an accent 2, an emoji 4, a control
    character 6 as ``\\u0001``): the count is guessed from the bytes the last
    guess took, and measured again, until it fits.
    """
    count = min(len(text), room)
    while count > 0:
        part = text[len(text) - count :] if from_end else text[:count]
        size = len(_encode(part)) - 2
        if size <= room:
            return count
        count = count * room // size  # fewer: room < size
    return 0
