"""How the provider contract suite (``test_provider_contract.py``) drives each provider's SDK.

One :class:`Adapter` per instrumented provider says how to make the calls the
contract is about (a completion, a stream, every call shape at once), where
the session header goes, which methods are patched, and what the provider's
own streams yield as text. The suite itself is written once, against this
interface; a new provider proves itself by adding an adapter here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from layer_sdk.instrumentation._provider import Provider, Target, attribute

from .anthropic_server import AnthropicServer
from .google_genai_server import GoogleGenAIServer
from .openai_server import OpenAIServer

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Did you know that Layer is the best product?"},
]
USER_MESSAGES = [
    {"role": "user", "content": "Did you know that Layer is the best product?"},
    {"role": "assistant", "content": "Tell me."},
    {"role": "user", "content": "It is."},
]


class Adapter:
    """A provider, as the contract suite calls it. ``client`` below is the provider's own
    client: sync or async, as ``mode`` asked."""

    #: The instrumentation's name (``disable_instrumentations``), and the package to import.
    name: str
    package: str
    server_class: type[Any]
    #: Whether a sync stream is its own context manager (``with stream: ...``).
    streams_are_context_managers = True
    #: The method that closes an async stream (awaited).
    async_close = "close"
    #: Whether closing a stream records its output at once (else soon after, from a thread
    #: of the SDK's: a generator cannot tell a close from its collection, when recording
    #: must wait).
    records_at_close = True

    def provider(self) -> Provider:
        raise NotImplementedError

    def targets(self) -> tuple[Target, ...]:
        raise NotImplementedError

    def open(self, mode: str, server: Any, api_key: str = "key-test") -> Any:
        raise NotImplementedError

    async def close_async(self, client: Any) -> None:
        await client.close()

    def close(self, client: Any) -> None:
        client.close()

    def complete(self, client: Any, model: str = "m-test", **headers: str) -> Any:
        """A plain completion call (awaitable for an async client), with ``headers``."""
        raise NotImplementedError

    def stream(self, client: Any, model: str = "m-test", **headers: str) -> Any:
        """A streamed completion: the stream (an awaitable of it for an async client)."""
        raise NotImplementedError

    def text_of(self, items: list[Any]) -> str:
        """The text the items of one of its streams carry."""
        raise NotImplementedError

    def every_call(self, client: Any) -> list[Any]:
        """Every call shape of a sync client, each result made comparable (plain data)."""
        raise NotImplementedError

    def with_messages(self, client: Any, messages: Any) -> Any:
        """A sync completion whose messages are ``messages`` (a one-shot iterator), or None
        where the provider takes none."""
        return None

    def from_texts(self, client: Any, texts: Any) -> Any:
        """A completion (awaitable for an async client) whose prompt is the user texts
        ``texts`` (a one-shot iterator), read as the provider builds its request."""
        raise NotImplementedError

    def patched(self) -> list[tuple[type, str]]:
        """The (class, method) pairs patched now."""
        found = []
        for target in self.targets():
            cls = attribute(target.module, target.cls)
            method = cls.__dict__.get(target.method) if isinstance(cls, type) else None
            if getattr(method, "__layer_instrumented__", False):
                found.append((cls, target.method))
        return found

    def sync_method(self) -> tuple[type, str]:
        """The (class, method) of the plain completion of a sync client."""
        raise NotImplementedError

    def comparable(self, headers: dict[str, str]) -> dict[str, str]:
        """The request headers that do not differ between two runs of the same calls."""
        varying = {"x-stainless-retry-count", "x-stainless-read-timeout", "content-length"}
        return {
            k: v
            for k, v in headers.items()
            if k not in varying and not k.startswith("x-stainless-timeout")
        }

    #: Code run in a fresh interpreter, with ``server`` running and ``layer`` initialized:
    #: it imports the provider and makes one completion in session ``sid``.
    import_and_call: str
    #: An expression, in that code, of the plain completion method as the class has it now.
    patched_expression: str

    def perform(
        self, mode: str, server: Any, action: Callable[[Any], Any], api_key: str = "key-test"
    ) -> Any:
        """``action(client)`` with a sync client, or an async one in an event loop (an
        awaitable that ``action`` returns is awaited)."""
        if mode == "sync":
            client = self.open("sync", server, api_key)
            try:
                return action(client)
            finally:
                self.close(client)

        async def main() -> Any:
            client = self.open("async", server, api_key)
            try:
                result = action(client)
                return await result if inspect.isawaitable(result) else result
            finally:
                await self.close_async(client)

        return asyncio.run(main())


class OpenAIAdapter(Adapter):
    name = package = "openai"
    server_class = OpenAIServer
    import_and_call = (
        "import openai\n"
        "client = openai.OpenAI(base_url=server.url, api_key='k', max_retries=0)\n"
        "with layer.session_context() as sid:\n"
        "    client.chat.completions.create(\n"
        "        model='m', messages=[{'role': 'user', 'content': 'x'}])\n"
    )
    patched_expression = "openai.resources.chat.completions.Completions.create"

    def provider(self) -> Provider:
        from layer_sdk.instrumentation._openai.call import OPENAI

        return OPENAI

    def targets(self) -> tuple[Target, ...]:
        from layer_sdk.instrumentation._openai.call import TARGETS

        return TARGETS

    def open(self, mode: str, server: Any, api_key: str = "key-test") -> Any:
        import openai

        cls = openai.OpenAI if mode == "sync" else openai.AsyncOpenAI
        return cls(base_url=server.url, api_key=api_key, max_retries=0)

    def complete(self, client: Any, model: str = "gpt-test", **headers: str) -> Any:
        extra = {"extra_headers": headers} if headers else {}
        return client.chat.completions.create(model=model, messages=MESSAGES, **extra)

    def stream(self, client: Any, model: str = "gpt-test", **headers: str) -> Any:
        extra = {"extra_headers": headers} if headers else {}
        return client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **extra)

    def text_of(self, items: list[Any]) -> str:
        return "".join((c.choices[0].delta.content or "") for c in items if c.choices)

    def every_call(self, c: Any) -> list[Any]:
        results = [
            c.chat.completions.create(model="gpt-test", messages=MESSAGES, temperature=0.1),
            list(c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)),
            c.embeddings.create(model="emb", input=["a"]),
            c.moderations.create(input="kill"),
        ]
        if hasattr(c, "responses"):
            results.append(c.responses.create(model="gpt-test", input="x"))
            results.append(list(c.responses.create(model="gpt-test", input="x", stream=True)))
        return _dumped(results)

    def with_messages(self, client: Any, messages: Any) -> Any:
        return client.chat.completions.create(model="gpt-test", messages=messages)

    def from_texts(self, client: Any, texts: Any) -> Any:
        messages = ({"role": "user", "content": text} for text in texts)
        return client.chat.completions.create(model="gpt-test", messages=messages)

    def sync_method(self) -> tuple[type, str]:
        import openai

        return openai.resources.chat.completions.Completions, "create"


class AnthropicAdapter(Adapter):
    name = package = "anthropic"
    server_class = AnthropicServer
    import_and_call = (
        "import anthropic\n"
        "client = anthropic.Anthropic(base_url=server.url, api_key='k', max_retries=0)\n"
        "with layer.session_context() as sid:\n"
        "    client.messages.create(model='m', max_tokens=8,\n"
        "                           messages=[{'role': 'user', 'content': 'hi'}])\n"
    )
    patched_expression = "anthropic.resources.Messages.create"

    def provider(self) -> Provider:
        from layer_sdk.instrumentation._anthropic.call import ANTHROPIC

        return ANTHROPIC

    def targets(self) -> tuple[Target, ...]:
        from layer_sdk.instrumentation._anthropic.patch import PATCHER

        return PATCHER.targets

    def open(self, mode: str, server: Any, api_key: str = "key-test") -> Any:
        import anthropic

        cls = anthropic.Anthropic if mode == "sync" else anthropic.AsyncAnthropic
        return cls(base_url=server.url, api_key=api_key, max_retries=0)

    def complete(self, client: Any, model: str = "claude-test", **headers: str) -> Any:
        extra = {"extra_headers": headers} if headers else {}
        return client.messages.create(model=model, max_tokens=64, messages=USER_MESSAGES, **extra)

    def stream(self, client: Any, model: str = "claude-test", **headers: str) -> Any:
        extra = {"extra_headers": headers} if headers else {}
        return client.messages.create(
            model=model, max_tokens=64, messages=USER_MESSAGES, stream=True, **extra
        )

    def text_of(self, items: list[Any]) -> str:
        return "".join(
            e.delta.text
            for e in items
            if e.type == "content_block_delta" and getattr(e.delta, "type", "") == "text_delta"
        )

    def every_call(self, c: Any) -> list[Any]:
        plain = self.complete(c)
        events = list(self.stream(c))
        with c.messages.stream(model="claude-test", max_tokens=8, messages=USER_MESSAGES) as s:
            final = s.get_final_message()
        return _dumped([plain, events, final])

    def with_messages(self, client: Any, messages: Any) -> Any:
        return client.messages.create(model="claude-test", max_tokens=64, messages=messages)

    def from_texts(self, client: Any, texts: Any) -> Any:
        messages = ({"role": "user", "content": text} for text in texts)
        return client.messages.create(model="claude-test", max_tokens=64, messages=messages)

    def sync_method(self) -> tuple[type, str]:
        import anthropic

        return anthropic.resources.Messages, "create"


class GoogleGenAIAdapter(Adapter):
    name = "google_genai"
    package = "google.genai"
    server_class = GoogleGenAIServer
    streams_are_context_managers = False  # plain generators
    async_close = "aclose"
    records_at_close = False
    import_and_call = (
        "from google import genai\n"
        "client = genai.Client(api_key='k', http_options={'base_url': server.url})\n"
        "with layer.session_context() as sid:\n"
        "    client.models.generate_content(model='m', contents='hi')\n"
    )
    patched_expression = "genai.models.Models.generate_content"

    def provider(self) -> Provider:
        from layer_sdk.instrumentation._google_genai.call import GOOGLE_GENAI

        return GOOGLE_GENAI

    def targets(self) -> tuple[Target, ...]:
        from layer_sdk.instrumentation._google_genai.call import TARGETS

        return TARGETS

    def open(self, mode: str, server: Any, api_key: str = "key-test") -> Any:
        from google import genai
        from google.genai import types

        client = genai.Client(api_key=api_key, http_options=types.HttpOptions(base_url=server.url))
        return _Models(client, client.models if mode == "sync" else client.aio.models)

    def close(self, client: Any) -> None:
        close = getattr(client.client, "close", None)
        if close is not None:  # google-genai 1.x's Client has no close()
            close()

    async def close_async(self, client: Any) -> None:
        close = getattr(client.client.aio, "aclose", None)
        if close is not None:
            await close()

    @staticmethod
    def _config(headers: dict[str, str]) -> Any:
        from google.genai import types

        if not headers:
            return None
        return types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers))

    def complete(self, client: Any, model: str = "gemini-test", **headers: str) -> Any:
        return client.models.generate_content(
            model=model, contents="Did you know?", config=self._config(headers)
        )

    def stream(self, client: Any, model: str = "gemini-test", **headers: str) -> Any:
        return client.models.generate_content_stream(
            model=model, contents="Did you know?", config=self._config(headers)
        )

    def text_of(self, items: list[Any]) -> str:
        return "".join(item.text or "" for item in items)

    def from_texts(self, client: Any, texts: Any) -> Any:
        return client.models.generate_content(model="gemini-test", contents=texts)

    def every_call(self, c: Any) -> list[Any]:
        models = c.models
        return _dumped(
            [
                models.generate_content(model="gemini-test", contents="x"),
                list(models.generate_content_stream(model="gemini-test", contents="x")),
                models.embed_content(model="emb", contents=["a", "b"]),
            ]
        )

    def sync_method(self) -> tuple[type, str]:
        from google.genai import models

        return models.Models, "generate_content"


class _Models:
    """google-genai's ``client.models`` (or ``client.aio.models``), its client kept alive:
    a client that is collected closes its connections."""

    def __init__(self, client: Any, models: Any) -> None:
        self.client = client
        self.models = models


def _dumped(results: list[Any]) -> list[Any]:
    """Results as plain data (pydantic models dumped), with their classes; without the HTTP
    response google-genai keeps on each (its date and request ID differ from call to call)."""

    def dump(value: Any) -> Any:
        if isinstance(value, list):
            return [dump(v) for v in value]
        return (type(value), value.model_dump(exclude={"sdk_http_response"}))

    return [dump(result) for result in results]


ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "google_genai": GoogleGenAIAdapter(),
}


def installed(name: str) -> Adapter:
    """The adapter of ``name``; the test is skipped when its SDK is not installed."""
    adapter = ADAPTERS[name]
    try:
        found = importlib.util.find_spec(adapter.package) is not None
    except ImportError:
        found = False
    if not found:
        pytest.skip(f"{adapter.package} is not installed")
    return adapter
