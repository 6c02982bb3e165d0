"""``pynenc-postgres demo``: a sample app on real runners, and its SQL audit report."""

from __future__ import annotations

import argparse

from pynenc_postgres.cli.common import add_connection_options, non_negative_int


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pynenc_postgres.demo import run_demo

    return run_demo(
        args.url,
        workdir=Path(args.workdir),
        schema_name=args.schema,
        monitor_port=args.monitor,
        runner_processes=args.runners,
    )


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pynenc_postgres.demo import RUNNER_PROCESSES

    demo = sub.add_parser(
        "demo",
        help="run a sample app on real runners and print an SQL audit report",
        description=(
            "Start an embedded PostgreSQL 18 (or use --url / PYNENC__POSTGRES_URL), migrate "
            "it, start pynenc runner processes on the Postgres-only stack, run a sample app "
            "on them and print an SQL audit report of which host and runner ran what."
        ),
    )
    add_connection_options(demo)
    demo.add_argument(
        "--workdir",
        default=".pynenc-postgres",
        help="folder for the embedded server's data and the runners' logs (default: %(default)s)",
    )
    demo.add_argument(
        "--runners",
        type=non_negative_int,
        default=RUNNER_PROCESSES,
        metavar="N",
        help=(
            "runner processes to start (default: %(default)s); 0 starts none and uses the "
            "runners already serving the database, e.g. compose's worker services"
        ),
    )
    demo.add_argument(
        "--monitor",
        nargs="?",
        type=int,
        const=8000,
        metavar="PORT",
        help="then browse the data in pynmon on PORT (default 8000) until Ctrl-C",
    )
    demo.set_defaults(handler=_demo)
