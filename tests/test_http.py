"""The SDK's own HTTP/1.1 client, against raw servers that answer in every legal framing."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from layer_sdk import (
    Client,
    LayerHTTPError,
    LayerRequestError,
    OIDCClientCredentials,
)
from layer_sdk._export import _http
from layer_sdk._export._backends import DirectBackend, RequestsBackend
from layer_sdk._export._http import (
    ConnectionPool,
    PipelineClosed,
    ProtocolError,
    RemoteDisconnected,
)
from layer_sdk._tls import CA_VARIABLES
from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, TCPServer, read_request, wait_until

Answerer = Callable[[socket.socket, bytes], bool]
"""Gets the connection and one request; answers it; returns False to close the connection."""


class RawServer(TCPServer):
    """A TCP server on 127.0.0.1 whose answers a test writes byte by byte."""

    def __init__(self, answer: Answerer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.requests: list[bytes] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                conn.close()
                return
        buffer = b""
        with conn, contextlib.suppress(OSError):
            while (request := read_request(conn, buffer)) is not None:
                head, body, buffer = request
                self.requests.append(head + b"\r\n\r\n" + body)
                try:
                    if not self.answer(conn, self.requests[-1]):
                        return
                except OSError:  # the client went away mid-answer
                    return


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answerer, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(answer, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def pool_for(server: RawServer, scheme: str = "http") -> ConnectionPool:
    return ConnectionPool(f"{scheme}://127.0.0.1:{server.port}", timeout=2.0, max_idle=4)


def reply(raw: bytes, keep: bool = True) -> Answerer:
    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(raw)
        return keep

    return answer


def test_the_request_is_plain_http_1_1(serve: Callable[..., RawServer]) -> None:
    server = serve(reply(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"))
    answer = pool_for(server).post("/v1/x", b'{"a":1}', {"X-Request-Id": "r1"})
    assert (answer.status, answer.body) == (202, b"{}")
    assert server.requests == [
        b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Request-Id: r1\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}' % server.port
    ]


def test_keep_alive_reuses_one_connection(serve: Callable[..., RawServer]) -> None:
    server = serve(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"))
    pool = pool_for(server)
    assert [pool.post("/", b"", {}).body for _ in range(5)] == [b"abc"] * 5
    assert server.connections == 1


def test_chunked_answers_with_extensions_and_trailers(serve: Callable[..., RawServer]) -> None:
    server = serve(
        reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
    )
    pool = pool_for(server)
    assert pool.post("/", b"", {}).body == b"Wikipedia"
    assert pool.post("/", b"", {}).body == b"Wikipedia"  # the framing left the stream clean
    assert server.connections == 1


def test_connection_close_and_bodies_ended_by_close(serve: Callable[..., RawServer]) -> None:
    server = serve(reply(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nbroken", keep=False))
    pool = pool_for(server)
    first = pool.post("/", b"", {})
    assert (first.status, first.body) == (500, b"broken")
    assert pool.post("/", b"", {}).status == 500
    assert server.connections == 2  # not reused after close


def test_http_1_0_answers_close_the_connection(serve: Callable[..., RawServer]) -> None:
    server = serve(reply(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", keep=False))
    pool = pool_for(server)
    assert pool.post("/", b"", {}).body == b"x"
    assert pool.post("/", b"", {}).body == b"x"
    assert server.connections == 2


def test_interim_1xx_answers_are_skipped(serve: Callable[..., RawServer]) -> None:
    server = serve(
        reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    )
    assert pool_for(server).post("/", b"{}", {}).status == 201


def test_a_stale_kept_alive_connection_is_replaced_once(serve: Callable[..., RawServer]) -> None:
    # The server answers, then closes the connection without saying so.
    server = serve(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", keep=False))
    pool = pool_for(server)
    pool.post("/", b"1", {})
    assert pool.post("/", b"2", {}).status == 200  # the dead connection was retried anew
    assert server.connections == 2
    assert [request[-1:] for request in server.requests] == [b"1", b"2"]


def test_an_answer_broken_off_midway_is_not_sent_again(serve: Callable[..., RawServer]) -> None:
    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 200 OK\r\nCont"])

    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(next(answers))
        return len(server.requests) == 1

    server = serve(answer)
    pool = pool_for(server)
    pool.post("/", b"1", {})
    with pytest.raises(ProtocolError, match="mid-answer"):
        pool.post("/", b"2", {})  # the server may have acted on it: no second try
    assert len(server.requests) == 2


def test_a_fresh_connection_closed_without_answer_raises(serve: Callable[..., RawServer]) -> None:
    server = serve(lambda conn, request: False)
    with pytest.raises(RemoteDisconnected):
        pool_for(server).post("/", b"", {})
    assert len(server.requests) == 1  # not sent twice


def test_garbage_is_a_protocol_error(serve: Callable[..., RawServer]) -> None:
    server = serve(reply(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    with pytest.raises(ProtocolError, match="not an HTTP"):
        pool_for(server).post("/", b"", {})


def test_a_silent_server_times_out(serve: Callable[..., RawServer]) -> None:
    silent = threading.Event()
    server = serve(lambda conn, request: silent.wait(5) or False)
    pool = ConnectionPool(f"http://127.0.0.1:{server.port}", timeout=0.2, max_idle=1)
    with pytest.raises(TimeoutError):
        pool.post("/", b"", {})
    silent.set()


def test_header_values_cannot_smuggle_lines(serve: Callable[..., RawServer]) -> None:
    server = serve(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(ValueError, match="Authorization"):
        pool_for(server).post("/", b"", {"Authorization": "Bearer x\r\nX-Evil: 1"})
    assert server.requests == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_verifies_the_server_certificate(
    serve: Callable[..., RawServer],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = serve(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), tls=context)
    with pytest.raises(ssl.SSLCertVerificationError):
        pool_for(server, "https").post("/", b"", {})  # not trusted yet
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted from now on
    assert pool_for(server, "https").post("/", b"", {}).body == b"ok"


def test_a_proxy_in_the_environment_routes_through_requests(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    client = Client()
    client.init(base_url="http://layer.example.com", application_id=APP_ID)
    assert client._exporter is not None
    assert isinstance(client._exporter.transport._backend, RequestsBackend)
    client.shutdown(0)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client.init(base_url=collector.url, application_id=APP_ID)
    assert isinstance(client._exporter.transport._backend, DirectBackend)
    client.shutdown(0)


# -- The default HTTP client, to the standard of a maintained library --

OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def closed_by_client(conn: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the client closes ``conn`` (end of stream or reset) within ``timeout``."""
    conn.settimeout(timeout)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_an_answer_over_the_cap_is_refused_before_its_body_is_read(
    serve: Callable[..., RawServer],
) -> None:
    """A huge Content-Length is refused at once, the connection closed."""
    closed = threading.Event()

    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 1000)
        if closed_by_client(conn):
            closed.set()
        return False

    server = serve(answer)
    with pytest.raises(_http.AnswerTooLarge, match="larger than 1048576"):
        pool_for(server).post("/", b"", {})
    assert closed.wait(5)


