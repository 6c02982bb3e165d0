"""``pynenc-postgres inspect``: read-only views of invocations and their timelines."""

from __future__ import annotations

import argparse
import sys

from pynenc_postgres.cli.common import (
    add_connection_options,
    parse_since,
    positive_int,
    settings_from_args,
    statuses,
)


def _inspect_invocations(args: argparse.Namespace) -> int:
    from pynenc_postgres.inspect import list_invocations, render_invocations

    invocations = list_invocations(
        settings_from_args(args),
        app_id=args.app_id,
        task=args.task,
        statuses=statuses(args.status),
        since=parse_since(args.since) if args.since else None,
        limit=args.limit,
    )
    print(render_invocations(invocations))
    return 0


def _inspect_invocation(args: argparse.Namespace) -> int:
    from pynenc_postgres.inspect import MAX_CHARS, invocation_detail, render_detail

    details = invocation_detail(
        settings_from_args(args),
        args.invocation_id,
        app_id=args.app_id,
        max_chars=None if args.full else MAX_CHARS,
    )
    if not details:
        scope = f" in app {args.app_id}" if args.app_id else ""
        print(f"No invocation {args.invocation_id}{scope}.", file=sys.stderr)
        return 1
    print("\n\n".join(render_detail(detail) for detail in details))
    return 0


def _inspect_retention(args: argparse.Namespace) -> int:
    from pynenc_postgres.retention.runs import last_runs, render_runs

    runs = last_runs(settings_from_args(args), app_id=args.app_id, limit=args.limit)
    print(render_runs(runs))
    return 0


def add_inspect_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pynenc-postgres inspect invocations|invocation|retention``."""
    inspect = sub.add_parser("inspect", help="read-only views of invocations and timelines")
    inspect_sub = inspect.add_subparsers(dest="inspect_command", required=True)

    listing = inspect_sub.add_parser(
        "invocations", help="invocations with their current status, latest change first"
    )
    listing.add_argument("--app-id", help="only this app")
    listing.add_argument("--task", help="task key (module.function) or function name")
    listing.add_argument(
        "--status", action="append", help="current status; repeat or comma-separate"
    )
    listing.add_argument(
        "--since", help="only invocations with a status change since: 2h, 1d, or ISO timestamp"
    )
    listing.add_argument(
        "--limit", type=positive_int, default=50, help="at most this many (default 50)"
    )
    add_connection_options(listing)
    listing.set_defaults(handler=_inspect_invocations)

    one = inspect_sub.add_parser(
        "invocation", help="one invocation's timeline with its result or exception"
    )
    one.add_argument("invocation_id")
    one.add_argument("--app-id", help="the invocation's app (faster; default: any app)")
    one.add_argument(
        "--full",
        action="store_true",
        help="print values kept in the client data store whole (default: their beginning)",
    )
    add_connection_options(one)
    one.set_defaults(handler=_inspect_invocation)

    retention = inspect_sub.add_parser(
        "retention",
        help="the latest retention runs: when, which app, outcome, rows removed per table",
    )
    retention.add_argument("--app-id", help="only this app")
    retention.add_argument(
        "--limit", type=positive_int, default=10, help="at most this many runs (default 10)"
    )
    add_connection_options(retention)
    retention.set_defaults(handler=_inspect_retention)
