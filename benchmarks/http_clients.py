"""CPU per request of the SDK's own HTTP/1.1 client beside http.client, h11, urllib3 and requests.

    python benchmarks/http_clients.py [--requests N] [--reps R] [--write] [--compare-with DIR]

Why the SDK carries its own client (``layer_sdk/_export/_http.py``): the exporter's CPU
per event is dominated by its requests, and actions of a session already
created travel one per request. This measures what each client costs the
process for one keep-alive ``POST`` of a typical action (736 bytes of JSON)
and the read of its answer.

Every client talks to the same server: a ``LocalCollector`` in its own process
(``_server.py``), so that the server's CPU is never counted. Each repetition
runs every client in turn (round robin, so that the machine's load falls on
all alike): 200 warm-up requests, then N timed ones on one kept-alive
connection. CPU is ``getrusage`` of this process (user + system; it has no
other threads), divided by N. The table gives the median across repetitions,
the lowest repetition, and the wall time per request for reference.
``--write`` also puts the table in ``benchmarks/RESULTS.md``, between its
``http_clients`` markers. ``--compare-with DIR`` adds the ``_http`` module of
another checkout (e.g. ``main``) as one more client, measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from _cases import ATTRIBUTES, DATA, KIND, ROOT, SESSION_ATTRIBUTES, Server, cpu_seconds

sys.path.insert(0, str(ROOT))  # the work tree's layer_sdk, not an installed one

from layer_sdk._export._http import ConnectionPool

HERE = Path(__file__).resolve().parent
MARK_BEGIN = "<!-- http_clients: begin -->"
MARK_END = "<!-- http_clients: end -->"
WARMUP = 200

Post = Callable[[], int]
"""Sends the prepared request once; returns the answer's status."""


def our_client(url: str, path: str, body: bytes, headers: dict[str, str]) -> Post:
    pool = ConnectionPool(url, timeout=10.0, max_idle=1)
    return lambda: pool.post(path, body, headers).status


def other_checkout(folder: Path) -> Callable[[str, str, bytes, dict[str, str]], Post]:
    """``our_client`` with the ``layer_sdk/_export/_http.py`` of another checkout."""
    spec = importlib.util.spec_from_file_location(
        "_other_http", folder / "layer_sdk" / "_export" / "_http.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def client(url: str, path: str, body: bytes, headers: dict[str, str]) -> Post:
        pool = module.ConnectionPool(url, timeout=10.0, max_idle=1)
        return lambda: pool.post(path, body, headers).status  # type: ignore[no-any-return]

    return client


def http_client(url: str, path: str, body: bytes, headers: dict[str, str]) -> Post:
    import http.client

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10.0)

    def post() -> int:
        connection.request("POST", path, body, headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status

    return post


def h11_client(url: str, path: str, body: bytes, headers: dict[str, str]) -> Post:
    import h11

    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fields = [("Host", parts.netloc), *headers.items(), ("Content-Length", str(len(body)))]
    connection = h11.Connection(h11.CLIENT)

    def post() -> int:
        sock.sendall(
            connection.send(h11.Request(method="POST", target=path, headers=fields))
            + connection.send(h11.Data(data=body))
            + connection.send(h11.EndOfMessage())
        )
        status = 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
        connection.start_next_cycle()
        return status

    return post


def urllib3_client(url: str, path: str, body: bytes, headers: dict[str, str]) -> Post:
    import urllib3

    manager = urllib3.PoolManager(maxsize=1, timeout=10.0)
    full = url + path
    return lambda: manager.request("POST", full, body=body, headers=headers).status


def requests_client(url: str, path: str, body: bytes, headers: dict[str, str]) -> Post:
    import requests

    session = requests.Session()
    full = url + path
    return lambda: session.post(full, data=body, headers=headers, timeout=10.0).status_code


CLIENTS: dict[str, Callable[[str, str, bytes, dict[str, str]], Post]] = {
    "layer-sdk `_http`": our_client,
    "`http.client`": http_client,
    "h11 (raw socket)": h11_client,
    "urllib3 `PoolManager`": urllib3_client,
    "requests `Session`": requests_client,
}


def prepare(server: Server) -> tuple[str, bytes]:
    """Create a session on the server; the path and body of one typical action for it."""
    session_id = str(uuid.uuid5(uuid.NAMESPACE_URL, os.urandom(8).hex()))
    session = {
        "application_id": "benchmark-app",
        "session_id": session_id,
        "attributes": SESSION_ATTRIBUTES,
    }
    pool = ConnectionPool(server.url, timeout=10.0, max_idle=1)
    created = pool.post("/v1/sessions", msgspec.json.encode(session), HEADERS)
    pool.close()
    if created.status // 100 != 2:
        raise RuntimeError(f"could not create the session: {created.status} {created.body!r}")
    now = datetime.datetime.now(datetime.timezone.utc)
    action = {"kind": KIND, "start_time": now, "end_time": now, "attributes": ATTRIBUTES}
    action["data"] = DATA
    return f"/v1/sessions/{session_id}/actions", msgspec.json.encode(action)


HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "layer-sdk-python/benchmark",
    "X-Request-Id": "0" * 32,
}


