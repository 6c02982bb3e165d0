"""Metrics exporter at scale: the scrape time with 1,000,000 invocations, and its plans.

A database is seeded server-side (:mod:`benchmarks.metrics_seed`) with 1,000,000
orchestrator invocations of two apps, 1 % in flight (half of those queued over three
queues), 400 runners (one in ten alive) and 2,000 atomic-service executions, then
vacuumed and analyzed as autovacuum leaves a table. The exporter's collector then
scrapes it repeatedly, as Prometheus would, each scrape one read-only transaction on
the exporter's own connection; the median and the 95th percentile of the scrape time
are reported with the load average, and the plan of each statement is printed.

Run it with ``python -m benchmarks.metrics`` (about a minute on the 2-core machine,
most of it seeding). It uses a database of its own on ``--postgres-url`` /
``$PYNENC_BENCH_POSTGRES_URL`` (else an embedded PostgreSQL) and drops it at the end.
``--write-docs`` writes the figures into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.common import (
    bench_database,
    load_average,
    machine_description,
    median,
    postgres_server,
    replace_section,
)
from benchmarks.metrics_seed import Cluster, seed_cluster
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.metrics import PostgresMetricsCollector
from pynenc_postgres.metrics.sql import ACTIVE_STATUSES, TABLES, statements


def plans(url: str) -> str:
    s = statements("public")
    cases = [
        ("invocations", s.invocations, (600.0, list(ACTIVE_STATUSES))),
        ("queues", s.queues, ()),
        ("runners", s.runners, (600.0,) * 3),
        ("atomic service", s.atomic_service, ()),
        ("history totals", s.history_totals, ()),
        ("tables", s.tables, ("public", list(TABLES))),
    ]
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET jit = off")
        for name, query, params in cases:
            rows = conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + query, params
            ).fetchall()
            out.append(f"-- {name}\n" + "\n".join(row[0] for row in rows))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics", description=__doc__)
    parser.add_argument("-n", "--invocations", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    cluster = Cluster(invocations=args.invocations)
    with postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        machine = machine_description(db.url)
        print("\n".join(machine))
        started = time.perf_counter()
        with psycopg.connect(db.url, autocommit=True) as conn:
            seed_cluster(conn, cluster)
            conn.execute("VACUUM ANALYZE")
        seeded = time.perf_counter() - started
        print(f"seeded {args.invocations:,} invocations in {seeded:.1f} s")
        collector = PostgresMetricsCollector(DatabaseSettings(url=db.url))
        registry = CollectorRegistry()
        registry.register(collector)
        generate_latest(registry)  # connect and check the schema once, untimed
        times = []
        for _ in range(args.scrapes):
            started = time.perf_counter()
            text = generate_latest(registry).decode()
            times.append(time.perf_counter() - started)
        collector.close()
        assert "pynenc_postgres_up 1.0" in text, text
        times.sort()
        p50 = median(times) * 1000
        p95 = times[int(len(times) * 0.95) - 1] * 1000
        load = load_average()
        plan_text = plans(db.url)
        print(plan_text)
        summary = (
            f"Scrape of {args.invocations:,} invocations ({args.scrapes} scrapes, the whole "
            f"HTTP body rendered): median **{p50:.1f} ms**, p95 {p95:.1f} ms (target < 100 "
            f"ms); load average {load}; seeding took {seeded:.0f} s."
        )
        print(summary)
        if args.write_docs:
            command = "python -m benchmarks.metrics " + " ".join(
                a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-docs"
            )
            body = ["Machine:", ""] + [f"- {line}" for line in machine]
            body += ["", f"Command: `{command.strip()}`", "", summary, ""]
            body += ["Plans (EXPLAIN ANALYZE):", "", "```text", plan_text, "```"]
            replace_section("metrics", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
