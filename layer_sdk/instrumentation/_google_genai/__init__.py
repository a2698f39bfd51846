"""Instrumentation of Google's Gen AI SDK (``google-genai``: ``from google import genai``).

What is patched: the methods below on the resource *classes* of
``google.genai.models`` (the same classes serve the Gemini API and Vertex AI
clients). Chats (``client.chats.create(...).send_message``) call these
methods, so a chat's turns are recorded through them, each with the
history it sent.

================================  ===========================================
``client.models``                 ``generate_content``,
                                  ``generate_content_stream``, ``embed_content``
``client.aio.models``             the same, awaited
================================  ===========================================

A call is recorded as OpenAI's are (``instrumentation/_call.py``): the
``system_instruction`` and the ``contents`` as the prompt (inline data and
files as attachments, ``function_response`` parts as ``tool`` messages),
the text of each candidate as the output with a ``usage`` scanner, each
``function_call`` part as a tool call, ``embed_content`` as one
``embeddings`` action.

What is google-genai's in the provider contract (``GOOGLE_GENAI``): the
session header is read from, and removed from, the request's
``config.http_options.headers`` (a copy: the caller's config is not
changed); the streams are plain generators (``generate_content_stream``
is a generator function; the async one returns an async generator), read
through a generator of ours; there is no raw-response mode.

- ``patch``: the wrappers, through the shared ``Patcher``;
- ``call``: the provider, which methods, and the ``Call`` with this API's mapping;
- ``content``: the request's contents, a response and a stream's chunks as action data.

Importing this package imports no google module: only ``instrument()`` does.
"""

from __future__ import annotations

from .patch import PATCHER

__all__ = ["instrument", "uninstrument"]

#: Patch for a client (now, or once google.genai is imported); True when patched or waiting.
instrument = PATCHER.instrument
#: Restore every patched method.
uninstrument = PATCHER.uninstrument
