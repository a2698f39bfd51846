"""An application that reports through a spool, run as its own process by test_spool.py.

``python tests/spool_app.py URL DIR TAG [options]`` initializes a client with
``spool_dir=DIR`` against ``URL`` and appends sessions (a create and three
actions, each action's data naming it ``TAG-<session>-<action>``) and, for each,
an action of a session that lasts (``TAG-<session>-lasting``), printing
``<name> <time.time()>`` once each append has returned, then ``ready`` lines
as it goes:

- ``ready <pid>`` once ``init()`` returned;
- ``written`` once every event it appended is in its spool (``--sessions N``);
- ``stats <json>`` when it ends on its own.

With ``--sessions N`` it then waits until its stdin closes, flushes, shuts down
and prints its stats; without, it appends until it is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import msgspec

from layer_sdk import Client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("directory")
    parser.add_argument("tag")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--pause", type=float, default=0.001)
    parser.add_argument("--flush-interval", type=float, default=0.5)
    parser.add_argument("--max-retry-time", type=float, default=None)
    args = parser.parse_args()

    client = Client()
    options = {} if args.max_retry_time is None else {"max_retry_time": args.max_retry_time}
    client.init(
        base_url=args.url,
        application_id="0c7f6b4e-2f39-4d1b-9a55-6b1f0f0a1d2e",
        spool_dir=args.directory,
        flush_interval=args.flush_interval,
        shutdown_timeout=5.0,
        **options,
    )
    print("ready", os.getpid(), flush=True)
    # A session that lasts: its actions go one request each (pipelined), not merged.
    lasting = client.create_session(attributes={"tag": args.tag})
    n = 0
    while args.sessions is None or n < args.sessions:
        session_id = client.create_session(attributes={"tag": args.tag})
        for action in range(3):
            name = f"{args.tag}-{n}-{action}"
            client.append_action(session_id, kind="completion_prompt", data={"n": name})
            print(name, time.time(), flush=True)
        name = f"{args.tag}-{n}-lasting"
        client.append_action(lasting, kind="completion_prompt", data={"n": name})
        print(name, time.time(), flush=True)
        n += 1
        time.sleep(args.pause)
    appended = 1 + 5 * n
    deadline = time.monotonic() + 30
    while written(client) < appended:
        if time.monotonic() > deadline:
            sys.exit("not written within 30 s")
        time.sleep(0.01)
    print("written", flush=True)
    sys.stdin.read()  # until the test closes it (or kills this process)
    client.flush(timeout=20)
    client.shutdown()
    print("stats", json.dumps(msgspec.to_builtins(client.stats())), flush=True)


def written(client: Client) -> int:
    """Its own events written to its spool (or delivered): not those it replays."""
    stats = client.stats()
    return stats.spooled + stats.sent - stats.replayed


if __name__ == "__main__":
    main()
