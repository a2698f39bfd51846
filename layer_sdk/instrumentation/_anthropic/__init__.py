"""Instrumentation of the ``anthropic`` package (0.40 and later: 0.x, 1.x, 2.x), sync and async.

What is patched: the methods below on the resource *classes* (the same
classes serve ``Anthropic``, ``AnthropicBedrock`` and ``AnthropicVertex``
clients). A method that a version lacks is skipped.

================================  ===========================================
``messages``                      ``create`` (plain and ``stream=True``),
                                  ``parse``, ``stream()`` (the helper)
``beta.messages``                 ``create``, ``parse``, ``stream()``
================================  ===========================================

The ``.stream()`` helper sends its request itself when its manager is
entered (not through ``create``): its manager's ``__enter__``/``__aenter__``
is patched too, and the helper's ``MessageStream`` is watched like a
``Stream``.

A call is recorded as OpenAI's are (``instrumentation/_call.py``): the
``system`` prompt and the ``messages`` as the prompt (images and documents
as attachments, ``tool_result`` blocks as ``tool`` messages), the text of
the answer as the output with a ``usage`` scanner (input, output and cache
tokens), each ``tool_use`` block as a tool call. Whatever goes wrong in here
is logged once and swallowed; the original result is returned and the
original exception re-raised, unchanged.

- ``patch``: the wrappers, through the shared ``Patcher``;
- ``call``: which methods, and the ``Call`` with this API's mapping;
- ``messages``: the Messages API's request, message and stream events as action data.

Importing this package imports no anthropic module: only ``instrument()`` does.
"""

from __future__ import annotations

from .patch import PATCHER

__all__ = ["instrument", "uninstrument"]

#: Patch for a client (now, or once anthropic is imported); True when patched or waiting.
instrument = PATCHER.instrument
#: Restore every patched method.
uninstrument = PATCHER.uninstrument
