"""Lost events: why each was lost, and the log line and callback that say so.

Every event the SDK accepted or refused ends in exactly one of: delivered,
dropped at the door (``QUEUE_FULL``, ``TOO_LARGE``, ``SHUTDOWN``,
``RECURSION``; ``SPAN_BACKLOG``: a span dropped before it became events) or
given up on after being accepted (``REJECTED``,
``RETRIES_EXHAUSTED``, ``SESSION_FAILED``, ``SHUTDOWN``, ``INTERNAL_ERROR``;
with a spool, ``SPOOL_FULL``, ``EXPIRED`` and ``SPOOL_UNREADABLE``).
The counts live in the queue; this module names the reasons and tells people.

Telling ``on_drop`` must never harm the host. The callback is the user's code
and may do anything: log through a handler that reports to Layer (and so
drop again), raise, block, or call ``flush()``. Hence:

- **Re-entry.** A thread that is already telling of a loss (in ``on_drop``, or
  writing a loss line to the log) does not tell of the losses it causes
  meanwhile: they are counted in ``stats()`` and added to the next loss line
  of their reason, but reach neither ``on_drop`` nor the log at once. However
  the handlers loop back, one call does one bounded amount of work.
- **Errors.** An exception from ``on_drop`` never propagates; it is logged at
  most once per ``LOSS_LOG_INTERVAL``, with how often it happened meanwhile.
- **Where it runs.** Losses found at the door (queue full, too large, shut
  down) are told on the caller's thread before its call returns: the caller
  learns of them synchronously, as before. Losses found by a sender thread
  (refused by the server, retries exhausted, a dead session's actions) are
  handed to a notifier thread, so that a sender never runs user code: an
  ``on_drop`` that blocks or calls ``flush()`` (which waits for the senders)
  cannot stall delivery.

Trade-offs of the notifier:

- It is one daemon thread per client, started when the first loss needs it
  and gone after ``NOTIFIER_LINGER`` seconds without work.
- What waits for it is one count per reason, so it cannot grow without bound;
  counts that pile up while a slow callback runs arrive summed
  (``on_drop("rejected", 7)``), in the order of their reasons, and a
  sender-found loss may reach ``on_drop`` after a door drop that came later.
- Like a sender, it is an SDK thread: an event the callback records from there
  is refused as ``RECURSION`` (counted, not told again), so a callback cannot
  feed losses back to itself through the server.
- Once the interpreter begins to exit (atexit runs after the main thread has
  stopped; Python 3.12 then refuses to start threads), the callback runs on
  the sender that found the loss, still guarded: that is a thread the exit
  drain waits for, within ``shutdown_timeout``. Losses a notifier still holds
  then may go untold (they are in the counts and the log all the same).
- A forked child gets fresh locks and no notifier, and does not tell of the
  parent's pending losses.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec

from .._config import DropCallback
from .._oversize import MARKER

logger = logging.getLogger("layer_sdk")

# Why an event was dropped at the door or given up on after being accepted.
QUEUE_FULL = "queue_full"
TOO_LARGE = "too_large"
SHUTDOWN = "shutdown"
REJECTED = "rejected"
RETRIES_EXHAUSTED = "retries_exhausted"
SESSION_FAILED = "session_failed"
INTERNAL_ERROR = "internal_error"
#: Dropped when an SDK thread (e.g. a logging handler run by it) tries to enqueue.
RECURSION = "recursion"
#: A finished OpenTelemetry span that found the span processor's backlog full: dropped
#: before it was read, counted as one (the events it would have made are unknown).
SPAN_BACKLOG = "span_backlog"
#: The spool was full (``spool_max_bytes``): the oldest sessions it held only on disk went.
SPOOL_FULL = "spool_full"
#: Waited in the spool longer than ``spool_max_age``.
EXPIRED = "expired"
#: Held only by the spool, which could not read them back (a disk error, a damaged file).
SPOOL_UNREADABLE = "spool_unreadable"
#: Every loss reason, as stats() and on_drop name them.
LOSS_REASONS = (
    QUEUE_FULL,
    TOO_LARGE,
    SHUTDOWN,
    REJECTED,
    RETRIES_EXHAUSTED,
    SESSION_FAILED,
    INTERNAL_ERROR,
    RECURSION,
    SPAN_BACKLOG,
    SPOOL_FULL,
    EXPIRED,
    SPOOL_UNREADABLE,
)

#: At most one log line per loss reason in this many seconds (the counts add up meanwhile).
LOSS_LOG_INTERVAL = 10.0
#: The notifier thread exits after this many seconds without losses to tell of.
NOTIFIER_LINGER = 5.0
#: A server's message is cut to this many characters in a log line (keeping its
#: head and its tail, where a field path often is): a refusal may quote the
#: refused event whole (a prompt, personal data), which belongs in no log.
MAX_DETAIL_CHARS = 200

_CALLBACK_ERROR = "on_drop raised"
_TRUNCATED = "truncated"
#: Losses whose line also names the delivery trouble of the moment (``_trouble``), when
#: there is one: an outage is what fills the queue, holds events past the shutdown
#: deadline and loses creates. The other reasons carry their own cause.
_NAMES_LAST_ERROR = frozenset({QUEUE_FULL, SHUTDOWN, SESSION_FAILED})
_WORD = re.compile(r"\w{3,}")
_ANY_WORD = re.compile(r"\w+")
#: A word with a mask right before or after it (a few spaces or signs between).
_NEXT_TO_MASK = re.compile(r"(…[^\w…]{0,3})(\w+)|(\w+)(?=[^\w…]{0,3}…)")
_MASKS = re.compile(r"…(?:[^\w…]{0,3}…)+")
_QUOTED_BYTES = re.compile(r"\bb'(?:[^'\\]|\\.)*'|\bb\"(?:[^\"\\]|\\.)*\"")


class _ThreadRole(threading.local):
    #: True in the SDK's own threads (senders, the notifier), so that whatever
    #: they trigger (a logging handler that reports to Layer, say) is never
    #: enqueued again: it is dropped as ``RECURSION``. A class default keeps
    #: the hot path's read cheap in every other thread.
    active = False
    #: True while an SDK thread enqueues what the application handed it (the
    #: OpenTelemetry span processor's reader appending a span's actions): those
    #: events are the application's, not feedback, and are let in.
    recording = False


sdk_thread = _ThreadRole()


class _Telling(threading.local):
    #: True while this thread tells of a loss. A class default keeps the read
    #: cheap in threads that never set it.
    active = False


class Throttle:
    """How often a kind of line may be written: the first at once, then at most one every
    ``LOSS_LOG_INTERVAL`` seconds, which sums up the occurrences meanwhile.

    Occurrences that come while a line is held back are kept, not lost: the next
    line of the kind counts them. The loss log and the delivery trouble log
    (``_trouble``) each keep one.
    """

    def __init__(self) -> None:
        # Re-entrant: a signal handler that interrupts this thread while it holds
        # the lock, and logs through the SDK, must not wait forever on it.
        self._lock = threading.RLock()
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def keep(self, key: str, count: int) -> None:
        """Add ``count`` to the next line for ``key``, without writing one now."""
        with self._lock:
            self._unlogged[key] = self._unlogged.get(key, 0) + count

    def due(self, key: str, count: int) -> int:
        """How many occurrences a line for ``key`` reports now (0: not yet; kept for later)."""
        now = time.monotonic()
        with self._lock:
            total = self._unlogged.get(key, 0) + count
            last = self._last_logged.get(key)
            if last is not None and now - last < LOSS_LOG_INTERVAL:
                self._unlogged[key] = total
                return 0
            self._last_logged[key] = now
            self._unlogged[key] = 0
            return total


class LossLog:
    """Counts, reports (``on_drop``) and logs lost events, without flooding the log.

    Each kind of trouble gets its first log line at once, then at most one
    line every ``LOSS_LOG_INTERVAL`` that sums up what happened meanwhile.
    See the module docstring for where and how ``on_drop`` runs.
    """

    def __init__(
        self,
        on_drop: DropCallback | None = None,
        last_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._on_drop = on_drop
        #: The delivery trouble of the moment in words (None: none), for the loss lines
        #: whose cause it is (``_trouble.TroubleLog.last_error``).
        self._last_error = last_error
        self._reset()
        _instances.add(self)

    def _reset(self) -> None:
        """Fresh state: at creation, and in a forked child (no lock, no notifier inherited)."""
        # Re-entrant: a signal handler that interrupts this thread while it holds
        # the lock, and reports to Layer, must not wait forever on it.
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)  # the notifier waits here for losses
        self._throttle = Throttle()
        self._details: dict[str, _Detail] = {}
        self._pending: dict[str, int] = {}  # losses waiting for the notifier, per reason
        self._notifier_running = False
        self._telling = _Telling()

    def explain(self, reason: str, detail: str, refused: Sequence[bytes] = ()) -> None:
        """Remember why the next loss for ``reason`` happened, for its log line. With the
        ``refused`` bodies, ``detail`` may hold a server's bytes (a malformed answer it
        quotes): the data of those bodies is masked in it, as in ``explain_refusal``."""
        with self._lock:
            self._details[reason] = _Detail(detail, refused=refused)

    def explain_refusal(
        self, reason: str, detail: str, message: str, refused: Sequence[bytes]
    ) -> None:
        """Like ``explain``, for a refusal: the server said ``message`` of the ``refused``
        bodies. The line quotes the message short, without the refused data (see
        ``server_words``): a server may quote what it refused, a prompt with personal data."""
        with self._lock:
            self._details[reason] = _Detail(detail, message, refused)

    def unexplain(self, reason: str) -> None:
        """Forget the explanation for ``reason`` when no loss used it (it would mislead
        the line of a later loss of the same reason)."""
        with self._lock:
            self._details.pop(reason, None)

    def __call__(self, reason: str, count: int) -> None:
        """Record that ``count`` events were lost for ``reason``."""
        telling = self._telling
        if telling.active:
            # Caused while this thread tells of a loss (a handler that reports
            # to Layer, say): counted, and summed into the next line of its reason.
            self._throttle.keep(reason, count)
            return
        telling.active = True
        try:
            if self._on_drop is not None:
                if sdk_thread.active:
                    self._hand_off(reason, count)
                else:
                    self._tell(reason, count)
            total = self._throttle.due(reason, count)
            if total:
                with self._lock:
                    explained = self._details.pop(reason, None)
                detail = None if explained is None else explained.text()
                if reason in _NAMES_LAST_ERROR:
                    detail = _with_last_error(detail, self._last_error())
                logger.warning(
                    "layer-sdk lost %d event(s): %s%s",
                    total,
                    reason,
                    f" ({detail})" if detail else "",
                )
        finally:
            telling.active = False

    def truncated(self, size: int, limit: int, characters: int) -> None:
        """An action of ``size`` bytes had ``characters`` characters of its content cut to
        fit ``limit`` (``max_event_bytes``): not a loss, but what was cut is not recorded."""
        telling = self._telling
        if telling.active:
            self._throttle.keep(_TRUNCATED, 1)
            return
        total = self._throttle.due(_TRUNCATED, 1)
        if not total:
            return
        telling.active = True
        try:
            logger.warning(
                "layer-sdk cut the content of %d action(s) larger than max_event_bytes=%d "
                "(the last: %d bytes, %d characters cut from the middle of its longest texts); "
                "counted in stats().truncated. Raise max_event_bytes to keep more, or pass "
                'oversize="refuse" to refuse such actions instead',
                total,
                limit,
                size,
                characters,
            )
        finally:
            telling.active = False

    # -- on_drop -------------------------------------------------------------

    def _tell(self, reason: str, count: int) -> None:
        """Call ``on_drop`` on this thread (already marked as telling)."""
        assert self._on_drop is not None
        try:
            self._on_drop(reason, count)
        except Exception:
            self._callback_failed()

    def _callback_failed(self) -> None:
        total = self._throttle.due(_CALLBACK_ERROR, 1)
        if total:
            logger.error(
                "layer-sdk's on_drop callback raised (%d time(s) since the last report)",
                total,
                exc_info=True,
            )

    def _hand_off(self, reason: str, count: int) -> None:
        """Leave ``on_drop`` to the notifier thread, starting it when none runs."""
        if not threading.main_thread().is_alive():
            # The interpreter is exiting (atexit runs once the main thread has
            # stopped): a notifier might not run before the end, while this
            # sender is one the exit drain waits for. Tell of it here.
            self._tell(reason, count)
            return
        with self._lock:
            self._pending[reason] = self._pending.get(reason, 0) + count
            if self._notifier_running:
                self._wake.notify()
                return
            self._notifier_running = True
        notifier = threading.Thread(target=self._notify, name="layer-sdk-on-drop", daemon=True)
        try:
            notifier.start()
        except RuntimeError:
            # No thread can start (the interpreter is exiting): tell of them here.
            with self._lock:
                self._notifier_running = False
                pending, self._pending = self._pending, {}
            for pending_reason, pending_count in pending.items():
                self._tell(pending_reason, pending_count)

    def _notify(self) -> None:
        """The notifier thread: tells ``on_drop`` of what waits, until idle for a while."""
        sdk_thread.active = True
        self._telling.active = True
        on_drop, lock = self._on_drop, self._lock
        assert on_drop is not None
        while True:
            with lock:
                if not self._pending:
                    self._wake.wait(NOTIFIER_LINGER)
                if not self._pending:
                    self._notifier_running = False
                    return
                pending, self._pending = self._pending, {}
            for reason, count in pending.items():
                try:
                    on_drop(reason, count)
                except BaseException:  # even SystemExit: the notifier must go on
                    self._callback_failed()


class _Detail(NamedTuple):
    """Why a loss happened: what we know (``what``), and what a server said of what it refused."""

    what: str
    message: str | None = None
    refused: Sequence[bytes] = ()

    def text(self) -> str:
        """The words of a loss line (built only when a line is written)."""
        if self.message is None:
            return masked_quotes(self.what, self.refused) if self.refused else self.what
        return f"{self.what}: {server_words(self.message, self.refused)}"


def _with_last_error(detail: str | None, last_error: str | None) -> str | None:
    """``detail`` with the delivery trouble of the moment added, unless it names one."""
    if last_error is None or (detail is not None and "last error" in detail):
        return detail
    return f"last error: {last_error}" if detail is None else f"{detail}; last error: {last_error}"


def server_words(message: str, refused: Sequence[bytes] = ()) -> str:
    """A server's ``message`` fit for a log line: never the data of the ``refused`` bodies.

    Every word of three characters or more that the refused events hold as a
    value (a name, a number, a word of the prompt) is masked, however the
    server quoted it (upper-cased, say); so is every shorter word, or piece of
    a word (the server cut its quote there), that stands next to a masked one
    and is, or is part of, a word of theirs: a quote is masked whole, initials
    and the middle of a number too. The server's own words are kept unless the
    events hold them too (errs on the side of hiding). Then the message is cut
    to ``MAX_DETAIL_CHARS``, its head and its tail kept: a field path is often
    at the end.
    """
    words = _words_of(refused)
    if words:
        message = _WORD.sub(lambda word: "…" if word[0].casefold() in words else word[0], message)
        message = _mask_next_to_masks(message, words)
        message = _MASKS.sub("…", message)  # "… … …, …" reads as one gap
    if len(message) <= MAX_DETAIL_CHARS:
        return message
    tail = MAX_DETAIL_CHARS // 3
    head = MAX_DETAIL_CHARS - tail
    return f"{message[:head]}{MARKER.format(len(message) - head - tail)}{message[-tail:]}"


def masked_quotes(text: str, refused: Sequence[bytes]) -> str:
    """Our ``text`` with the data of the ``refused`` bodies masked in the bytes it quotes
    (``b'...'``: what a malformed answer showed, which may quote the events)."""
    if not refused or ("b'" not in text and 'b"' not in text):
        return text
    return _QUOTED_BYTES.sub(lambda quote: server_words(quote[0], refused), text)


def _mask_next_to_masks(message: str, words: set[str]) -> str:
    """``message`` with each word next to a mask masked too while it is, or is part of, a
    word of the refused events (``words``, case-folded), until none is left."""
    while True:
        changed = False

        def mask(match: re.Match[str]) -> str:
            nonlocal changed
            before, word = match[1] or "", match[2] or match[3]
            folded = word.casefold()
            if folded in words or any(folded in known for known in words):
                changed = True
                return f"{before}…"
            return match[0]

        message = _NEXT_TO_MASK.sub(mask, message)
        if not changed:
            return message


def _words_of(bodies: Sequence[bytes]) -> set[str]:
    """The words of every value of the JSON ``bodies``, case-folded."""
    words: set[str] = set()
    for body in bodies:
        try:
            stack = [msgspec.json.decode(body)]
        except msgspec.DecodeError:
            words.update(_ANY_WORD.findall(body.decode("utf-8", "replace").casefold()))
            continue
        while stack:  # without recursion: a payload may nest deeply
            value = stack.pop()
            if isinstance(value, str):
                words.update(_ANY_WORD.findall(value.casefold()))
            elif isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
            elif isinstance(value, (int, float)):
                words.update(_ANY_WORD.findall(str(value)))
    return words


_instances: weakref.WeakSet[LossLog] = weakref.WeakSet()


def _reset_in_child() -> None:
    for loss_log in list(_instances):
        loss_log._reset()


os.register_at_fork(after_in_child=_reset_in_child)
