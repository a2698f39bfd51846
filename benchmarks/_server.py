"""A LocalCollector in its own process, driven by line commands on stdin.

The benchmarks run the server here, apart from the process under test, so that
the server's CPU time is never counted as the SDK's. Start it as::

    python benchmarks/_server.py [--delay SECONDS] [--hang]

It prints its base URL as the first line of stdout, then answers one line per
command read from stdin:

========== ===============================================================
``count``  events stored so far (sessions + actions), counted by the server
``requests`` requests read so far
``cpu``    this process's CPU seconds so far (user + system)
``clear``  forget everything received (``ok``)
``delay S`` every request waits S seconds before its answer (``ok``)
``hang``   hold every request from now on (``ok``)
``release`` let held requests go on (``ok``)
``fail S STATUS [RA]`` answer STATUS to every request for S seconds, with
           ``Retry-After: RA`` when given (``ok``)
``rate F`` answer 503 to a fraction F of the requests, at random (``ok``)
``echo off`` answer without the request's ``X-Request-Id`` from now on (``ok``;
           ``echo on`` again)
``order``  ``yes`` when every session's actions were stored in the order of
           their ``data["n"]``, else ``no``
``quit``   stop the server and exit (``ok``)
========== ===============================================================

End of input means ``quit``, so the server never outlives the process that
started it.
"""

from __future__ import annotations

import argparse
import os
import sys

from layer_sdk.collector import LocalCollector


def _answer(collector: LocalCollector, line: str) -> str | None:
    """The reply to one command line; None means quit."""
    command, _, argument = line.strip().partition(" ")
    if command == "count":
        return str(collector.event_count)
    if command == "requests":
        return str(len(collector.requests))
    if command == "order":
        by_session: dict[str, list[int]] = {}
        for session in collector.sessions:
            numbers = [a["data"].get("n") for a in session["actions"] if "n" in a["data"]]
            by_session[session["session_id"]] = numbers
        return "yes" if all(n == sorted(n) for n in by_session.values()) else "no"
    if command == "cpu":
        times = os.times()
        return f"{times.user + times.system:.6f}"
    if command == "clear":
        collector.clear()
    elif command == "delay":
        collector.delay = float(argument)
    elif command == "hang":
        collector.hang()
    elif command == "release":
        collector.release()
    elif command == "fail":
        seconds, status, *retry_after = argument.split()
        collector.fail_for(
            float(seconds), int(status), retry_after=float(retry_after[0]) if retry_after else None
        )
    elif command == "rate":
        collector.fail_rate = float(argument)
    elif command == "echo" and argument in ("on", "off"):
        collector.echo_request_ids = argument == "on"
    elif command == "quit":
        return None
    else:
        return f"error: unknown command {command!r}"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--hang", action="store_true", help="hold every request")
    options = parser.parse_args()

    collector = LocalCollector().start()
    collector.delay = options.delay
    if options.hang:
        collector.hang()
    print(collector.url, flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            reply = _answer(collector, line)
            if reply is None:
                print("ok", flush=True)
                break
            print(reply, flush=True)
    finally:
        collector.stop()


if __name__ == "__main__":
    main()
