"""Patching the google-genai classes: the methods of ``TARGETS``, through the shared ``Patcher``."""

from __future__ import annotations

from .._patch import Patcher
from .call import GOOGLE_GENAI, TARGETS, Call, recognise

PATCHER = Patcher(GOOGLE_GENAI, TARGETS, Call.begin, recognise)
