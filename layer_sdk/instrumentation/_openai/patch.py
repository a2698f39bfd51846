"""Patching the openai classes: the methods of ``TARGETS``, through the shared ``Patcher``.

Which classes and methods (``call.TARGETS``), and how a call's record
begins (``request._begin``), are OpenAI's; putting the wrappers in place,
the post-import hook and the wrappers themselves are every provider's
(``instrumentation/_patch.py``).
"""

from __future__ import annotations

from typing import Any

from ..._context import Recorder
from .._patch import Patcher, Target
from .call import PROBLEMS, TARGETS, _Call, _recognise
from .request import _begin


def _begin_call(client: Recorder, spec: tuple[str, str], kwargs: dict[str, Any]) -> _Call:
    api, operation = spec
    return _begin(client, api, operation, kwargs)


PATCHER = Patcher(
    "openai",
    [
        Target(module, cls, method, (api, operation))
        for module, cls, method, api, operation in TARGETS
    ],
    _begin_call,
    PROBLEMS,
    _recognise,
)
