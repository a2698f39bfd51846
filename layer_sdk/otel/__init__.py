"""OpenTelemetry GenAI spans as Layer sessions and actions (the ``otel`` extra).

Most LLM applications reach their models through frameworks (LangChain,
LlamaIndex, agent SDKs) or SDKs that Layer does not instrument natively;
their OpenTelemetry instrumentations (the official
``opentelemetry-instrumentation-genai-*``, OpenLLMetry, OpenInference)
describe every call as a span. :class:`LayerSpanProcessor`, added to the
application's own ``TracerProvider``, records those calls as the same
actions the native instrumentation records::

    from opentelemetry.sdk.trace import TracerProvider
    from layer_sdk import layer
    from layer_sdk.otel import LayerSpanProcessor

    layer.init(...)
    provider = TracerProvider()
    provider.add_span_processor(LayerSpanProcessor())

- :class:`LayerSpanProcessor`: the processor (never sets the global provider);
- :func:`install`: adds one to the global provider the application set;
- :class:`LayerCompletionHook`: hands each call's content to Layer even when
  the spans keep none (entry point ``layer`` of ``opentelemetry_genai_completion_hook``);
- :func:`conversation_session_id`: the session of a ``gen_ai.conversation.id``.

The modules, in the order a span goes through them: ``_processor`` (the
processor), ``_backlog`` (where an ended span waits for the processor's
reader thread), ``_native`` (calls already recorded natively), ``_spans`` (which
spans are calls, their model, usage, error), ``_content`` and ``_messages``
(the prompt and the answer in each layout), ``_sessions`` (which session),
``_actions`` (the actions); ``_completion_hook`` keeps what the hook is given.
``docs/opentelemetry.md`` is the manual.

Importing ``layer_sdk`` does not import this package nor OpenTelemetry.
"""

from __future__ import annotations

try:
    import opentelemetry.sdk.trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "layer_sdk.otel needs the OpenTelemetry SDK: install the 'otel' extra "
        "(pip install -e '.[otel]' in a checkout) or opentelemetry-sdk"
    ) from exc

from ._completion_hook import LayerCompletionHook
from ._processor import LayerSpanProcessor, install
from ._sessions import conversation_session_id

__all__ = ["LayerCompletionHook", "LayerSpanProcessor", "conversation_session_id", "install"]
