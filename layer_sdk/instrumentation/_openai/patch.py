"""Patching the openai classes: the methods of ``TARGETS``, through the shared ``Patcher``.

Which classes and methods (``call.TARGETS``) are OpenAI's; how a call's
record begins (``Call.begin``: the request read as ``OPENAI`` says),
putting the wrappers in place, the post-import hook and the wrappers
themselves are every provider's (``instrumentation/_patch.py``).
"""

from __future__ import annotations

from .._patch import Patcher
from .call import OPENAI, TARGETS, Call, recognise

PATCHER = Patcher(OPENAI, TARGETS, Call.begin, recognise)