@pytest.mark.parametrize("framing", ["content-length", "chunked", "until-close"])
def test_answers_are_capped_in_every_framing(serve: Callable[..., RawServer], framing: str) -> None:
    """A body one byte over MAX_ANSWER_BYTES is refused; at it, read."""
    cap = _http.MAX_ANSWER_BYTES

    def framed(size: int) -> bytes:
        body = b"x" * size
        if framing == "content-length":
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (size, body)
        if framing == "chunked":
            half = size // 2
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], size - half, body[half:])
            )
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body

    sizes = iter([cap, cap + 1])

    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(framed(next(sizes)))
        return False

    server = serve(answer)
    pool = pool_for(server)
    assert len(pool.post("/", b"", {}).body) == cap
    with pytest.raises(_http.AnswerTooLarge):
        pool.post("/", b"", {})


def test_a_body_arriving_in_many_pieces_is_read_whole(serve: Callable[..., RawServer]) -> None:
    """A body of exactly the cap, in 256 pieces, is read whole."""

    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
        for _ in range(256):
            conn.sendall(b"y" * 4096)
        return True

    server = serve(answer)
    assert pool_for(server).post("/", b"", {}).body == b"y" * 1048576


@pytest.mark.parametrize("over", [0, 1])
def test_the_head_limit_applies_at_its_stated_size(
    serve: Callable[..., RawServer], over: int
) -> None:
    """A head of MAX_HEAD_BYTES is read, one byte more is refused."""
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: "
    pad = _http.MAX_HEAD_BYTES - len(start) - 4 + over
    head = start + b"p" * pad + b"\r\n\r\n"
    assert len(head) == _http.MAX_HEAD_BYTES + over
    server = serve(reply(head))
    if over:
        with pytest.raises(_http.AnswerTooLarge, match="head"):
            pool_for(server).post("/", b"", {})
    else:
        assert pool_for(server).post("/", b"", {}).status == 200


def drip(stop: threading.Event, first: bytes = b"HTTP/1.1 200 OK\r\nX-Slow: ") -> Answerer:
    """An answerer that sends ``first``, then one byte every 20 ms until ``stop`` (or 10 s)."""

    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(first)
        for _ in range(500):
            if stop.wait(0.02):
                break
            conn.sendall(b"a")
        return False

    return answer


def test_a_request_larger_than_the_socket_buffers_is_sent_whole(
    serve: Callable[..., RawServer],
) -> None:
    """The non-blocking send waits for room, and sends every byte."""
    server = serve(reply(OK_EMPTY))
    body = bytes(range(256)) * 32768  # 8 MiB: many times what the kernel buffers
    assert pool_for(server).post("/", body, {}).status == 200
    assert server.requests[0].endswith(body)


def test_a_server_that_stops_reading_cannot_hold_the_send_past_the_timeout() -> None:
    """Sending is within the deadline too."""
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never reads
    pool = ConnectionPool(f"http://127.0.0.1:{listener.getsockname()[1]}", 0.3, 1)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            pool.post("/", b"x" * (64 * 1024 * 1024), {})
        assert time.monotonic() - started < 1.5
    finally:
        listener.close()


