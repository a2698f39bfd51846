"""Long sessions: a session's actions are pipelined on one connection, in order.

A session the server already knows gets its waiting actions written on one
kept-alive connection before their answers are read (HTTP/1.1 pipelining), so
that one session is not capped at one action per round trip. These tests pin
the order at the server, what happens when a pipeline breaks, a server that
refuses pipelining, failures in the middle of a pipeline, and the off switch.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from layer_sdk import Client
from layer_sdk.collector import LocalCollector

from .helpers import PROMPT, MakeClient, TCPServer, read_request, wait_until


def long_session(client: Client, actions: int) -> str:
    """A session the server knows (flushed), then ``actions`` actions appended at once."""
    session_id = client.create_session()
    assert client.flush(10) is True
    for n in range(actions):
        client.append_action(session_id, kind=PROMPT, data={"n": n})
    return session_id


def stored_order(collector: LocalCollector, session_id: str) -> list[int]:
    return [action["data"]["n"] for action in collector.actions(session_id)]


def overlapping(collector: LocalCollector) -> int:
    """How many action requests were read before the one before them was answered."""
    reads = [r.received_at for r in collector.requests if r.path.endswith("/actions")]
    delay = collector.delay
    return sum(later - earlier < delay / 2 for earlier, later in itertools.pairwise(reads))


def test_a_long_session_reaches_the_server_in_append_order(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Pipelined, and in the order appended."""
    client = make_client()
    collector.delay = 0.02
    session_id = long_session(client, 600)
    assert client.flush(30) is True
    assert stored_order(collector, session_id) == list(range(600))
    # Requests were on the wire together: most were read before the previous was answered.
    assert overlapping(collector) > 300
    stats = client.stats()
    assert (stats.sent, stats.failed, stats.retried) == (601, 0, 0)


def test_pipelining_can_be_turned_off(make_client: MakeClient, collector: LocalCollector) -> None:
    """``max_pipelined_requests=1`` sends one action per round trip, as before."""
    client = make_client(max_pipelined_requests=1)
    collector.delay = 0.02
    session_id = long_session(client, 20)
    assert client.flush(30) is True
    assert stored_order(collector, session_id) == list(range(20))
    assert overlapping(collector) == 0


