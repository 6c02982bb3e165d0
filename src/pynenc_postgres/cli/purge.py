"""``pynenc-postgres purge``: delete one app's finished invocations in batches."""

from __future__ import annotations

import argparse

from pynenc_postgres.cli.common import add_connection_options, settings_from_args, statuses


def _purge(args: argparse.Namespace) -> int:
    from pynenc_postgres.retention import parse_duration, purge_invocations

    older_than = parse_duration(args.older_than) if args.older_than else None
    report = purge_invocations(
        settings_from_args(args),
        app_id=args.app_id,
        older_than=older_than,
        statuses=statuses(args.status),
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
    add_connection_options(purge)
    purge.set_defaults(handler=_purge)
