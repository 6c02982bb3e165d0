"""``pynenc-postgres purge``: delete one app's finished invocations in batches."""

from __future__ import annotations

import argparse
from datetime import timedelta

from pynenc_postgres.cli.common import add_connection_options, settings_from_args, statuses
from pynenc_postgres.db.errors import PostgresConfigError


def _purge(args: argparse.Namespace) -> int:
    from pynenc_postgres.retention import parse_duration, purge_invocations

    if args.batch_size < 1:
        raise PostgresConfigError(
            f"--batch-size must be at least 1, not {args.batch_size}: it is the number of "
            "invocations each transaction removes (default 1000)."
        )
    older_than = parse_duration(args.older_than) if args.older_than else None
    report = purge_invocations(
        settings_from_args(args),
        app_id=args.app_id,
        older_than=older_than,
        statuses=statuses(args.status),
        batch_size=args.batch_size,
        dry_run=args.dry_run,
        lock_timeout_ms=args.lock_timeout_ms,
        runner_dead_after=timedelta(minutes=args.runner_dead_after_minutes),
        pause_ratio=args.pause_ratio,
    )
    print(report.render())
    if args.dry_run:
        print("dry run: nothing was deleted")
    elif report.run_id:
        print(f"recorded as run {report.run_id} (pynenc-postgres inspect retention)")
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
            "transaction removing the invocations from every table: history, result, "
            "exception, workflow rows, invocation, orchestrator status and arguments, "
            "waiting edges, queue messages and the client data nothing else refers to. "
            "Then heartbeats of runners long dead and runner contexts nothing refers to "
            "go. The run is recorded in pynenc_retention_run."
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
    purge.add_argument(
        "--lock-timeout-ms",
        type=int,
        default=2000,
        help="a batch that waits longer for a row lock is rolled back and left for the "
        "next run (default 2000)",
    )
    purge.add_argument(
        "--runner-dead-after-minutes",
        type=float,
        default=10.0,
        help="the runners' runner_considered_dead_after_minutes (default 10): heartbeats "
        "dead for longer than this plus --older-than are removed",
    )
    purge.add_argument(
        "--pause-ratio",
        type=float,
        default=0.0,
        help="after each batch, wait this many times the batch's own time, to leave the "
        "server to the runners (default 0: batches back to back)",
    )
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    add_connection_options(purge)
    purge.set_defaults(handler=_purge)