def test_a_pipeline_broken_midway_resends_the_rest_with_the_same_request_ids(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """The connection closes after some answers; the unanswered rest is sent
    again with the same request IDs (the server can drop duplicates); none is lost."""
    client = make_client()
    session_id = long_session(client, 50)
    collector.drop_next(1, matching=b'"n":20}')
    assert client.flush(30) is True
    assert stored_order(collector, session_id) == list(range(50))
    unanswered = [r.headers["x-request-id"] for r in collector.requests if r.status == 0]
    assert len(unanswered) > 1, "the pipeline was not broken with requests after the drop"
    answered = Counter(r.headers["x-request-id"] for r in collector.requests if r.status == 202)
    assert all(answered[request_id] == 1 for request_id in unanswered)
    assert collector.duplicates == 0
    assert client.stats().failed == 0


def test_a_4xx_in_the_middle_of_a_pipeline_fails_only_that_action(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A refused action fails alone; those after it are delivered, in order."""
    client = make_client()
    session_id = long_session(client, 30)
    collector.fail_next(1, 400, matching=b'"n":10}')
    assert client.flush(30) is False
    assert stored_order(collector, session_id) == [n for n in range(30) if n != 10]
    stats = client.stats()
    assert stats.failed_by_reason == {"rejected": 1}
    assert stats.sent == 30  # the session and 29 actions


def test_a_5xx_in_the_middle_of_a_pipeline_is_retried_and_delivered_once(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """The server answered the actions after it already, so the retried one
    arrives after them (the trade-off of pipelining); every action arrives exactly once."""
    client = make_client()
    session_id = long_session(client, 30)
    collector.fail_next(1, 503, matching=b'"n":10}')
    assert client.flush(30) is True
    order = stored_order(collector, session_id)
    assert sorted(order) == list(range(30))
    assert [n for n in order if n != 10] == [n for n in range(30) if n != 10]
    stats = client.stats()
    assert (stats.sent, stats.failed, stats.retried) == (31, 0, 1)


class NoPipelining(TCPServer):
    """A server in front of the collector that will not pipeline. ``close``: it answers
    one request per connection, with ``Connection: close``. Otherwise it keeps the
    connection, but drops whatever arrived after the request it is answering (the
    classic bug of servers that do not expect pipelining): one at a time works."""

    def __init__(self, collector: LocalCollector, close: bool = True) -> None:
        self._collector = collector
        self._close = close
        self.requests_read = 0  # request lines received, whether forwarded or not
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        """Forward requests to the collector, one per read; their answers back."""
        with client, contextlib.suppress(OSError):
            client.settimeout(10)
            while (request := read_request(client)) is not None:
                head, body, rest = request
                self.requests_read += (head + body + rest).count(b"POST /")
                # Anything after this request in what was read is dropped.
                client.sendall(self._ask_collector(head + b"\r\nConnection: close", body))
                if self._close:
                    return

    def _ask_collector(self, head: bytes, body: bytes) -> bytes:
        # As a reverse proxy does, it names the server it forwards to in Host.
        port = self._collector.port
        head = re.sub(rb"(?im)^host:[^\r\n]*", b"Host: 127.0.0.1:%d" % port, head)
        with socket.create_connection(("127.0.0.1", port)) as upstream:
            upstream.settimeout(10)
            upstream.sendall(head + b"\r\n\r\n" + body)
            answer = b""
            while chunk := upstream.recv(65536):
                answer += chunk
        return answer if self._close else answer.replace(b"Connection: close\r\n", b"")


@pytest.fixture
def one_per_connection(collector: LocalCollector) -> Iterator[NoPipelining]:
    server = NoPipelining(collector)
    yield server
    server.close()


def test_a_server_that_refuses_pipelining_gets_one_request_at_a_time(
    make_client: MakeClient,
    collector: LocalCollector,
    one_per_connection: NoPipelining,
) -> None:
    """A server that closes after each answer: the SDK falls back to one
    request per round trip, and everything arrives once, in order."""
    client = make_client(base_url=one_per_connection.url)
    session_id = long_session(client, 40)
    assert client.flush(30) is True
    assert stored_order(collector, session_id) == list(range(40))
    assert collector.duplicates == 0
    # After the fallback one request per connection: few were written in vain (pipelining
    # on would write the remaining 39, then 38, ... on each new connection).
    assert one_per_connection.requests_read <= 2 * 41


def test_a_server_that_drops_pipelined_requests_gets_one_request_at_a_time(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A server that answers the first request of a pipeline and drops the
    others: after one http_timeout the SDK stops pipelining, and everything arrives
    once, in order."""
    server = NoPipelining(collector, close=False)
    try:
        client = make_client(base_url=server.url, http_timeout=0.5)
        session_id = long_session(client, 10)
        assert client.flush(30) is True
    finally:
        server.close()
    assert stored_order(collector, session_id) == list(range(10))
    assert collector.duplicates == 0


def test_answers_that_fill_the_socket_do_not_stall_a_pipeline_being_written() -> None:
    """A server that writes each answer before it reads the next request stops
    reading when its answers are not read; the client reads while it writes."""
    from layer_sdk._export._http import ConnectionPool

    answer = b"x" * 48 * 1024
    head = b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n" % len(answer)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    served: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with conn:
            conn.settimeout(10)
            buffer = b""
            while len(served) < 64:
                request = read_request(conn, buffer, 4096)
                assert request is not None
                buffer = request[2]
                conn.sendall(head + answer)  # before reading the next request
                served.append(1)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    pool = ConnectionPool(f"http://127.0.0.1:{listener.getsockname()[1]}", 5.0, 1)
    body = b"y" * 96 * 1024  # 6 MiB in all: more than the socket buffers hold
    answers, error = pool.post_pipelined("/v1/sessions/x/actions", [(body, {})] * 64)
    listener.close()
    assert error is None
    assert [a.status for a in answers] == [202] * 64
    assert all(a.body == answer for a in answers)


# -- the pipelined path keeps the rules of the one-request path -------------------------


def unreachable_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]


def pipelining(client: Client) -> bool:
    """Whether the client still pipelines (False once a server showed it does not)."""
    return bool(client._exporter.transport._backend._pool.pipelining)  # type: ignore[union-attr]


def long_session_of(client: Client, actions: int, size: int = 0) -> str:
    """``long_session`` with actions of about ``size`` bytes each."""
    session_id = client.create_session()
    assert client.flush(10) is True
    for n in range(actions):
        client.append_action(session_id, kind=PROMPT, data={"n": n, "pad": "x" * size})
    return session_id


@pytest.fixture
def small_socket_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's sockets get 32 KiB send buffers, as on a real network (loopback's are
    large enough to take a whole pipeline before the server answers)."""
    from layer_sdk._export import _http

    connect = _http._open

    def small(host: str, port: int, deadline: float) -> socket.socket:
        sock = connect(host, port, deadline)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        return sock

    monkeypatch.setattr(_http, "_open", small)


class ClosesAfter(NoPipelining):
    """Answers the first ``answers`` requests of each connection (from the collector),
    then closes it, whatever else was sent: with requests still arriving, the client's
    next write meets a reset. Its receive buffer is small, as on a real network, and its
    answers leave at once (TCP_NODELAY: none is held back when the reset goes)."""

    def __init__(self, collector: LocalCollector, answers: int) -> None:
        self._answers = answers
        super().__init__(collector, close=False)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)

    def handle(self, client: socket.socket) -> None:
        buffer = b""
        with client, contextlib.suppress(OSError):
            client.settimeout(10)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(self._answers):
                request = read_request(client, buffer)
                if request is None:
                    return
                head, body, buffer = request
                client.sendall(self._ask_collector(head + b"\r\nConnection: close", body))


@pytest.mark.parametrize("answers", [1, 2], ids=["one-per-connection", "two-per-connection"])
def test_a_server_that_closes_while_the_pipeline_is_written(
    make_client: MakeClient,
    collector: LocalCollector,
    small_socket_buffers: None,
    caplog: pytest.LogCaptureFixture,
    answers: int,
) -> None:
    """A gunicorn sync worker (or any HTTP/1.0-style backend) answers one request, then
    closes while the pipeline is still being written: the write fails with a reset. The
    answers that arrived are read first; a reset mid-write turns pipelining off, and the
    rest go one at a time, at once. Everything arrives once, in order, and the API is
    not taken as unreachable."""
    server = ClosesAfter(collector, answers)
    try:
        client = make_client(base_url=server.url)
        session_id = long_session_of(client, 40, size=20_000)
        assert client.flush(10) is True
    finally:
        server.close()
    assert stored_order(collector, session_id) == list(range(40))
    first = [r for r in collector.requests if r.json and r.json.get("data", {}).get("n") == 0]
    assert len(first) == 1, "the first action was processed more than once"
    assert not pipelining(client)
    stats = client.stats()
    assert (stats.sent, stats.failed, stats.queued) == (41, 0, 0)
    assert unreachable_warnings(caplog) == []


ANSWER_TOO_MANY = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize(
    ("echo", "resent"), [(True, 5), (False, 10)], ids=["echoing", "echoing-nothing"]
)
def test_an_answer_too_many_makes_the_pipeline_s_answers_suspect(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    echo: bool,
    resent: int,
) -> None:
    """A server writes one answer too many in a pipeline (after the 5th, in the same
    write): every answer after it would be read as the answer to the request before.
    From a server that echoes request IDs, the answer without its request's is out of
    step: the five before it are kept, the other five sent again one at a time; from one
    that echoes nothing, bytes left after the last answer make all ten suspect. Either
    way they go again with the same request IDs (nothing is stored twice), the refusal
    of the last action is counted as a refusal, and the connection is never reused (a
    later sync create gets its own answer)."""
    from .front_server import Act, Front

    def act(n: int, head: bytes, body: bytes) -> Act:
        return Act(after=ANSWER_TOO_MANY) if b'"n":4,' in body and n < 12 else Act()

    collector.echo_request_ids = echo
    front = Front(collector, act)
    collector.fail_next(5, 400, body=b'{"error":"action 9 refused"}', matching=b'"n":9,')
    try:
        client = make_client(base_url=front.url)
        session_id = long_session_of(client, 10)
        assert client.flush(10) is False  # one action was refused
        assert client.create_session(sync=True)  # its own answer, not a leftover 400
    finally:
        front.close()
    assert stored_order(collector, session_id) == list(range(9))
    assert client.stats().failed_by_reason == {"rejected": 1}

    def losses() -> list[str]:
        return [r.getMessage() for r in caplog.records if "lost 1 event" in r.getMessage()]

    assert wait_until(losses)  # logged by the sender, right after it resolved the request
    assert len(losses()) == 1 and "action 9 refused" in losses()[0]
    assert not pipelining(client)
    assert collector.duplicates == resent - 1  # resent with their IDs: none stored twice


@pytest.mark.parametrize(
    ("echo", "seconds"),
    [(True, 0.005), (True, 0.05), (False, 0.05)],
    ids=["echoing-5ms", "echoing-50ms", "echoing-nothing-50ms"],
)
@pytest.mark.parametrize("after", [0, 4, 8])
def test_an_answer_too_many_while_answers_take_their_time_loses_nothing(
    make_client: MakeClient, collector: LocalCollector, echo: bool, seconds: float, after: int
) -> None:
    """As a real server answers: each answer ``seconds`` after the one before. An answer
    too many after action ``after`` shifts the others by one, and the true answer of the
    last action (a 503: not stored) is still on its way when ten answers have been read.
    It is caught all the same: by the request IDs the answers carry back, or, from a
    server that echoes nothing, in the quiet moment the answers must leave after the
    last one. Every action is stored, none is counted as sent that was not, and a sync
    call afterwards gets its own answer."""
    from .front_server import Act, Front

    done: list[int] = []

    def act(n: int, head: bytes, body: bytes) -> Act:
        if f'"n":{after},'.encode() in body and not done:
            done.append(n)
            return Act(after=ANSWER_TOO_MANY)
        return Act()

    collector.echo_request_ids = echo
    front = Front(collector, act)
    try:
        client = make_client(base_url=front.url)
        session_id = long_session_of(client, 10)
        collector.delay = seconds
        collector.fail_next(1, 503, body=b'{"error":"try later"}', matching=b'"n":9,')
        assert client.flush(10) is True
        assert client.create_session(sync=True)
    finally:
        front.close()
    assert stored_order(collector, session_id) == list(range(10))
    stats = client.stats()
    assert (stats.sent, stats.failed, stats.queued) == (11, 0, 0)  # the create, 10 actions
    assert not pipelining(client)


@pytest.mark.parametrize("every", [1, 3])
def test_a_framing_error_after_the_first_answer_turns_pipelining_off_and_is_no_outage(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    every: int,
) -> None:
    """A server that writes a stray CRLF after every answer (or every third): one request
    at a time it works (the stray bytes spoil only that connection); pipelined, the
    answer after it is malformed. A protocol error after an answer turns pipelining off
    and the rest go one at a time at once; it is not an outage."""
    from .front_server import Act, Front

    def act(n: int, head: bytes, body: bytes) -> Act:
        return Act(after=b"\r\n") if n % every == every - 1 else Act()

    front = Front(collector, act)
    try:
        client = make_client(base_url=front.url)
        session_id = long_session_of(client, 30)
        assert client.flush(10) is True
    finally:
        front.close()
    assert stored_order(collector, session_id) == list(range(30))
    assert not pipelining(client)
    assert front.requests_read <= 1 + 30 + 29  # the create, the pipeline, the rest once
    assert client.stats().failed == 0
    assert unreachable_warnings(caplog) == []


def test_shutdown_ends_a_pipeline_waiting_for_its_answers(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A sender waiting for a hung server's answers (http_timeout=30) is released by
    shutdown(): the connection in use is closed, and the sender exits at once."""
    client = make_client(http_timeout=30)
    session_id = long_session(client, 0)
    collector.hang()
    try:
        for n in range(20):
            client.append_action(session_id, kind=PROMPT, data={"n": n})
        assert collector.wait_for(lambda c: c.unanswered >= 20)
        senders = list(client._exporter.worker._senders)  # type: ignore[union-attr]
        assert client.shutdown(timeout=0.5) is False
        for sender in senders:
            sender.join(3)
        assert not any(sender.is_alive() for sender in senders)
    finally:
        collector.release()
    assert client.stats().failed_by_reason == {"shutdown": 20}
