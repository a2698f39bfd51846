"""Reading provider objects: every field optional, whatever the object's kind.

The same code reads a pydantic model (v1 or v2, as each openai or anthropic
version has), a plain dict (a ``with_raw_response`` body, a request argument)
or any other object, and a field that is absent reads as None: no version of
a provider SDK promises every field. Strings are read whole, however long: the
monitor must see what the model sees. An action too large for ``max_event_bytes``
is cut where every action is, with its head and tail kept (``_oversize``).

Also here: the providers' "not given" sentinels, recognised once each is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._provider import attribute, classes

#: The providers' ``NotGiven`` and ``Omit`` (what their versions have): an
#: argument passed as one of them was not given. Grown by ``_recognise_sentinels()``.
_omitted_types: tuple[type, ...] = ()


def _recognise_sentinels(package: str) -> None:
    """Add ``package``'s "not given" classes; called when its classes are patched."""
    global _omitted_types
    found = classes(
        attribute(f"{package}._types", "NotGiven"), attribute(f"{package}._types", "Omit")
    )
    _omitted_types = tuple(dict.fromkeys(_omitted_types + found))


# -- fields ---------------------------------------------------------------------------

_MISSING: Any = object()


def _get(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]``; None when absent (every field is optional).

    Hot: it runs a few times per call and per streamed chunk. A pydantic
    model's fields are read from its ``__dict__`` (its ``__getattr__`` for an
    absent field is slow), a dict with ``get``; the ABC check is the last resort.
    """
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        value = fields.get(name, _MISSING)
        if value is not _MISSING:
            return value
        if hasattr(type(obj), "__pydantic_extra__"):  # pydantic v2: the rest is in its extras
            extra = getattr(obj, "__pydantic_extra__", None)
            return extra.get(name) if extra else None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class _Attributes:
    """``get()`` over the attributes of an object that is neither a dict nor a model."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self.obj, name, default)


_NO_FIELDS: Mapping[str, Any] = {}


def _fields(obj: Any) -> Any:
    """The fields of ``obj``, as something with ``.get(name)``: several reads for the price of one.

    A dict is itself; a pydantic model (v1 or v2) is its ``__dict__`` (plus its
    extras, when it has any); anything else is read through ``getattr``.
    """
    if obj is None:
        return _NO_FIELDS
    if isinstance(obj, dict):
        return obj
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        cls = type(obj)
        if hasattr(cls, "__pydantic_extra__"):
            extra = getattr(obj, "__pydantic_extra__", None)
            return {**extra, **fields} if extra else fields
        if hasattr(cls, "__fields__"):
            return fields
    if isinstance(obj, Mapping):
        return obj
    return _Attributes(obj)


def _as_dict(obj: Any) -> dict[str, Any]:
    """A mapping or a pydantic model (v1 or v2) as a dict of its fields, by alias."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    fields = getattr(type(obj), "model_fields", None)
    if not isinstance(fields, Mapping):
        fields = getattr(type(obj), "__fields__", None)
    if isinstance(fields, Mapping):
        result: dict[str, Any] = {}
        for name, info in fields.items():
            value = getattr(obj, name, None)
            if value is not None:
                result[getattr(info, "alias", None) or name] = value
        extra = getattr(obj, "__pydantic_extra__", None)
        if isinstance(extra, Mapping):
            result.update(extra)
        return result
    return {k: v for k, v in getattr(obj, "__dict__", {}).items() if not k.startswith("_")}


# -- values ---------------------------------------------------------------------------


def _items(value: Any) -> list[Any] | tuple[Any, ...]:
    """A list-like field as a sequence; anything else (None, a string, a mapping) as empty."""
    if isinstance(value, (list, tuple)):
        return value
    return ()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and not isinstance(value, _omitted_types)


def _given(value: Any) -> bool:
    return value is not None and not isinstance(value, _omitted_types)