def test_a_dripping_server_cannot_hold_an_attempt_past_the_timeout(
    serve: Callable[..., RawServer],
) -> None:
    """One byte every 20 ms; the attempt still ends at its 0.3 s timeout."""
    stop = threading.Event()
    server = serve(drip(stop))
    pool = ConnectionPool(f"http://127.0.0.1:{server.port}", timeout=0.3, max_idle=1)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=r"within 0\.3 s"):
            pool.post("/", b"", {})
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()


def test_a_dripping_server_cannot_hold_a_sync_call(serve: Callable[..., RawServer]) -> None:
    """A sync=True call raises LayerRequestError within http_timeout."""
    stop = threading.Event()
    server = serve(drip(stop))
    client = Client()
    client.init(
        base_url=f"http://127.0.0.1:{server.port}",
        application_id=APP_ID,
        http_timeout=0.3,
        max_retries=0,
    )
    started = time.monotonic()
    try:
        with pytest.raises(LayerRequestError, match=r"within 0\.3 s"):
            client.create_session(sync=True)
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        client.shutdown(1)


def test_an_https_server_that_never_finishes_the_handshake_times_out() -> None:
    """Connecting and the TLS handshake are within the same deadline."""
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, then never speaks TLS
    pool = ConnectionPool(f"https://127.0.0.1:{listener.getsockname()[1]}", 0.3, 1)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            pool.post("/", b"", {})
        assert time.monotonic() - started < 1.5
    finally:
        listener.close()


def test_bytes_left_after_an_answer_are_never_read_as_the_next_answer(
    serve: Callable[..., RawServer],
) -> None:
    """A stray answer in the same read spoils the connection."""
    answers = iter([OK_EMPTY + OK_EMPTY, b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n"])
    server = serve(lambda conn, request: conn.sendall(next(answers)) or True)
    pool = pool_for(server)
    assert pool.post("/", b"1", {}).status == 200
    assert pool.post("/", b"2", {}).status == 400  # its own answer, not the stray 200
    assert server.connections == 2


def test_an_idle_connection_the_server_wrote_to_is_not_reused(
    serve: Callable[..., RawServer],
) -> None:
    """Bytes that arrive while idle make the connection unusable."""
    stray_sent = threading.Event()
    bad = b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n"

    def answer(conn: socket.socket, request: bytes) -> bool:
        if request.endswith(b"1"):
            conn.sendall(OK_EMPTY)
            # The stray bytes must come once the client has its answer and parked the
            # connection: earlier, they would be read with the answer (another test).
            wait_until(lambda: bool(pool._idle))
            conn.sendall(OK_EMPTY)  # unasked: an answer that no request will claim
            stray_sent.set()
            return True
        conn.sendall(bad)
        return True

    server = serve(answer)
    pool = pool_for(server)
    assert pool.post("/", b"1", {}).status == 200
    assert stray_sent.wait(5)
    idle = pool._idle[0]._sock
    assert wait_until(lambda: select.select([idle], [], [], 0)[0])
    assert pool.post("/", b"2", {}).status == 400
    assert server.connections == 2


MALFORMED = {
    "conflicting Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3"
    b"\r\n\r\nabc",
    "conflicting Content-Length list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "Transfer-Encoding xchunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    "Transfer-Encoding gzip, chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked"
    b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "Transfer-Encoding and Content-Length": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "status 2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "status 099": b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    "HTTP/2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "negative chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0"
    b"\r\n\r\n",
    "0x chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0"
    b"\r\n\r\n",
    "chunk size with underscore": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
    "chunk without CRLF": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0"
    b"\r\n\r\n",
    "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "NUL in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "Content-Length +3": b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
    "unsolicited 101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_lenient_framing_is_refused(serve: Callable[..., RawServer], raw: bytes) -> None:
    """What RFC 9112 forbids (or lets us refuse) is a ProtocolError."""
    server = serve(reply(raw, keep=False))
    with pytest.raises(ProtocolError):
        pool_for(server).post("/", b"", {})


ACCEPTED = {
    "repeated identical Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"abc",
    ),
    "Content-Length list of one value": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"abc",
    ),
    "Transfer-Encoding in capitals": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
        b"abc",
    ),
    "no reason phrase": (b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nz", b"z"),
    "chunk size in upper-case hex, with leading zeros": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n000A\r\n0123456789\r\n0\r\n\r\n",
        b"0123456789",
    ),
}


