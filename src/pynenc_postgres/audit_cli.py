"""``pynenc-postgres purge`` and ``pynenc-postgres inspect``: retention and read-only views."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.settings import DatabaseSettings


def _settings(args: argparse.Namespace) -> DatabaseSettings:
    # Imported here: cli.py imports this module while it is being defined.
    from pynenc_postgres.cli import settings_from_args

    return settings_from_args(args)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    from pynenc_postgres.cli import _add_connection_options

    _add_connection_options(parser)


def _statuses(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part.strip()]


def parse_since(text: str) -> datetime:
    """A duration back from now (``2h``) or an ISO timestamp (naive means UTC)."""
    from pynenc_postgres.retention import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except PostgresConfigError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PostgresConfigError(
            f"--since {text!r} is neither a duration (90m, 12h, 2d) nor an ISO timestamp "
            "(2026-01-31T12:00:00)."
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# -- purge ----------------------------------------------------------------------------


def _purge(args: argparse.Namespace) -> int:
    from pynenc_postgres.retention import parse_duration, purge_invocations

    older_than = parse_duration(args.older_than) if args.older_than else None
    report = purge_invocations(
        _settings(args),
        app_id=args.app_id,
        older_than=older_than,
        statuses=_statuses(args.status),
        batch_size=args.batch_size,
        dry_run=args.dry_run,
    )
    print(report.render())
    if args.dry_run:
        print("dry run: nothing was deleted")
    return 0


def add_purge_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pynenc-postgres purge``."""
    purge = sub.add_parser(
        "purge",
        help="delete one app's finished invocations in batches (retention)",
        description=(
            "Delete the invocations of one app whose current status is in scope (by default "
            "the final statuses success, failed, concurrency_controlled_final), optionally "
            "only those whose status is older than a duration. Each batch is one short "
            "transaction deleting the invocations' history, result, exception, workflow "
            "rows and invocation rows together."
        ),
    )
    purge.add_argument("--app-id", required=True, help="the app whose invocations are deleted")
    purge.add_argument(
        "--older-than", help="only invocations whose status is older than this: 30d, 12h, 90m"
    )
    purge.add_argument(
        "--status",
        action="append",
        help="current status in scope; repeat or comma-separate (default: final statuses)",
    )
    purge.add_argument("--batch-size", type=int, default=1000, help="invocations per transaction")
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    _connection_options(purge)
    purge.set_defaults(handler=_purge)


# -- inspect --------------------------------------------------------------------------


def _inspect_invocations(args: argparse.Namespace) -> int:
    from pynenc_postgres.inspect import list_invocations, render_invocations

    invocations = list_invocations(
        _settings(args),
        app_id=args.app_id,
        task=args.task,
        statuses=_statuses(args.status),
        since=parse_since(args.since) if args.since else None,
        limit=args.limit,
    )
    print(render_invocations(invocations))
    return 0


def _inspect_invocation(args: argparse.Namespace) -> int:
    from pynenc_postgres.inspect import invocation_detail, render_detail

    details = invocation_detail(_settings(args), args.invocation_id, app_id=args.app_id)
    if not details:
        scope = f" in app {args.app_id}" if args.app_id else ""
        print(f"No invocation {args.invocation_id}{scope}.", file=sys.stderr)
        return 1
    print("\n\n".join(render_detail(detail) for detail in details))
    return 0


def add_inspect_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pynenc-postgres inspect invocations|invocation``."""
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
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    _connection_options(listing)
    listing.set_defaults(handler=_inspect_invocations)

    one = inspect_sub.add_parser(
        "invocation", help="one invocation's timeline with its result or exception"
    )
    one.add_argument("invocation_id")
    one.add_argument("--app-id", help="the invocation's app (faster; default: any app)")
    _connection_options(one)
    one.set_defaults(handler=_inspect_invocation)
