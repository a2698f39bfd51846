"""The SDK's own HTTP/1.1 client, against raw servers that answer in every legal framing."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from layer_sdk import Client
from layer_sdk._http import ConnectionPool, ProtocolError, RemoteDisconnected
from layer_sdk._transport import _DirectBackend, _RequestsBackend
from layer_sdk.collector import LocalCollector

from .conftest import APP_ID

Answerer = Callable[[socket.socket, bytes], bool]
"""Gets the connection and one request; answers it; returns False to close the connection."""


class RawServer:
    """A TCP server on 127.0.0.1 whose answers a test writes byte by byte."""

    def __init__(self, answer: Answerer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                if not self.answer(conn, self.requests[-1]):
                    return

    def close(self) -> None:
        self._listener.close()


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
        b"Content-Length: 7\r\n\r\n{\"a\":1}" % server.port
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
    assert isinstance(client._exporter.transport._backend, _RequestsBackend)
    client.shutdown(0)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client.init(base_url=collector.url, application_id=APP_ID)
    assert isinstance(client._exporter.transport._backend, _DirectBackend)
    client.shutdown(0)
