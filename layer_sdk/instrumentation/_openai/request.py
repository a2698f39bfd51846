"""Reading an OpenAI call's request before it is made into a ``_Call``.

The session header, the raw-response mode and one-shot iterators are read
as for every provider (``instrumentation/_request.py``); what is OpenAI's
is which arguments the mappings read.
"""

from __future__ import annotations

from typing import Any

from ..._context import Recorder
from .._mapping import _now
from .._request import _read_request
from .call import PROBLEMS, _Call

#: The arguments the mappings read, so the ones where a one-shot iterator is made a list.
_READ_ARGUMENTS = ("messages", "input", "tools", "functions")


def _begin(client: Recorder, api: str, operation: str, kwargs: dict[str, Any]) -> _Call:
    """Prepare the record of a call; edits ``kwargs`` (the wrapper's own dict) in place."""
    started = _now()
    session_id, raw = _read_request(kwargs, _READ_ARGUMENTS, PROBLEMS)
    return _Call(client, api, operation, kwargs, session_id, raw, started)
