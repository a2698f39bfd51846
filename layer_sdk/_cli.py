"""``layer-sdk`` / ``python -m layer_sdk``: the command line.

- ``demo``: see the SDK work against an embedded collector, no account needed.
- ``check``: is this machine set up to report to Layer? If not, why not?
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``layer-sdk`` command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="layer-sdk", description="The Layer SDK's command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="report a simulated workload and show the result")
    demo.add_argument("--sessions", type=int, default=2_000, help="sessions (default 2000)")
    demo.add_argument("--threads", type=int, default=4, help="producer threads (default 4)")
    demo.add_argument("--base-url", help="a real Layer API instead of the embedded collector")
    demo.add_argument("--application-id", default="layer-sdk-demo")

    check = commands.add_parser("check", help="check the configuration and reach the API")
    check.add_argument("--base-url", help="default: LAYER_BASE_URL")
    check.add_argument("--application-id", help="default: LAYER_APPLICATION_ID")
    check.add_argument("--environment", help="default: LAYER_ENVIRONMENT")
    check.add_argument("--timeout", type=float, help="seconds; default: LAYER_TIMEOUT or 10")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._cli_demo import demo as run_demo

        return run_demo(args.sessions, args.threads, args.base_url, args.application_id)
    from ._cli_check import check as run_check

    return run_check(args.base_url, args.application_id, args.environment, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