@pytest.mark.parametrize(("raw", "body"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_strict_framing_still_accepts_what_rfc_9112_allows(
    serve: Callable[..., RawServer], raw: bytes, body: bytes
) -> None:
    """Strict, not stricter than RFC 9112 where nothing is at stake."""
    server = serve(reply(raw))
    assert pool_for(server).post("/", b"", {}).body == body


def test_repeated_fields_are_joined_in_order(serve: Callable[..., RawServer]) -> None:
    """Repeated fields are not lost (RFC 9110 §5.3)."""
    server = serve(reply(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n"))
    assert pool_for(server).post("/", b"", {}).headers["x-a"] == "1, 2"


# -- TLS: which failure, and one trust store --


@dataclasses.dataclass(frozen=True)
class Certificates:
    """A test CA and server certificates, all for localhost and 127.0.0.1 unless said."""

    ca: Path  # the CA's certificate
    ca_dir: Path  # a directory holding it under its hash name, for SSL_CERT_DIR
    leaf: tuple[Path, Path]  # signed by the CA
    other_host: tuple[Path, Path]  # signed by the CA, for other.example only
    expired: tuple[Path, Path]  # signed by the CA, valid on 1 January 2020 only


def _openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    folder = tmp_path_factory.mktemp("ca")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=layer-sdk test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    extensions = (
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectAltName={names}\n"
    )
    (folder / "ca.cnf").write_text(
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\n"
        "serial = serial\ndefault_days = 2\ndefault_md = sha256\npolicy = any\n"
        "unique_subject = no\n[any]\ncommonName = supplied\n"
    )
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("10\n")

    def issue(name: str, names: str, *dates: str) -> tuple[Path, Path]:
        (folder / f"{name}.ext").write_text(extensions.format(names=names))
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", "/CN=localhost", cwd=folder)  # fmt: skip
        _openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                 "-in", f"{name}.csr", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
                 "-notext", *dates, cwd=folder)  # fmt: skip
        return folder / f"{name}.pem", folder / f"{name}.key"

    local = "DNS:localhost,IP:127.0.0.1"
    ca_dir = folder / "trusted"
    ca_dir.mkdir()
    hashed = _openssl("x509", "-hash", "-noout", "-in", "ca.pem", cwd=folder).strip()
    shutil.copy(folder / "ca.pem", ca_dir / f"{hashed}.0")
    return Certificates(
        ca=folder / "ca.pem",
        ca_dir=ca_dir,
        leaf=issue("leaf", local),
        other_host=issue("other", "DNS:other.example"),
        expired=issue(
            "expired", local, "-startdate", "20200101000000Z", "-enddate", "20200102000000Z"
        ),
    )


def tls_server(pair: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*pair)
    return context


def trust(monkeypatch: pytest.MonkeyPatch, variable: str | None, path: Path | None) -> None:
    """Only ``variable`` names trusted CAs (none set: the system's store)."""
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if variable is not None and path is not None:
        monkeypatch.setenv(variable, str(path))


BACKENDS: dict[str, Callable[[str], DirectBackend | RequestsBackend]] = {
    "own client": lambda url: DirectBackend(url, 2.0, 1),
    "requests (proxy path)": lambda url: RequestsBackend.own(url, 2.0),
}


@pytest.mark.parametrize("backend", BACKENDS.values(), ids=BACKENDS.keys())
@pytest.mark.parametrize(
    ("served", "trusted", "words"),
    [
        ("self_signed", "ca", "is self-signed"),
        ("other_host", "ca", "hostname mismatch"),
        ("expired", "ca", "has expired"),
        ("leaf", None, "issued by a CA that is not in the trust store"),
    ],
)
def test_tls_failures_say_which(
    serve: Callable[..., RawServer],
    certificates: Certificates,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    backend: Callable[[str], DirectBackend | RequestsBackend],
    served: str,
    trusted: str | None,
    words: str,
) -> None:
    """The error says self-signed, wrong host, expired or unknown CA."""
    pair = certificate if served == "self_signed" else getattr(certificates, served)
    trust(monkeypatch, "SSL_CERT_FILE", certificates.ca if trusted else None)
    server = serve(reply(OK_EMPTY), tls=tls_server(pair))
    url = f"https://127.0.0.1:{server.port}"
    with pytest.raises(LayerRequestError, match=words) as raised:
        backend(url).post(url + "/v1/sessions", b"{}", {})
    if words.startswith("issued by"):
        assert "SSL_CERT_FILE" in str(raised.value)  # and how to trust another CA


def test_https_to_a_plain_http_port_says_so() -> None:
    """A handshake that fails (not a certificate) is named as such."""
    listener = socket.create_server(("127.0.0.1", 0))

    def plain_http() -> None:  # answers the TLS hello in plain HTTP, as a plain port would
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=plain_http, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(LayerRequestError, match=r"TLS handshake failed.*speak https"):
            DirectBackend(url, 2.0, 1).post(url + "/v1/sessions", b"{}", {})
    finally:
        listener.close()


def test_a_trust_store_variable_naming_nothing_is_refused_at_init(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SSL_CERT_FILE naming a missing file is a ValueError that names it."""
    trust(monkeypatch, "SSL_CERT_FILE", tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="SSL_CERT_FILE"):
        Client().init(base_url="https://layer.example.com", application_id=APP_ID)


TOKEN_ANSWER = b'{"access_token": "t0k3n", "token_type": "Bearer", "expires_in": 300}'
SESSION_ID = "8a0e7a6c-5f8f-5b1e-9f3a-2d3c4b5a6978"  # a UUID version 5
SESSION_ANSWER = b'{"session_id": "%s"}' % SESSION_ID.encode()


def json_reply(body: bytes) -> Answerer:
    return reply(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"])
def test_one_trust_store_for_the_api_and_the_token_endpoint(
    serve: Callable[..., RawServer],
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    """A CA trusted through the environment works for API and token alike."""
    trust(
        monkeypatch,
        variable,
        certificates.ca_dir if variable == "SSL_CERT_DIR" else certificates.ca,
    )
    api = serve(json_reply(SESSION_ANSWER), tls=tls_server(certificates.leaf))
    tokens = serve(json_reply(TOKEN_ANSWER), tls=tls_server(certificates.leaf))
    auth = OIDCClientCredentials(
        token_url=f"https://localhost:{tokens.port}/token", client_id="c", client_secret="s"
    )
    client = Client()
    client.init(
        base_url=f"https://localhost:{api.port}",
        application_id=APP_ID,
        auth_provider=auth,
        max_retries=0,
    )
    try:
        assert client.create_session(sync=True) == SESSION_ID
    finally:
        client.shutdown(1)
    assert len(tokens.requests) == 1
    assert b"Authorization: Bearer t0k3n" in api.requests[0]


class ConnectProxy(TCPServer):
    """An HTTP proxy on 127.0.0.1 that only tunnels (CONNECT), and records where to."""

    def __init__(self) -> None:
        self.tunnels: list[bytes] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        request = read_request(conn, size=4096)
        if request is None:
            return
        target = request[0].split(b" ")[1]
        self.tunnels.append(target)
        host, _, port = target.rpartition(b":")
        upstream = socket.create_connection((host.decode(), int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
        pump(conn, upstream)


def test_the_proxy_path_trusts_the_same_store(
    serve: Callable[..., RawServer],
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through an HTTPS proxy, the API is verified against the same CAs."""
    trust(monkeypatch, "SSL_CERT_FILE", certificates.ca)
    api = serve(json_reply(SESSION_ANSWER), tls=tls_server(certificates.leaf))
    proxy = ConnectProxy()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    client = Client()
    client.init(base_url=f"https://localhost:{api.port}", application_id=APP_ID, max_retries=0)
    try:
        assert client._exporter is not None
        assert isinstance(client._exporter.transport._backend, RequestsBackend)
        assert client.create_session(sync=True) == SESSION_ID
    finally:
        client.shutdown(1)
        proxy.close()
    assert proxy.tunnels == [b"localhost:%d" % api.port]


def test_tls_connections_are_kept_alive_and_checked_before_reuse(
    serve: Callable[..., RawServer], certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS (session tickets are not stray bytes) as well."""
    trust(monkeypatch, "SSL_CERT_FILE", certificates.ca)
    answers = iter([OK_EMPTY, OK_EMPTY, OK_EMPTY + OK_EMPTY])
    server = serve(
        lambda conn, request: conn.sendall(next(answers, OK_EMPTY)) or True,
        tls=tls_server(certificates.leaf),
    )
    pool = pool_for(server, "https")
    for _ in range(3):
        assert pool.post("/", b"", {}).status == 200
    assert server.connections == 1  # reused: nothing unread was taken for stray bytes
    pool.post("/", b"", {})
    assert server.connections == 2  # the third answer came with a stray one


# -- base_url: nothing rides into the request line --


@pytest.mark.parametrize(
    "url",
    [
        "https://layer.example.com/api?tenant=1",
        "https://layer.example.com/api?",
        "https://layer.example.com/api#part",
        "https://layer.example.com/a pi",
        "https://layer.example.com/api\tx",
        "https://layer.example.com/api\x00",
        "https://layer.example.com/\x7f",
        "https://layer.example.com/api\r\nX-Evil: 1",
        "https://bücher.example/api",
    ],
)
def test_a_base_url_that_would_corrupt_the_request_line_is_refused_at_init(url: str) -> None:
    """Query, fragment, whitespace, control characters: ValueError."""
    with pytest.raises(ValueError, match="base_url"):
        Client().init(base_url=url, application_id=APP_ID)


def test_userinfo_in_base_url_is_never_sent(serve: Callable[..., RawServer]) -> None:
    """User:password@ stays out of the request line and Host header."""
    server = serve(json_reply(SESSION_ANSWER))
    client = Client()
    client.init(base_url=f"http://user:s3cret@127.0.0.1:{server.port}/api/", application_id=APP_ID)
    try:
        client.create_session(sync=True)
    finally:
        client.shutdown(1)
    head = server.requests[0].split(b"\r\n\r\n")[0]
    assert head.startswith(
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port
    )
    assert b"s3cret" not in server.requests[0]


# -- redirects: never followed, a 3xx is a failure --


@pytest.mark.parametrize("status", [b"302 Found", b"307 Temporary Redirect"])
def test_the_requests_path_never_follows_redirects(
    serve: Callable[..., RawServer], make_client: Callable[..., Client], status: bytes
) -> None:
    """A user's http_session never re-posts elsewhere; 3xx fails."""
    elsewhere = serve(json_reply(SESSION_ANSWER))
    redirect = (
        b"HTTP/1.1 %s\r\nLocation: http://127.0.0.1:%d/v1/sessions\r\nContent-Length: 0\r\n\r\n"
        % (status, elsewhere.port)
    )
    api = serve(reply(redirect))
    client = make_client(base_url=f"http://127.0.0.1:{api.port}", http_session=requests.Session())
    with pytest.raises(LayerHTTPError) as raised:
        client.create_session(sync=True)
    assert raised.value.status_code == int(status[:3])
    client.create_session()
    assert not client.flush(5)
    stats = client.stats()
    assert (stats.sent, stats.failed) == (0, 1)
    assert elsewhere.requests == []  # nothing reached the other host
    assert len(api.requests) == 2  # and the 3xx was not retried


def test_the_sdk_s_own_client_fails_a_3xx_without_retrying(
    serve: Callable[..., RawServer], make_client: Callable[..., Client]
) -> None:
    """On the default path a 3xx is a LayerHTTPError, sent once."""
    api = serve(
        reply(b"HTTP/1.1 308 Permanent Redirect\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
    )
    client = make_client(base_url=f"http://127.0.0.1:{api.port}")
    with pytest.raises(LayerHTTPError) as raised:
        client.create_session(sync=True)
    assert raised.value.status_code == 308
    assert len(api.requests) == 1


@pytest.mark.parametrize("framing", ["content-length", "until-close"])
def test_the_requests_path_caps_answers_too(serve: Callable[..., RawServer], framing: str) -> None:
    """Through requests as well, a huge answer is refused."""
    big = b"z" * (2 * 1024 * 1024)
    if framing == "content-length":
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    else:
        answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + big
    server = serve(reply(answer, False))
    url = f"http://127.0.0.1:{server.port}"
    with pytest.raises(LayerRequestError, match="larger than 1048576"):
        RequestsBackend(requests.Session(), 2.0).post(url + "/v1/sessions", b"{}", {})


def test_the_requests_path_still_keeps_connections_alive(serve: Callable[..., RawServer]) -> None:
    """Reading answers up to the cap still returns the connection."""
    server = serve(json_reply(SESSION_ANSWER))
    url = f"http://127.0.0.1:{server.port}"
    backend = RequestsBackend(requests.Session(), 2.0)
    for _ in range(3):
        assert backend.post(url + "/v1/sessions", b"{}", {}).body == SESSION_ANSWER
    assert server.connections == 1


# -- the pipelined path, to the standard of the one-request path -------------------------

ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"


def listening(rcvbuf: int | None = None) -> socket.socket:
    """A listener on 127.0.0.1, with a small receive buffer if asked (set before listen)."""
    listener = socket.socket()
    if rcvbuf is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def test_a_reset_while_a_pipeline_is_written_keeps_the_answers_and_stops_pipelining(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server answers two requests, then closes with requests still arriving: the write
    fails with a reset. The answers that came are read and returned, the rest may go
    again at once (PipelineClosed), and the pool stops pipelining for that server."""
    connect = _http._open

    def small(host: str, port: int, deadline: float) -> socket.socket:
        sock = connect(host, port, deadline)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        return sock

    monkeypatch.setattr(_http, "_open", small)
    listener = listening(rcvbuf=32 * 1024)

    def serve_two() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            request = read_request(conn)
            assert request is not None
            assert read_request(conn, request[2]) is not None
            conn.sendall(ACCEPTED + ACCEPTED)
            time.sleep(0.2)  # the client reads them while it waits to write more
        # closed with requests unread: a reset

    threading.Thread(target=serve_two, daemon=True).start()
    pool = ConnectionPool(f"http://127.0.0.1:{listener.getsockname()[1]}", 5.0, 1)
    answers, error = pool.post_pipelined("/x", [(b"y" * 20_000, {})] * 40)
    listener.close()
    assert [answer.status for answer in answers] == [202, 202]
    assert isinstance(error, PipelineClosed)
    assert pool.pipelining is False


def test_one_deadline_covers_a_whole_pipeline() -> None:
    """Each answer of a pipeline does not get a timeout of its own: a server that answers
    twenty requests 0.2 s apart is cut off once the pipeline's 0.5 s are spent."""
    listener = listening()

    def slow() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            buffer = b""
            for _ in range(20):
                request = read_request(conn, buffer)
                assert request is not None
                buffer = request[2]
            for _ in range(20):
                time.sleep(0.2)
                conn.sendall(ACCEPTED)

    threading.Thread(target=slow, daemon=True).start()
    pool = ConnectionPool(f"http://127.0.0.1:{listener.getsockname()[1]}", 0.5, 1)
    answers, error = pool.post_pipelined("/x", [(b"{}", {})] * 20)
    listener.close()
    assert 1 <= len(answers) <= 3
    if len(answers) > 1:
        # It answers, slowly: the rest may go again, and it still pipelines.
        assert isinstance(error, PipelineClosed) and pool.pipelining is True


def test_bytes_after_the_last_pipelined_answer_make_every_answer_suspect(
    serve: Callable[..., RawServer],
) -> None:
    """One answer too many among three, from a server that echoes no request ID: the
    answers read after the first would each belong to the request before. Only the first
    answer on the new connection is returned (no stray answer can come before it), the
    connection is not reused, and the pool stops pipelining. (The four answers leave in
    one write once the three requests are in, so that the stray one is there when the
    third is read.)"""
    answers = iter([b"", b"", ACCEPTED * 4, OK_EMPTY])
    server = serve(lambda conn, request: conn.sendall(next(answers)) or True)
    pool = pool_for(server)
    read, error = pool.post_pipelined("/x", [(b"1", {}), (b"2", {}), (b"3", {})])
    assert [answer.status for answer in read] == [202]
    assert isinstance(error, PipelineClosed)
    assert pool.pipelining is False
    assert pool.post("/x", b"4", {}).status == 200  # its own answer, on a new connection
    assert server.connections == 2


def request_id(request: bytes) -> bytes:
    """The X-Request-Id of a raw request."""
    found = re.search(rb"\r\nX-Request-Id: ([^\r]*)\r\n", request)
    assert found is not None
    return found[1]


def echoing(status: int, request: bytes) -> bytes:
    """An answer that carries the request's X-Request-Id back."""
    rid = request_id(request)
    return b"HTTP/1.1 %d X\r\nX-Request-Id: %s\r\nContent-Length: 2\r\n\r\n{}" % (status, rid)


def one_too_many(after: int, seconds: float, echo: bool) -> Answerer:
    """A server that answers each request ``seconds`` after the one before (as a real
    server takes its time), writes an answer no request asked for right after answer
    number ``after``, and answers the last request 503. With ``echo``, each true answer
    carries its request's X-Request-Id."""

    def answer(conn: socket.socket, request: bytes) -> bool:
        number = int(request.rsplit(b"\r\n\r\n", 1)[1])
        time.sleep(seconds)  # the server's work on this request
        status = 503 if number == 5 else 202
        true = echoing(status, request) if echo else raw_answer(status)
        conn.sendall(true + (ACCEPTED if number == after else b""))
        return True

    return answer


def raw_answer(status: int) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\n{}" % status


def numbered(count: int) -> list[tuple[bytes, dict[str, str]]]:
    """Requests 1 to ``count``, each with a request ID of its own."""
    return [(b"%d" % n, {"X-Request-Id": f"id-{n}"}) for n in range(1, count + 1)]


@pytest.mark.parametrize("after", [1, 2, 4])
def test_an_answer_out_of_step_from_a_server_that_echoes_request_ids_is_never_trusted(
    serve: Callable[..., RawServer], after: int
) -> None:
    """A server that echoes each request's ID writes an answer too many after answer
    ``after`` of five, and takes 20 ms per answer: the true last answer (a 503) is still
    on its way when five answers have been read. The stray answer carries no ID, so the
    answer after it carries another request's: out of step; or, the stray being the last
    read, the true last answer comes in the quiet after it. Either way the answers
    before it are returned, none after it, the connection is not reused, and pipelining
    stops."""
    server = serve(one_too_many(after, 0.02, echo=True))
    pool = ConnectionPool(f"http://127.0.0.1:{server.port}", 5.0, 4, echo="X-Request-Id")
    read, error = pool.post_pipelined("/x", numbered(5))
    assert [answer.headers["x-request-id"] for answer in read] == [
        f"id-{n}" for n in range(1, after + 1)
    ]
    assert isinstance(error, PipelineClosed)
    if after < 4:
        assert "did not carry its request's X-Request-Id" in str(error)
    else:
        assert "bytes came after the last of 5 answers" in str(error)
    assert pool.pipelining is False and pool.echoes is True
    answer = pool.post("/x", b"9", {"X-Request-Id": "id-9"})  # a new connection
    assert answer.headers["x-request-id"] == "id-9"
    assert server.connections == 2


def test_a_stray_answer_from_a_server_that_echoes_nothing_is_seen_in_the_quiet_after_the_pipeline(
    serve: Callable[..., RawServer],
) -> None:
    """The same server echoing nothing, 100 ms per answer: the answers are trusted only
    once nothing more came for twice the longest gap between them. The true last answer
    comes in that time: only the first answer (on a new connection, it is its request's)
    is returned, and pipelining stops."""
    server = serve(one_too_many(2, 0.1, echo=False))
    pool = ConnectionPool(f"http://127.0.0.1:{server.port}", 5.0, 4, echo="X-Request-Id")
    read, error = pool.post_pipelined("/x", numbered(5))
    assert [answer.status for answer in read] == [202]
    assert isinstance(error, PipelineClosed)
    assert pool.pipelining is False and pool.echoes is False


def test_a_pipeline_of_a_server_that_echoes_nothing_is_trusted_after_a_quiet_moment(
    serve: Callable[..., RawServer],
) -> None:
    """Nothing after the last answer: all are returned, the connection is kept, and the
    pool goes on pipelining."""
    server = serve(reply(ACCEPTED))
    pool = ConnectionPool(f"http://127.0.0.1:{server.port}", 5.0, 4, echo="X-Request-Id")
    read, error = pool.post_pipelined("/x", numbered(5))
    assert ([answer.status for answer in read], error) == ([202] * 5, None)
    assert pool.pipelining is True
    assert pool.post("/x", b"6", {}).status == 202
    assert server.connections == 1


def test_a_late_stray_answer_on_a_kept_alive_connection_is_not_taken_for_the_next_request_s(
    serve: Callable[..., RawServer],
) -> None:
    """A server that echoes request IDs writes an answer too many for the first request
    once the second has arrived (so the idle check cannot see it): the second request
    reads an answer without its ID, and goes once more on a new connection, whose first
    answer is its own."""

    def answer(conn: socket.socket, request: bytes) -> bool:
        late_stray = b"HTTP/1.1 400 X\r\nContent-Length: 2\r\n\r\n{}"
        if request_id(request) == b"id-2" and server.connections == 1:
            conn.sendall(late_stray)
            time.sleep(0.05)  # its true answer comes after the stray one
        conn.sendall(echoing(202, request))
        return True

    server = serve(answer)
    pool = ConnectionPool(f"http://127.0.0.1:{server.port}", 5.0, 4, echo="X-Request-Id")
    assert pool.post("/x", b"1", {"X-Request-Id": "id-1"}).status == 202
    second = pool.post("/x", b"2", {"X-Request-Id": "id-2"})
    assert (second.status, second.headers["x-request-id"]) == (202, "id-2")
    assert server.connections == 2
    assert [request_id(request) for request in server.requests] == [b"id-1", b"id-2", b"id-2"]


def test_a_proxy_s_own_answer_without_the_request_id_is_its_request_s(
    serve: Callable[..., RawServer],
) -> None:
    """A server that echoes request IDs, behind a proxy that answers some requests itself
    (a 503 without the ID), on one kept-alive connection: the proxy's answer is taken as
    its request's once nothing more came after it, and the connection is used on; a
    request is sent once."""
    answers = iter(
        [
            echoing(202, b"\r\nX-Request-Id: id-1\r\n"),
            raw_answer(503),
            echoing(202, b"\r\nX-Request-Id: id-3\r\n"),
        ]
    )
    server = serve(lambda conn, request: conn.sendall(next(answers)) or True)
    pool = ConnectionPool(f"http://127.0.0.1:{server.port}", 5.0, 4, echo="X-Request-Id")
    assert pool.post("/x", b"1", {"X-Request-Id": "id-1"}).status == 202
    assert pool.echoes is True
    assert pool.post("/x", b"2", {"X-Request-Id": "id-2"}).status == 503
    assert pool.post("/x", b"3", {"X-Request-Id": "id-3"}).status == 202
    assert [request_id(request) for request in server.requests] == [b"id-1", b"id-2", b"id-3"]
    assert server.connections == 1


def test_a_proxy_s_own_answer_in_a_pipeline_keeps_pipelining_on(
    serve: Callable[..., RawServer],
) -> None:
    """The same in a pipeline of three: the middle answer, a proxy's 503 without the ID,
    is its request's (the answer after it carries its own); all three are returned and
    the pool goes on pipelining."""
    server = serve(
        lambda conn, request: (
            conn.sendall(
                raw_answer(503) if request_id(request) == b"id-2" else echoing(202, request)
            )
            or True
        )
    )
    pool = ConnectionPool(f"http://127.0.0.1:{server.port}", 5.0, 4, echo="X-Request-Id")
    read, error = pool.post_pipelined("/x", numbered(3))
    assert ([answer.status for answer in read], error) == ([202, 503, 202], None)
    assert pool.pipelining is True


def test_a_stale_kept_alive_connection_is_replaced_once_for_a_pipeline(
    serve: Callable[..., RawServer],
) -> None:
    """As for one request: a kept-alive connection that the server closes as it is reused
    fails before any byte of an answer; the pipeline goes once more on a new connection,
    within the same deadline, and pipelining stays on."""

    def answer(conn: socket.socket, request: bytes) -> bool:
        if len(server.requests) == 2:
            return False  # closes as the connection is reused, without a word
        conn.sendall(OK_EMPTY)
        return True

    server = serve(answer)
    pool = pool_for(server)
    pool.post("/", b"1", {})  # kept alive
    answers, error = pool.post_pipelined("/", [(b"2", {}), (b"3", {})])
    assert (error, [answer.status for answer in answers]) == (None, [200, 200])
    assert pool.pipelining is True
    assert server.connections == 2


def test_a_server_that_ends_connections_after_some_answers_keeps_being_pipelined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A limit of requests per connection (nginx's keepalive_requests): the third answer
    says "Connection: close" and the server closes while the pipeline is still written.
    The three answers are kept, the rest may go again at once, and pipelining stays on:
    the server does pipeline."""
    connect = _http._open

    def small(host: str, port: int, deadline: float) -> socket.socket:
        sock = connect(host, port, deadline)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        return sock

    monkeypatch.setattr(_http, "_open", small)
    listener = listening(rcvbuf=32 * 1024)
    last = b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"

    def serve_three() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            buffer = b""
            for _ in range(3):
                request = read_request(conn, buffer)
                assert request is not None
                buffer = request[2]
            conn.sendall(ACCEPTED + ACCEPTED + last)
            time.sleep(0.2)  # the client reads them while it waits to write more
        # closed with requests unread

    threading.Thread(target=serve_three, daemon=True).start()
    pool = ConnectionPool(f"http://127.0.0.1:{listener.getsockname()[1]}", 5.0, 1)
    answers, error = pool.post_pipelined("/x", [(b"y" * 20_000, {})] * 40)
    listener.close()
    assert [answer.status for answer in answers] == [202, 202, 202]
    assert isinstance(error, PipelineClosed)
    assert pool.pipelining is True
