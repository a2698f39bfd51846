"""The record of one Anthropic call: which methods, and how their outcomes become actions.

``CALLS``, ``HELPERS`` and ``MANAGERS`` list the patched methods, each with
the ``operation`` its calls are recorded as. ``create`` and ``parse`` (which
sends its request itself, 0.125 and later) are wrapped like any provider method; the
``.stream()`` helper sends its request itself (not through ``create``) when
its manager is entered, so ``stream()`` only starts the record, kept on the
manager, and the manager's ``__enter__``/``__aenter__`` makes the call
(``patch.py``). :class:`Call` is the shared record
(``instrumentation/_call.py``) with the Messages API's mapping
(``messages.py``); the helper's ``MessageStream`` is a stream like
``anthropic.Stream``: the prompt when it starts, the output when it ends.
"""

from __future__ import annotations

from typing import Any

from .. import _stainless
from .._call import Call as _SharedCall
from .._mapping import Output
from .._provider import EXTRA_HEADERS, Provider
from .._streams import Accumulator
from .messages import _MESSAGES_PARAMETERS, _message_output, _MessageStream, _prompt_messages

_MESSAGES, _BETA = "anthropic.resources.messages", "anthropic.resources.beta.messages"
_HELPERS = "anthropic.lib.streaming"
#: (module, class, method, operation); the ``*Async*`` classes are the async client's.
CALLS: tuple[tuple[str, str, str, str], ...] = (
    (_MESSAGES, "Messages", "create", "messages.create"),
    (_MESSAGES, "AsyncMessages", "create", "messages.create"),
    (_BETA, "Messages", "create", "beta.messages.create"),
    (_BETA, "AsyncMessages", "create", "beta.messages.create"),
    (_MESSAGES, "Messages", "parse", "messages.parse"),
    (_MESSAGES, "AsyncMessages", "parse", "messages.parse"),
    (_BETA, "Messages", "parse", "beta.messages.parse"),
    (_BETA, "AsyncMessages", "parse", "beta.messages.parse"),
)
#: The ``.stream()`` helpers: (module, class, method, operation).
HELPERS: tuple[tuple[str, str, str, str], ...] = (
    (_MESSAGES, "Messages", "stream", "messages.stream"),
    (_MESSAGES, "AsyncMessages", "stream", "messages.stream"),
    (_BETA, "Messages", "stream", "beta.messages.stream"),
    (_BETA, "AsyncMessages", "stream", "beta.messages.stream"),
)
#: The helpers' managers, whose ``__enter__``/``__aenter__`` sends the request.
MANAGERS: tuple[tuple[str, str, str], ...] = (
    (_HELPERS, "MessageStreamManager", "__enter__"),
    (_HELPERS, "AsyncMessageStreamManager", "__aenter__"),
    (_HELPERS, "BetaMessageStreamManager", "__enter__"),
    (_HELPERS, "BetaAsyncMessageStreamManager", "__aenter__"),
)
#: The helpers' streams, watched like ``anthropic.Stream``.
_HELPER_STREAMS = (
    (_HELPERS, "MessageStream"),
    (_HELPERS, "AsyncMessageStream"),
    (_HELPERS, "BetaMessageStream"),
    (_HELPERS, "BetaAsyncMessageStream"),
)
ANTHROPIC = Provider(
    name="anthropic",
    package="anthropic",
    label="Anthropic",
    headers=EXTRA_HEADERS,
    read_arguments=("messages", "system", "tools"),
    raw_header=_stainless.RAW_HEADER,
)


def recognise() -> None:
    """Look up anthropic's classes; called when the classes are patched."""
    _stainless.recognise("anthropic", ANTHROPIC.results, *_HELPER_STREAMS)


class Call(_SharedCall):
    """One Messages API call (``create``, or a ``.stream()`` helper's request)."""

    __slots__ = ()

    PROVIDER = ANTHROPIC

    def prompt(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], frozenset[str]]:
        messages, attachments = _prompt_messages(self.kwargs)
        return messages, attachments, _MESSAGES_PARAMETERS

    def output_of(self, result: Any) -> Output:
        return _message_output(result)

    def accumulator(self) -> Accumulator:
        return _MessageStream()
