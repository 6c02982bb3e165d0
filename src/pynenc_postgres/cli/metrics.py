"""``pynenc-postgres metrics``: the cluster's Prometheus exporter."""

from __future__ import annotations

import argparse
import logging
import sys

from pynenc_postgres.cli.common import add_connection_options, settings_from_args
from pynenc_postgres.db.errors import PostgresConfigError


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _metrics(args: argparse.Namespace) -> int:
    try:
        # The package first: without prometheus_client it says which extra to install.
        from pynenc_postgres.metrics import MetricsOptions, make_registry, serve
    except ImportError as exc:
        raise PostgresConfigError(str(exc)) from None
    from prometheus_client import generate_latest

    dead_after = args.runner_dead_after_minutes
    if dead_after is None:
        # The runners' own setting, read from the same pynenc config they read.
        from pynenc.conf.config_pynenc import ConfigPynenc

        dead_after = float(ConfigPynenc().runner_considered_dead_after_minutes)
    options = MetricsOptions(runner_dead_after_minutes=dead_after, timeout=args.timeout)
    settings = settings_from_args(args)
    if args.once:
        registry = make_registry(settings, options)
        text = generate_latest(registry).decode()
        sys.stdout.write(text)
        return 0 if "\npynenc_postgres_up 1.0\n" in "\n" + text else 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def ready(port: int) -> None:
        print(
            f"Serving the metrics of {settings.server} (schema {settings.schema}) on "
            f"http://{args.address}:{port}/metrics; Ctrl-C or SIGTERM stops.",
            flush=True,
        )

    serve(settings, options, port=args.port, address=args.address, ready=ready)
    return 0


def add_metrics_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pynenc-postgres metrics``."""
    metrics = sub.add_parser(
        "metrics",
        help="serve the cluster's Prometheus metrics, read from the database",
        description=(
            "Serve Prometheus metrics of every pynenc app in the database: invocations by "
            "status, queue depth and age, finished and failed counts, runners alive and "
            "dead, table sizes. One exporter serves the whole cluster; each scrape is one "
            "short read-only transaction, so a read-only role (the auditor role of "
            "docs/audit.md) is enough. Needs the metrics extra: "
            "pip install 'pynenc-postgres[metrics]'."
        ),
    )
    metrics.add_argument("--port", type=int, default=9464, help="TCP port (default 9464)")
    metrics.add_argument(
        "--address", default="0.0.0.0", help="address to listen on (default 0.0.0.0)"
    )
    metrics.add_argument(
        "--runner-dead-after-minutes",
        type=_positive,
        help="a runner is dead once its heartbeat is older than this (default: "
        "runner_considered_dead_after_minutes from pynenc config, 10)",
    )
    metrics.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        help="seconds a scrape may take to connect and read (default 5)",
    )
    metrics.add_argument(
        "--once",
        action="store_true",
        help="print one scrape to standard output and exit (1 if the database was not read)",
    )
    add_connection_options(metrics)
    metrics.set_defaults(handler=_metrics)