def measure(post: Post, requests: int) -> tuple[float, float]:
    """CPU and wall µs per request over ``requests`` requests, after a warm-up."""
    for _ in range(WARMUP):
        post()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for _ in range(requests):
        status = post()
        if status // 100 != 2:
            raise RuntimeError(f"the server answered {status}")
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    return cpu / requests * 1e6, wall / requests * 1e6


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report(figures: dict[str, list[tuple[float, float]]], options: argparse.Namespace) -> str:
    ours = statistics.median(cpu for cpu, _ in figures["layer-sdk `_http`"])
    lines = [
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"1-minute load average {os.getloadavg()[0]:.2f} at the end",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); "
        f"h11 {version('h11')}, urllib3 {version('urllib3')}, requests {version('requests')}",
        f"- {options.reps} repetitions of {options.requests:,} requests per client, "
        f"run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        "| client | CPU per request (median) | lowest repetition | vs layer-sdk "
        "| wall per request (median) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, runs in figures.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        lowest = min(c for c, _ in runs)
        lines.append(
            f"| {name} | {cpu:.1f} µs | {lowest:.1f} µs | {cpu / ours:.1f}x | {wall:.0f} µs |"
        )
    return "\n".join(lines)


def write_results(text: str) -> None:
    """Replace the section between the markers of RESULTS.md (appended when missing)."""
    results = HERE / "RESULTS.md"
    current = results.read_text()
    section = (
        f"{MARK_BEGIN}\n## HTTP clients: CPU per request\n\n"
        f"`python benchmarks/http_clients.py --write` (see `benchmarks/README.md`).\n\n"
        f"{text}\n{MARK_END}"
    )
    if MARK_BEGIN in current and MARK_END in current:
        head, _, rest = current.partition(MARK_BEGIN)
        _, _, tail = rest.partition(MARK_END)
        current = f"{head}{section}{tail}"
    else:
        current = f"{current.rstrip()}\n\n{section}\n"
    results.write_text(current)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000, help="timed requests per run")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per client")
    parser.add_argument("--client", action="append", choices=CLIENTS, help="only these")
    parser.add_argument("--write", action="store_true", help="save to benchmarks/RESULTS.md")
    parser.add_argument("--compare-with", type=Path, help="another checkout's _http as well")
    options = parser.parse_args()
    names = options.client or list(CLIENTS)
    if "layer-sdk `_http`" not in names:
        names.insert(0, "layer-sdk `_http`")
    if options.compare_with:
        name = f"layer-sdk `_http` of {options.compare_with}"
        CLIENTS[name] = other_checkout(options.compare_with)
        names.insert(1, name)
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with Server() as server:
        for rep in range(options.reps):
            for name in names:
                server.command("clear")  # the server keeps what it receives: bound its memory
                path, body = prepare(server)
                post = CLIENTS[name](server.url, path, body, HEADERS)
                figures[name].append(measure(post, options.requests))
            print(f"repetition {rep + 1}/{options.reps} done", file=sys.stderr)
    text = report(figures, options)
    print(text)
    if options.write:
        write_results(text)
        print(f"\nsaved to {HERE / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
