"""Servers that quote the request back in their error answers, as some APIs, proxies and
identity providers do: the Authorization header, the form with the client secret.

Both are real HTTP servers on 127.0.0.1 (``http.server``), and keep every
answer they sent, so that a test can show the secret was echoed before it
shows that the SDK masked it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

from layer_sdk import AuthProvider


def odd_secret(prefix: str) -> str:
    """A random secret with the characters that form and percent encoding change."""
    return f"{prefix}/{secrets.token_urlsafe(12)}+=&?%~"


def shapes_of(secret: str) -> list[str]:
    """The secret as a server may echo it: raw, percent-encoded (both hex cases), form-encoded."""
    percent = quote(secret, safe="")
    lower_hex = re.sub(r"%[0-9A-F]{2}", lambda match: match[0].lower(), percent)
    return [secret, percent, lower_hex, quote_plus(secret), json.dumps(secret)[1:-1]]


def leaks(secret: str, *texts: str) -> list[str]:
    """The texts that show ``secret`` in any of its shapes."""
    return [text for text in texts if any(shape in text for shape in shapes_of(secret))]


def captured_from(raised: BaseException) -> list[str]:
    """What an error tracker capturing frame locals (sentry-sdk's default) may send of an
    exception: the message, args and attributes of it and of every exception chained to
    it (``__cause__``, ``__context__``, suppressed or not), and the locals of every frame
    of their tracebacks but the tests' own: containers walked, other objects by repr."""
    texts: list[str] = []
    exceptions: list[BaseException] = [raised]
    seen: set[int] = set()

    def walk(value: object, depth: int = 0) -> None:
        if id(value) in seen or depth > 8:
            return
        seen.add(id(value))
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            texts.append(bytes(value).decode("latin-1"))
        elif isinstance(value, BaseException):
            exceptions.append(value)
        elif isinstance(value, dict):
            for key, item in list(value.items()):
                walk(key, depth + 1)
                walk(item, depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in list(value):
                walk(item, depth + 1)
        else:
            texts.append(repr(value))

    while exceptions:
        exc = exceptions.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        texts += [str(exc), repr(exc)]
        walk(exc.args)
        walk(dict(vars(exc)))
        traceback = exc.__traceback__
        while traceback is not None:
            frame = traceback.tb_frame
            if "/tests/" not in frame.f_code.co_filename:
                walk(dict(frame.f_locals))
            traceback = traceback.tb_next
        for chained in (exc.__cause__, exc.__context__):
            if chained is not None:
                exceptions.append(chained)
    return texts


class StaticToken(AuthProvider):
    """An auth provider of the user's own: one fixed bearer token.

    ``declared``: whether it tells the SDK its token (``known_secrets``); when
    not, only the patterns of what secrets look like can mask an echo.
    """

    def __init__(self, token: str, *, declared: bool) -> None:
        self.token = token
        self.declared = declared

    def get_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def known_secrets(self) -> tuple[str, ...]:
        return (self.token,) if self.declared else ()


class _EchoServer:
    """A threading HTTP server that answers every POST and GET through ``answer``."""

    def __init__(self) -> None:
        self.answers: list[bytes] = []  # every body and reason phrase sent
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                status, reason, content_type, payload = owner.answer(dict(self.headers), body)
                with owner._lock:
                    owner.answers.append(payload + reason.encode("latin-1"))
                self.send_response(status, reason or None)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST  # a firewall look-up, a listing: answered alike

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, headers: dict[str, str], body: str) -> tuple[int, str, str, bytes]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def echoed(self, secret: str) -> bool:
        """Whether some answer carried ``secret`` in one of its shapes."""
        with self._lock:
            answers = [answer.decode("utf-8", "replace") for answer in self.answers]
        return bool(leaks(secret, *answers))

    def __enter__(self) -> _EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class EchoingAPI(_EchoServer):
    """A Layer API that refuses every request and quotes it back.

    ``shape``: ``json`` (the header in the message, every header and the body
    under ``request``), ``text`` (the raw header lines, as text/plain) or
    ``bare`` (only the token, with no name or scheme beside it). ``statuses``
    are answered in turn, then 400 for every request.
    """

    def __init__(self, shape: str, statuses: Iterator[int] | None = None) -> None:
        super().__init__()
        self.shape = shape
        self._statuses = statuses

    def answer(self, headers: dict[str, str], body: str) -> tuple[int, str, str, bytes]:
        status = next(self._statuses, 400) if self._statuses is not None else 400
        authorization = headers.get("Authorization", "")
        if self.shape == "json":
            echo = {
                "error": f"request refused; it carried Authorization: {authorization}",
                "request": {"headers": headers, "body": body},
            }
            return status, "", "application/json", json.dumps(echo).encode()
        if self.shape == "text":
            lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            return status, "", "text/plain", f"refused:\r\n{lines}\r\n{body}".encode()
        token = authorization.partition(" ")[2]
        echo = {"message": f"{token} is not valid for this application"}
        return status, "", "application/json", json.dumps(echo).encode()


class EchoingTokenEndpoint(_EchoServer):
    """An OAuth token endpoint that refuses the client and quotes its secret back.

    ``shape``: ``form`` (the whole form body in ``error_description``),
    ``value`` (the bare secret), ``lower_hex`` (the secret percent-encoded with
    lower-case hex), ``json`` (the form as JSON inside the description),
    ``reason`` (the secret in the reason phrase, no JSON body) or ``transient``
    (a 503 that quotes the form).
    """

    def __init__(self, shape: str) -> None:
        super().__init__()
        self.shape = shape

    def answer(self, headers: dict[str, str], body: str) -> tuple[int, str, str, bytes]:
        form = dict(parse_qsl(body))
        secret = form.get("client_secret", "")
        lower_hex = re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), quote(secret, safe=""))
        descriptions = {
            "form": f"client authentication failed for {body}",
            "value": f"client secret {secret} is not the one we know",
            "lower_hex": f"client secret {lower_hex} is not the one we know",
            "json": json.dumps(form),
            "transient": f"overloaded, try again: {body}",
        }
        if self.shape == "reason":
            return 401, f"Bad secret {secret}", "text/plain", b"no"
        status = 503 if self.shape == "transient" else 401
        answer = {"error": "invalid_client", "error_description": descriptions[self.shape]}
        return status, "", "application/json", json.dumps(answer).encode()
