"""``layer-sdk collector``: the local collector on a port, printing what it receives.

Each stored session and action is printed as it arrives, one line each: the
full session ID, what was said (shortened) and the attributes::

    14:02:11.482  4cd605e7-6f2a-5b1c-9d3e-0a1b2c3d4e5f  session               app=my-app
    14:02:11.490  4cd605e7-6f2a-5b1c-9d3e-0a1b2c3d4e5f  completion_prompt     user: Hi  temp=0

Every value a client reported is printed with its control and invisible
characters escaped (``\x1b`` for ESC, ``\n``, bidirectional overrides as
``\u202e``, a zero-width space as ``\u200b``): a prompt cannot retitle the
terminal, clear it, write to its clipboard, or hide or reorder what it shows. The page at
the printed URL shows the same, live, as conversations.

``--json`` prints one JSON object per line instead: first
``{"event": "listening", "url": ...}``, then one per session or action (its
fields as sent, with ``event``, ``received_at`` and ``session_id``), and
``{"event": "stopped", ...}`` last. ``--db FILE`` keeps everything in SQLite
(schema: ``layer_sdk/collector/_store.py``), so it survives a restart.
``--fail-rate`` and ``--latency`` rehearse a bad network. A request body over
``--max-body-bytes`` (default 8 MiB; 0: no limit) is refused with 413 as it is
read. ``--allow-host NAME`` lets the collector answer requests for another name
than its address (see ``collector/_hosts.py``): a collector bound to ``0.0.0.0``
and reached as ``http://devbox:8080/`` needs ``--allow-host devbox``. SIGINT (Ctrl-C) and
SIGTERM stop it, with a summary line; the exit code is then 0.

Request headers are never printed: a client's credentials stay out of the output.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import sqlite3
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from types import FrameType
from typing import Any, TextIO

from .._config import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_REQUEST_BYTES
from ..collector import LocalCollector, StoredEvent
from ._console import rich_console

_WIDTH = 160  # longest plain line; the attributes are cut to fit
_SAID = 48  # longest excerpt of what was said
_WAKE_UP = 0.2  # seconds: the longest a signal waits for its handler
_EVERY_ADDRESS = ("0.0.0.0", "::", "")
#: The largest request body the command reads (``--max-body-bytes``): room to spare over
#: what the SDK sends with its defaults (a request under ``max_request_bytes``, an
#: action under ``max_event_bytes``), and a bound on what one request costs in memory.
DEFAULT_MAX_BODY_BYTES = 8 * max(DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_EVENT_BYTES)

#: Escapes with a name of their own.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escaped(text: str) -> str:
    """``text`` with every character a terminal would act on, or that would not show,
    written as its escape (``\\x1b``, ``\\u200b``, ``\\n``).

    Those are the characters of the Unicode categories Cc (C0, DEL, C1: ESC
    starts a terminal command, a title, a clear, a clipboard write), Cf
    (bidirectional controls, zero-width and other invisible characters), Zl,
    Zp, Cs, Co and Cn: those for which ``str.isprintable()`` is False, but for
    the spaces of Zs, kept as they are.
    """
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or unicodedata.category(char) == "Zs" else _escape(char)
        for char in text
    )


def _escape(char: str) -> str:
    code = ord(char)
    named = _NAMED.get(char)
    if named is not None:
        return named
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def collector(
    host: str,
    port: int,
    *,
    as_json: bool = False,
    db: str | None = None,
    fail_rate: float = 0.0,
    latency: float = 0.0,
    allowed_hosts: Sequence[str] = (),
    max_body_bytes: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code (2 when it cannot start).

    ``max_body_bytes``: a larger request body is refused with 413 as it is read
    (None: ``DEFAULT_MAX_BODY_BYTES``; 0: no limit).
    """
    stream = sys.stdout if out is None else out
    if not 0 <= fail_rate <= 1 or latency < 0:
        print("layer-sdk collector: --fail-rate must be in [0, 1], --latency >= 0", file=sys.stderr)
        return 2
    events: queue.SimpleQueue[StoredEvent | None] = queue.SimpleQueue()
    try:
        server = LocalCollector(host, port, db=db, on_event=events.put, allowed_hosts=allowed_hosts)
    except (sqlite3.Error, ValueError, OSError) as error:
        problem = f"--db {db}" if db else "--allow-host"
        print(f"layer-sdk collector: cannot use {problem}: {error}", file=sys.stderr)
        return 2
    server.fail_rate = fail_rate
    server.delay = latency
    limit = DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
    server.max_body_bytes = limit or None
    try:
        server.start()
    except OSError as error:
        print(f"layer-sdk collector: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        events.put(None)  # SimpleQueue.put may be called from a signal handler

    # The handlers first: a signal sent as soon as the ready line is read must stop us cleanly.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
    printer = _Printer(stream, as_json)
    kept = server.totals()
    kept_sessions, kept_actions = kept["sessions"], kept["actions"]
    began = time.monotonic()
    received: Counter[str] = Counter()
    try:
        printer.started(
            server.url,
            db,
            kept_sessions,
            kept_actions,
            fail_rate,
            latency,
            every_address=host in _EVERY_ADDRESS,
        )
        while True:
            try:
                # A timeout, as a signal that lands on another thread does not interrupt
                # this wait: its handler runs once the main thread runs Python again.
                event = events.get(timeout=_WAKE_UP)
            except queue.Empty:
                continue
            if event is None:
                break
            received[event.kind] += 1
            printer.event(event, flush=events.empty())
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        printer = _Printer(None, as_json)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        server.stop()

    statuses = Counter(request.status for request in server.requests)
    errors = {str(status): n for status, n in sorted(statuses.items()) if not 200 <= status < 300}
    printer.summary(
        seconds=time.monotonic() - began,
        sessions=received["session"],
        actions=received["action"],
        requests=sum(statuses.values()),
        errors=errors,
        db=db,
        total_sessions=kept_sessions + received["session"],
        total_actions=kept_actions + received["action"],
    )
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _utc(stamp: float) -> str:
    moment = datetime.fromtimestamp(stamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return escaped(text)


# Attributes the SDK adds to every session: shown after the application's own.
_SDK_ATTRIBUTES = ("source", "os", "python.runtime", "python.runtime.version")


def _summary(attributes: Any) -> str:
    if not isinstance(attributes, dict):
        return ""
    ordered = sorted(attributes.items(), key=lambda item: item[0] in _SDK_ATTRIBUTES)
    return " ".join(f"{_value(name)}={_value(value)}" for name, value in ordered)


def said(kind: str, data: Any) -> str:
    """What an action says, on one line, shortened: the last message of a prompt or an
    answer (with its role), a tool call's name and arguments, the first input of an
    embedding or a moderation, an attachment's type and name. Escaped."""
    text = ""
    if not isinstance(data, dict):
        return text
    messages = data.get("messages")
    if kind in ("completion_prompt", "completion_output") and isinstance(messages, list):
        last = messages[-1] if messages else None
        if isinstance(last, dict):
            content = last.get("content")
            words = content if isinstance(content, str) else ""
            text = f"{last.get('role', 'message')}: {words}" if words else ""
    elif kind == "completion_tool_call":
        arguments = data.get("arguments", data.get("input", ""))
        text = f"{data.get('name', 'tool')}({_value(arguments)})"
    elif kind in ("embeddings", "moderation"):
        inputs = data.get("input")
        if isinstance(inputs, list) and inputs:
            more = f" (+{len(inputs) - 1} more)" if len(inputs) > 1 else ""
            text = f"{_value(inputs[0])}{more}"
    elif kind == "completion_prompt_attachment":
        name = next((data[k] for k in ("filename", "name", "file_id", "url") if k in data), "")
        text = f"{data.get('type', 'attachment')} {_value(name)}".strip()
    text = escaped(" ".join(str(text).split()))
    return text if len(text) <= _SAID else text[: _SAID - 1] + "…"


class _Printer:
    """Writes lines plainly, as JSON, or with rich when it is installed and out is a terminal."""

    def __init__(self, stream: TextIO | None, as_json: bool) -> None:
        self._stream = stream
        self._json = as_json
        self._console = None if as_json or stream is None else rich_console(stream)

    def _write(self, line: str, flush: bool = True) -> None:
        if self._stream is None:
            return
        self._stream.write(line + "\n")
        if flush:
            self._stream.flush()

    def started(
        self,
        url: str,
        db: str | None,
        sessions: int,
        actions: int,
        fail_rate: float,
        latency: float,
        *,
        every_address: bool = False,
    ) -> None:
        if self._json:
            line = {"event": "listening", "url": url, "db": db, "fail_rate": fail_rate}
            line |= {"latency": latency, "sessions": sessions, "actions": actions}
            self._write(json.dumps(line))
            return
        faults = [f"answering {fail_rate:.0%} of requests with 503"] if fail_rate else []
        faults += [f"answering after {latency:g} s"] if latency else []
        notes = [f"keeping everything in {db} ({sessions} sessions, {actions} actions so far)"]
        notes = (notes if db else []) + faults
        notes.append(f"see what arrives, live: {url}/")
        if every_address:
            notes.append(
                "listening on every address: anyone who reaches this machine can read and"
                " write what it holds; it answers requests to its IP addresses, to localhost"
                " and to the names given with --allow-host"
            )
        if self._console is not None:
            from rich.text import Text  # type: ignore[import-not-found, unused-ignore]

            self._console.print(
                Text.assemble(
                    ("Layer collector listening on ", "bold"),
                    (url, "bold cyan"),
                    "  (Ctrl-C to stop)",
                ),
                soft_wrap=True,
            )
            for note in notes:
                self._console.print(Text(f"  {note}", "dim"), soft_wrap=True)
            return
        self._write(f"Layer collector listening on {url}  (Ctrl-C to stop)", flush=False)
        for note in notes:
            self._write(f"  {note}", flush=False)
        self._write(f"  point the SDK at it: LAYER_BASE_URL={url}")

    def event(self, event: StoredEvent, flush: bool) -> None:
        body = event.body
        if self._json:
            fields = {"event": event.kind, "received_at": _utc(event.stored_at)}
            fields["session_id"] = event.session_id
            self._write(json.dumps({**fields, **body}, default=str), flush)
            return
        clock = datetime.fromtimestamp(event.stored_at).strftime("%H:%M:%S.%f")[:-3]
        text = ""
        if event.kind == "session":
            kind = "session"
            app = _value(body.get("application_id"))
            details = f"app={app}  {_summary(body.get('attributes'))}".rstrip()
        else:
            kind = escaped(str(body.get("kind")))
            text = said(kind, body.get("data"))
            details = _summary(body.get("attributes"))
        error = body.get("error") if event.kind == "action" else None
        failed = f"error: {_value(error.get('message'))}" if isinstance(error, dict) else ""
        session_id = escaped(event.session_id)
        head = f"{clock}  {session_id}  {kind:<20} "
        width = _WIDTH if self._console is None else self._console.width
        said_room = len(text) + 2 if text else 0
        room = width - len(head) - 1 - said_room - (len(failed) + 2 if failed else 0)
        if len(details) > room:
            details = details[: max(room - 1, 0)] + "…"
        if self._console is None:
            words = f"{text}  " if text else ""
            line = f"{head} {words}{details}{'  ' + failed if failed else ''}"
            self._write(line.rstrip(), flush)
            return
        from rich.text import Text  # type: ignore[import-not-found, unused-ignore]

        styled = Text(no_wrap=True, overflow="ellipsis")
        styled.append(clock, "dim")
        styled.append(f"  {session_id}  ", "cyan")
        styled.append(f"{kind:<20} ", "bold green" if kind == "session" else "magenta")
        if text:
            styled.append(f" {text} ", "bold")
        styled.append(f" {details}")
        if failed:
            styled.append(f"  {failed}", "bold red")
        self._console.print(styled, no_wrap=True, overflow="ellipsis", crop=True)

    def summary(
        self,
        *,
        seconds: float,
        sessions: int,
        actions: int,
        requests: int,
        errors: dict[str, int],
        db: str | None,
        total_sessions: int,
        total_actions: int,
    ) -> None:
        if self._json:
            line: dict[str, Any] = {"event": "stopped", "seconds": round(seconds, 3)}
            line |= {"sessions": sessions, "actions": actions, "requests": requests}
            line |= {"errors": errors, "db": db}
            line |= {"total_sessions": total_sessions, "total_actions": total_actions}
            self._write(json.dumps(line))
            return
        failed = sum(errors.values())
        statuses = ", ".join(f"{n} with {status}" for status, n in errors.items())
        text = (
            f"Stopped after {seconds:.1f} s: received {_count(sessions, 'session')} and"
            f" {_count(actions, 'action')} in {_count(requests, 'request')}"
            f" ({failed} answered with an error{': ' if failed else ''}{statuses})."
        )
        if db:
            text += (
                f" {db} holds {_count(total_sessions, 'session')}"
                f" and {_count(total_actions, 'action')}."
            )
        if self._console is not None:
            with contextlib.suppress(BrokenPipeError):
                self._console.print(
                    text, style="bold", markup=False, highlight=False, soft_wrap=True
                )
            return
        with contextlib.suppress(BrokenPipeError):
            self._write(text)
