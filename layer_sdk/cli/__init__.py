"""``layer-sdk`` / ``python -m layer_sdk``: the command line.

- ``collector``: the local collector on a port, printing what it receives.
- ``demo``: see the SDK work against an embedded collector, no account needed.
- ``check``: is this machine set up to report to Layer? If not, why not?
- ``spool``: what a spool directory holds (events waiting, their age, whose), or
  ``--purge`` to empty it.

``layer-sdk --version`` prints the version; ``layer-sdk`` alone prints the help.

With the ``cli`` extra (``pip install -e '.[cli]'`` in a checkout, which brings rich),
output to a terminal has a progress bar, tables and colours; without it, or
when the output is not a terminal, it is plain text. The SDK itself never
imports rich.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

from .._version import DISTRIBUTION, __version__


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of bytes, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def version() -> str:
    """What ``layer-sdk --version`` prints."""
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"layer-sdk {__version__} (distribution {DISTRIBUTION}, {python})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``layer-sdk`` command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="layer-sdk", description="The Layer SDK's command line.")
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    collector = commands.add_parser(
        "collector",
        help="run the local collector and print what it receives",
        description="Run a local stand-in for the Layer API and print each session and action"
        " as it arrives. SIGINT (Ctrl-C) or SIGTERM stops it.",
    )
    collector.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    collector.add_argument(
        "--port", type=int, default=8080, help="default 8080; 0 picks a free port"
    )
    collector.add_argument("--json", action="store_true", help="one JSON object per line")
    collector.add_argument(
        "--db", metavar="FILE", help="keep everything in this SQLite file, across restarts"
    )
    collector.add_argument(
        "--fail-rate",
        type=_fraction,
        default=0.0,
        metavar="R",
        help="answer this fraction of requests with 503 (0 to 1)",
    )
    collector.add_argument(
        "--latency", type=_seconds, default=0.0, metavar="SECONDS", help="delay every answer"
    )
    collector.add_argument(
        "--max-body-bytes",
        type=_bytes,
        default=None,
        metavar="N",
        help="refuse a larger request body with 413 (default 8 MiB; 0: no limit)",
    )
    collector.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="answer requests for this host name too (repeatable; see docs/collector.md)",
    )

    demo = commands.add_parser("demo", help="report a simulated workload and show the result")
    demo.add_argument(
        "--sessions", type=_positive_int, default=2_000, help="sessions (default 2000)"
    )
    demo.add_argument(
        "--threads", type=_positive_int, default=4, help="producer threads (default 4)"
    )
    demo.add_argument("--base-url", help="a real Layer API instead of the embedded collector")
    demo.add_argument("--application-id", default="layer-sdk-demo")

    check = commands.add_parser("check", help="check the configuration and reach the API")
    check.add_argument("--base-url", help="default: LAYER_BASE_URL")
    check.add_argument("--application-id", help="default: LAYER_APPLICATION_ID")
    check.add_argument("--application-name", help="default: LAYER_APPLICATION_NAME")
    check.add_argument("--environment", help="default: LAYER_ENVIRONMENT")
    check.add_argument("--timeout", type=float, help="seconds; default: LAYER_TIMEOUT or 10")
    check.add_argument(
        "--firewall-base-url", help="default: LAYER_FIREWALL_BASE_URL (checked when set)"
    )

    spool = commands.add_parser(
        "spool",
        help="show what a spool directory holds, or empty it",
        description="Show what waits in a spool directory (init(spool_dir=...)): events,"
        " bytes, the oldest's age, and whether the process that holds each file lives."
        " --purge deletes what it holds, except the files of live processes.",
    )
    spool.add_argument("--dir", metavar="DIR", help="default: LAYER_SPOOL_DIR")
    spool.add_argument(
        "--purge", action="store_true", help="delete the events it holds (never sent)"
    )
    spool.add_argument(
        "--force",
        action="store_true",
        help="with --purge: delete the files of live processes too",
    )

    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "collector":
        from ._collector import collector as run_collector

        return run_collector(
            args.host,
            args.port,
            as_json=args.json,
            db=args.db,
            fail_rate=args.fail_rate,
            latency=args.latency,
            allowed_hosts=args.allow_host,
            max_body_bytes=args.max_body_bytes,
        )
    if args.command == "spool":
        from ._spool import spool as run_spool

        return run_spool(args.dir, purge_it=args.purge, force=args.force)
    if args.command == "demo":
        from ._demo import demo as run_demo

        return run_demo(args.sessions, args.threads, args.base_url, args.application_id)
    from ._check import check as run_check

    return run_check(
        {
            "base_url": args.base_url,
            "application_id": args.application_id,
            "application_name": args.application_name,
            "environment": args.environment,
            "http_timeout": args.timeout,
            "firewall_base_url": args.firewall_base_url,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
