"""Embeddings and moderations as action data: one action each, the input and a summary.

``embeddings.create`` records its inputs and, of the result, the model, how
many vectors and their dimensions (never the vectors themselves), and the
usage. ``moderations.create`` records its inputs (text, or image parts as
attachments are) and, per result, the flags and scores as a scanner.
"""

from __future__ import annotations

from typing import Any

from ..._schemas import SessionActionScanner
from .._fields import _as_dict, _get, _items, _str
from .._mapping import _attachment, _usage

#: The request parameters recorded as attributes of an embeddings action.
_EMBEDDING_PARAMETERS = frozenset(("encoding_format", "dimensions", "user"))


def _embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [_str(value)]
    items = _items(value)
    if items and all(isinstance(v, int) for v in items):
        return [list(items)]  # one input given as tokens
    return [_str(v) if isinstance(v, str) else list(_items(v)) for v in items]


def _embedding_result(result: Any, attributes: dict[str, Any]) -> list[SessionActionScanner] | None:
    _result_model(result, attributes)
    data = _items(_get(result, "data"))
    attributes["embeddings.count"] = len(data)
    if data:
        vector = _get(data[0], "embedding")
        if isinstance(vector, (list, tuple)):
            attributes["embeddings.dimensions"] = len(vector)
    usage = _usage(_get(result, "usage"))
    return [SessionActionScanner("usage", usage)] if usage else None


def _moderation_inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [_str(value)]
    inputs: list[Any] = []
    for item in _items(value):
        if isinstance(item, str):
            inputs.append(_str(item))
        elif _get(item, "type") == "text":
            inputs.append(_str(_get(item, "text")))
        else:
            inputs.append(_attachment(item))
    return inputs


def _moderation_result(result: Any, attributes: dict[str, Any]) -> list[SessionActionScanner]:
    _result_model(result, attributes)
    response_id = _str(_get(result, "id"))
    if response_id:
        attributes["response.id"] = response_id
    scanners: list[SessionActionScanner] = []
    flagged_any = False
    for index, item in enumerate(_items(_get(result, "results"))):
        flagged = _get(item, "flagged")
        flagged_any = flagged_any or flagged is True
        categories = {
            k: v for k, v in _as_dict(_get(item, "categories")).items() if isinstance(v, bool)
        }
        scores = {
            k: v
            for k, v in _as_dict(_get(item, "category_scores")).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        data: dict[str, Any] = {"index": index, "categories": categories, "category_scores": scores}
        if isinstance(flagged, bool):
            data["flagged"] = flagged
        scanners.append(SessionActionScanner("moderation", data))
    attributes["flagged"] = flagged_any
    return scanners


def _result_model(result: Any, attributes: dict[str, Any]) -> None:
    """The model that answered, where the result names it, over the one requested."""
    model = _str(_get(result, "model"))
    if model:
        attributes["model.id"] = model
