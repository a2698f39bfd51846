"""The record of one Anthropic call: which methods, and how their outcomes become actions.

``CALLS``, ``HELPERS`` and ``MANAGERS`` list the patched methods, each with
the ``operation`` its calls are recorded as. ``create`` and ``parse`` (which
sends its request itself, 0.125 and later) are wrapped like any provider method; the
``.stream()`` helper sends its request itself (not through ``create``) when
its manager is entered, so ``stream()`` only starts the record, kept on the
manager, and the manager's ``__enter__``/``__aenter__`` makes the call
(``patch.py``). :class:`_Call` is the shared record
(``instrumentation/_call.py``) with the Messages API's mapping
(``messages.py``); the helper's ``MessageStream`` is a stream like
``anthropic.Stream``: the prompt when it starts, the output when it ends.
"""

from __future__ import annotations

from typing import Any

from ..._context import Recorder
from .._call import _Call as _SharedCall
from .._call import _Problems, _Results
from .._fields import _recognise_sentinels
from .._mapping import _now, _Output
from .._request import _read_request
from .._streams import _Accumulator
from .messages import _MESSAGES_PARAMETERS, _message_output, _MessageStream, _prompt_messages

_MESSAGES, _BETA = "anthropic.resources.messages", "anthropic.resources.beta.messages"
_HELPERS = "anthropic.lib.streaming"
#: (module, class, method, operation). Async handling is chosen by the class.
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
#: The arguments the mapping reads, so the ones where a one-shot iterator is made a list.
_READ_ARGUMENTS = ("messages", "system", "tools")

#: Failures of ours, logged once per kind.
PROBLEMS = _Problems("Anthropic")
#: anthropic's classes of streams and raw responses, looked up by ``_recognise()``.
RESULTS = _Results()


def _recognise() -> None:
    """Look up anthropic's classes; called when the classes are patched."""
    RESULTS.recognise("anthropic", *_HELPER_STREAMS)
    _recognise_sentinels("anthropic")


class _Call(_SharedCall):
    """One Messages API call (``create``, or a ``.stream()`` helper's request)."""

    __slots__ = ()

    PROVIDER = "anthropic"
    PROBLEMS = PROBLEMS
    RESULTS = RESULTS

    def prompt(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], frozenset[str]]:
        messages, attachments = _prompt_messages(self.kwargs)
        return messages, attachments, _MESSAGES_PARAMETERS

    def output_of(self, result: Any) -> _Output:
        return _message_output(result)

    def accumulator(self) -> _Accumulator:
        return _MessageStream()


def _begin(client: Recorder, operation: str, kwargs: dict[str, Any]) -> _Call:
    """Prepare the record of a call; edits ``kwargs`` (the wrapper's own dict) in place."""
    started = _now()
    session_id, raw = _read_request(kwargs, _READ_ARGUMENTS, PROBLEMS)
    return _Call(client, "messages", operation, kwargs, session_id, raw, started)
