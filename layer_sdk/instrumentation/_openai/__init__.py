"""Instrumentation of the ``openai`` package (1.x from 1.18, 2.x, 3.x), sync and async.

What is patched: the methods below on the resource *classes*. A method that
a version lacks is skipped.

=================================  ==========================================
``chat.completions``               ``create`` (plain and ``stream=True``), ``parse``
``beta.chat.completions`` (1.x)    ``parse``
``responses``                      ``create`` (plain and ``stream=True``), ``parse``
``embeddings``                     ``create``
``moderations``                    ``create``
=================================  ==========================================

The ``.stream()`` helpers of chat completions and responses call ``create``
themselves, so they are covered through it.

How a call is recorded. The wrapper takes the time, removes Layer's session
header from ``extra_headers`` (into a new dict: the caller's is not touched),
calls the original method with everything else unchanged, and then, on the
caller's thread, maps the request and the result to actions and hands them to
``Client.append_action`` (encode and enqueue: no network). Whatever goes wrong
in here is logged once and swallowed; the original result is returned and the
original exception re-raised, unchanged. A stream's output is recorded when
the stream ends, however it ends.

The modules, in the order a call goes through them:

- ``patch``: ``instrument()``/``uninstrument()`` through the shared
  ``Patcher`` (``instrumentation/_patch.py``: the wrappers, the post-import hook);
- ``call``: ``OPENAI`` (the provider contract: ``extra_headers``, the
  stainless streams and raw responses), ``TARGETS`` (which methods,
  recorded as what) and the ``Call``,
  from the call's outcome to its actions (the routing and the recording are
  shared: ``instrumentation/_call.py``; a stream is watched by
  ``instrumentation/_streams.py``);
- ``chat``, ``responses``, ``embeddings``: each API's request and result as
  action data, built from the shared ``_mapping`` and ``_fields``.

Importing this package imports no openai module: only ``instrument()`` does.
"""

from __future__ import annotations

from .patch import PATCHER

__all__ = ["instrument", "uninstrument"]

#: Patch for a client (now, or once openai is imported); True when patched or waiting.
instrument = PATCHER.instrument
#: Restore every patched method.
uninstrument = PATCHER.uninstrument
