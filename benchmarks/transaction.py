"""Submitting inside the application's transaction against plain submits.

The same 1,000 task calls (and, separately, one ``parallelize`` of 1,000), each way:

- **plain**: outside any transaction: every statement is its own autocommit transaction
  on the process's pool, committed (and flushed to the WAL) before the call returns;
- **in_transaction**: inside ``with in_transaction(conn):`` on one psycopg connection,
  committed once by the application at the end (the commit is timed).

For each, the wall-clock time and what the server did, counted on a server that loads
``pg_stat_statements`` (:mod:`benchmarks.server_counters`): committed transactions
(``pg_stat_database.xact_commit``) and statements (``pg_stat_statements`` calls; every
statement is one round trip, the application's ``BEGIN`` and ``COMMIT`` included) per
submitted task. The two ways alternate within each round; the figures are medians.

Run it with ``python -m benchmarks.transaction``. The server is ``--postgres-url`` or
``$PYNENC_BENCH_POSTGRES_URL`` (it must load ``pg_stat_statements``), else an embedded
PostgreSQL 18 that does; the benchmark creates its own database there and drops it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from pynenc import PynencBuilder

from benchmarks.common import (
    bench_database,
    bench_task,
    load_average,
    machine_description,
    median,
    replace_section,
)
from benchmarks.server_counters import (
    counting_postgres_server,
    difference,
    ensure_extension,
    short,
    snapshot,
)
from pynenc_postgres import in_transaction
from pynenc_postgres.db.engine import dispose_all

PLAIN = "plain"
IN_TRANSACTION = "in_transaction"
WAYS = (PLAIN, IN_TRANSACTION)
CALLS = "task calls"
PARALLELIZE = "parallelize"
SHAPES = (CALLS, PARALLELIZE)


@dataclass
class Sample:
    seconds: float
    commits: int
    statements: int
    top: list[tuple[int, str]]


def build_task(url: str) -> Any:
    """The benchmark's task, in a fresh app with every component on Postgres."""
    app = (
        PynencBuilder()
        .app_id(f"tx-bench-{uuid.uuid4().hex[:8]}")
        .postgres(url=url)
        .custom_config(logging_level="warning")
        .build()
    )
    return app.task(bench_task)


def submit(task: Any, shape: str, count: int) -> None:
    if shape == CALLS:
        for i in range(count):
            task(i)
    else:
        task.parallelize([(i,) for i in range(count)])


def measure(url: str, way: str, shape: str, count: int, settle: float) -> Sample:
    """One measurement on a fresh app, its first-use costs paid before the count starts."""
    task = build_task(url)
    # Warm: the pool, the schema check, this process's app info and runner context.
    with psycopg.connect(url) as warm:
        with in_transaction(warm):
            task(-1)
        warm.commit()
    task(-2)
    dispose_all()  # closed sessions publish their counts: 'before' holds all of the warm-up
    time.sleep(settle)
    before = snapshot(url)
    with psycopg.connect(url) as conn:
        began = time.perf_counter()
        if way == PLAIN:
            submit(task, shape, count)
        else:
            with in_transaction(conn):
                submit(task, shape, count)
            conn.commit()
        seconds = time.perf_counter() - began
    dispose_all()
    time.sleep(settle)
    counted = difference(before, snapshot(url))
    top = [(s.calls, short(s.query, 70)) for s in counted.top(6)]
    return Sample(seconds, counted.commits, counted.calls, top)


def render(results: dict[tuple[str, str], list[Sample]], count: int, rounds: int) -> str:
    lines = [
        "| submitted | way | seconds | tasks / s | transactions / task | statements / task "
        "| time x plain | statements x plain |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in SHAPES:
        plain = results[(shape, PLAIN)]
        for way in WAYS:
            samples = results[(shape, way)]
            seconds = median([s.seconds for s in samples])
            commits = median([s.commits / count for s in samples])
            statements = median([s.statements / count for s in samples])
            if way == PLAIN:
                time_ratio = statements_ratio = "-"
            else:
                pairs = list(zip(samples, plain, strict=True))
                time_ratio = f"{median([s.seconds / p.seconds for s, p in pairs]):.2f}"
                statements_ratio = f"{median([s.statements / p.statements for s, p in pairs]):.2f}"
            label = f"{count:,} {shape}"
            lines.append(
                f"| {label} | {way} | {seconds:.2f} | {count / seconds:,.0f} | {commits:.3f} "
                f"| {statements:.2f} | {time_ratio} | {statements_ratio} |"
            )
    lines += ["", f"Medians over {rounds} round(s); ratios are medians of the per-round ratios."]
    return "\n".join(lines)


def statement_breakdown(results: dict[tuple[str, str], list[Sample]]) -> str:
    """The most frequent statements of the last round, for reading the counts."""
    lines = []
    for (shape, way), samples in results.items():
        top = "; ".join(f"{n} x `{q}`" for n, q in samples[-1].top)
        lines.append(f"- {shape}, {way}: {top}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", help="admin URL of a server loading pg_stat_statements")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds to wait before each 'after' count (the client's sessions are closed)",
    )
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with counting_postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        ensure_extension(db.url)
        machine = machine_description(db.url)
        print("\n".join(machine))
        load_before = load_average()
        print(f"load average before (1 / 5 / 15 min): {load_before}")
        results: dict[tuple[str, str], list[Sample]] = {}
        for round_no in range(args.rounds):
            for shape in SHAPES:
                for way in WAYS:
                    sample = measure(db.url, way, shape, args.tasks, args.settle)
                    results.setdefault((shape, way), []).append(sample)
                    print(
                        f"round {round_no + 1}/{args.rounds}: {args.tasks} {shape}, {way}: "
                        f"{sample.seconds:.2f} s, {sample.commits} transactions, "
                        f"{sample.statements} statements",
                        flush=True,
                    )
        load_after = load_average()
    table = render(results, args.tasks, args.rounds)
    breakdown = statement_breakdown(results)
    print()
    print(table)
    print()
    print(breakdown)
    print(f"load average after (1 / 5 / 15 min): {load_after}")
    print(f"took {time.perf_counter() - started:.0f} s")
    if args.write_docs:
        command = "python -m benchmarks.transaction " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-docs"
        )
        body = ["Machine:", ""] + [f"- {line}" for line in machine]
        body += [
            f"- load average (1 / 5 / 15 min): {load_before} before, {load_after} after "
            f"({os.cpu_count()} cores)",
            "",
            f"Command: `{command.strip()}`",
            "",
            table,
            "",
            "Most frequent statements (last round):",
            "",
            breakdown,
        ]
        replace_section("transaction", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
