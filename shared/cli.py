"""The `push-server` command line: one subcommand per process kind or operation."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Callable, Sequence

# Each subcommand lives in the module that owns it. Imports are lazy so that
# `push-server migrate` does not pay for loading aiohttp, h2 and the providers.
COMMANDS: dict[str, tuple[str, str]] = {
    "migrate": ("shared.migrations:main", "apply the SQL migrations to PUSH_DATABASE_URL"),
    "rotate-secrets": (
        "shared.secrets:rotate_main",
        "re-encrypt every secret column under the current master key",
    ),
    "api": ("api.app:main", "run the REST API"),
    "worker": ("workers.delivery_worker:main", "run a delivery and campaign worker"),
    "ingest": ("workers.ingest:main", "run the AMQP ingest consumer alone"),
    "sandbox": ("workers.sandbox.server:main", "run the fake APNs, FCM and HMS services"),
}


# Long-running processes allocate many short-lived objects per request or batch. With the
# default first-generation threshold (700), the cyclic garbage collector took about a
# tenth of a worker's CPU in a py-spy profile of a campaign.
GC_THRESHOLDS = (50_000, 20, 20)
LONG_RUNNING = frozenset({"api", "worker", "ingest", "sandbox"})


def tune_garbage_collector() -> None:
    """Freeze the objects of start-up and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def load_command(name: str) -> Callable[[Sequence[str]], int]:
    target, _help = COMMANDS[name]
    module_name, function_name = target.split(":")
    module = importlib.import_module(module_name)
    function: Callable[[Sequence[str]], int] = getattr(module, function_name)
    return function


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="push-server",
        description="Push notification server for APNs, FCM and HMS.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_target, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; each subcommand parses its own options."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not arguments or arguments[0] not in COMMANDS:
        parser.parse_args(arguments)
        return 2

    command = load_command(arguments[0])
    if arguments[0] in LONG_RUNNING:
        tune_garbage_collector()
    return command(arguments[1:])


if __name__ == "__main__":
    sys.exit(main())
