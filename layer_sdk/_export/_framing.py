"""What an HTTP/1.1 answer may look like: the parsing of its head, to the letter of RFC 9112.

Pure functions of bytes, used by ``_http``'s connections, and held to h11's
reading of the same bytes by ``tests/test_http_parser.py``. Framing follows
RFC 9112 to the letter: ``HTTP/1.x SP 3DIGIT`` status lines (100 to 599),
field names that are tokens, field values without NUL, CR or LF;
``Content-Length`` as digits, repeated only with one value. Where RFC 9112
lets a recipient choose, this refuses: header lines continued on the next
line (obs-fold), lines ended by a bare LF, ``Transfer-Encoding`` other than
exactly ``chunked``, and ``Transfer-Encoding`` together with
``Content-Length`` or in an HTTP/1.0 answer. Every refusal is a
``ProtocolError``.
"""

from __future__ import annotations

import re


class RemoteDisconnected(ConnectionError):
    """The server closed the connection without answering."""


class ProtocolError(OSError):
    """The server's answer was not valid HTTP/1.1, or broke off midway."""


class ClosedMidAnswer(ProtocolError):
    """The server closed the connection in the middle of an answer."""


class PipelineClosed(ConnectionError):
    """The server ended a pipeline before answering every request, in a way that says
    nothing against the requests left (it closed the connection, or was slow): they
    may be sent again at once."""


class AnswerTooLarge(ProtocolError):
    """The answer was larger than ``MAX_ANSWER_BYTES`` or ``MAX_HEAD_BYTES`` allow."""


_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_STATUS_LINE = re.compile(
    rb"HTTP/1\.([0-9]) ([1-5][0-9][0-9])(?: [^\x00\n\r\x0b\x0c]*)?(?=\r\n|\Z)"
)
_NAME = re.compile(_TOKEN.decode())
# NUL, VT, FF, and CR or LF outside CRLF: in no line (h11 refuses them too).
_NOT_IN_FIELDS = re.compile("[\x00\x0b\x0c\r\n]")
# Parsing is a pure function of the bytes, and a server's answers repeat one
# another: whole heads byte for byte (the local collector's), or line by line
# but for a Date or a trace ID (an API's). What was parsed lately is kept.
_HEADS_SEEN: dict[bytes, tuple[int, dict[str, str], int]] = {}
_FIELDS_SEEN: dict[str, tuple[str, str]] = {}


def parse_head(head: bytes) -> tuple[int, dict[str, str], int]:
    """Status, headers and HTTP minor version of a head (without its final CRLFs)."""
    parsed = _HEADS_SEEN.get(head)
    if parsed is None:
        parsed = _parse_new_head(head)
        if len(_HEADS_SEEN) >= 64:
            _HEADS_SEEN.clear()
        _HEADS_SEEN[head] = parsed
    status, headers, minor = parsed
    return status, dict(headers), minor


def _parse_new_head(head: bytes) -> tuple[int, dict[str, str], int]:
    match = _STATUS_LINE.match(head)
    if match is None:
        raise ProtocolError(_what_is_wrong(bytes(head)))
    headers = parse_fields(head)
    minor = int(match[1])
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            # RFC 9112 §6.3: "ought to be handled as an error" (a smuggling attempt)
            raise ProtocolError("the answer has both Transfer-Encoding and Content-Length")
        if minor == 0:
            # RFC 9112 §6.1: the framing of such a message is faulty
            raise ProtocolError("an HTTP/1.0 answer has a Transfer-Encoding")
    return int(match[2]), headers, minor


def parse_fields(head: bytes | bytearray) -> dict[str, str]:
    """The header fields of ``head``, whose first line is skipped; checks them all.

    Framing fields are checked and normalized as h11 does: ``Content-Length``
    to its one value, ``Transfer-Encoding`` to ``chunked``.
    """
    lines = head.decode("latin-1").split("\r\n")
    del lines[0]
    headers: dict[str, str] = {}
    fields = []
    for line in lines:
        field = _FIELDS_SEEN.get(line) or _parse_field(line)
        fields.append(field)
        headers[field[0]] = field[1]
    if len(headers) < len(lines):  # a field repeated: its values join, in order
        headers = {}
        for name, value in fields:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    length = headers.get("content-length")
    if length is not None and not (length.isdigit() and length.isascii() and len(length) <= 20):
        values = {part.strip(" \t") for part in length.split(",")}
        length = values.pop()
        if values or not (0 < len(length) <= 20 and length.isascii() and length.isdigit()):
            raise ProtocolError(f"invalid Content-Length: {headers['content-length'][:60]!r}")
        headers["content-length"] = length
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.lower() != "chunked":
            raise ProtocolError(f"unsupported Transfer-Encoding: {coding[:60]!r}")
        headers["transfer-encoding"] = "chunked"
    return headers


def _parse_field(line: str) -> tuple[str, str]:
    """One field line as (lower-case name, value), once checked; remembered for next time."""
    name, colon, value = line.partition(":")
    if not colon or _NAME.fullmatch(name) is None or _NOT_IN_FIELDS.search(line):
        raise ProtocolError(_what_is_wrong(b"HTTP/1.1 200 OK\r\n" + line.encode("latin-1")))
    field = (name.lower(), value.strip(" \t"))
    if len(_FIELDS_SEEN) >= 256:
        _FIELDS_SEEN.clear()
    _FIELDS_SEEN[line] = field
    return field


def _what_is_wrong(head: bytes) -> str:
    """Why a head was refused, in words (only called once it was)."""
    status_line, _, rest = head.partition(b"\r\n")
    if not re.fullmatch(rb"HTTP/1\.[0-9] [0-9]{3}( .*)?", status_line, re.S):
        return f"not an HTTP/1.x status line: {status_line[:100]!r}"
    if not re.fullmatch(rb"HTTP/1\.[0-9] [1-5][0-9]{2}( .*)?", status_line, re.S):
        return f"status code out of range: {status_line[:100]!r}"
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            return f"a header line continued on the next line (obs-fold): {line[:60]!r}"
        if b"\n" in line or b"\r" in line:
            return f"a line ends with a bare LF or CR, not CRLF: {line[:60]!r}"
        if re.search(rb"[\x00\x0b\x0c]", line):
            return f"a control character in a header: {line[:60]!r}"
    for line in rest.split(b"\r\n"):
        if not re.match(_TOKEN + rb":", line):
            return f"invalid header line: {line[:60]!r}"
    return f"invalid answer head: {head[:100]!r}"


def keeps_alive(connection: str, minor: int) -> bool:
    """Whether the ``Connection`` field of an answer lets the connection be reused."""
    options = {option.strip(" \t").lower() for option in connection.split(",")}
    return "close" not in options and (minor >= 1 or "keep-alive" in options)
