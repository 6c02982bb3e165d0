"""Orchestrator benchmark: PostgresOrchestrator against pynenc's SQLiteOrchestrator.

Two figures, through pynenc's orchestrator API, in one and in several processes at once:

- **status transitions per second**: each process registers its own invocations (not
  timed), then moves each one PENDING -> RUNNING -> SUCCESS with
  ``_atomic_status_transition``, the orchestrator's validated status change (the step
  that ``set_invocation_status`` performs before the history and trigger calls);
- **get_invocation_status latency**: ``get_invocation_status`` on those invocations,
  in random order, one call at a time; the median and 99th percentile per call.

Both orchestrators run alternately within each round, with the same processes and
invocation counts, so machine noise hits them alike; the figures are medians over the
rounds. SQLite is pynenc's own orchestrator on a file in a local temporary directory,
with pynenc's connection settings: WAL and ``synchronous=NORMAL``, which does not flush
each commit to disk. Ours runs twice: durable (each commit flushed, the server's
default) and with ``synchronous_commit=off``, the like-for-like comparison with SQLite.

Run it with ``python -m benchmarks.orchestrator``. The Postgres server is
``--postgres-url`` or ``$PYNENC_BENCH_POSTGRES_URL``, else an embedded PostgreSQL; the
benchmark creates its own database there and drops it afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynenc import Pynenc, PynencBuilder
from pynenc.arguments import Arguments
from pynenc.call import Call
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.dist_invocation import DistributedInvocation
from pynenc.invocation.status import InvocationStatus

from benchmarks.common import (
    bench_database,
    bench_task,
    load_average,
    machine_description,
    median,
    postgres_server,
    replace_section,
)
from pynenc_postgres.db.engine import dispose_all

OURS = "PostgresOrchestrator"
OURS_OFF = "PostgresOrchestrator (synchronous_commit=off)"
SQLITE = "SQLiteOrchestrator"
KINDS = (OURS, OURS_OFF, SQLITE)
BATCH = 100
STEPS = (InvocationStatus.PENDING, InvocationStatus.RUNNING, InvocationStatus.SUCCESS)


def build_app(kind: str, app_id: str, postgres_url: str, sqlite_path: str) -> Pynenc:
    builder = PynencBuilder().memory().app_id(app_id)
    if kind == SQLITE:
        return builder.custom_config(orchestrator_cls=SQLITE, sqlite_db_path=sqlite_path).build()
    commit = "off" if kind == OURS_OFF else None
    builder = builder.postgres_state_backend(url=postgres_url, synchronous_commit=commit)
    return builder.custom_config(orchestrator_cls=OURS).build()


@dataclass
class Sample:
    """What one process measured: transitions and seconds, status-read latencies (µs)."""

    transitions: int
    started: float
    ended: float
    read_us: list[float]
    error: str | None = None


def measure(app: Pynenc, n: int, reads: int, tag: str, ready: Any = None) -> Sample:
    """Register ``n`` invocations, then time their transitions and ``reads`` status reads.

    ``ready`` (a barrier) lines the processes of one measurement up before the clock starts.
    """
    orchestrator = app.orchestrator
    task = app.task(bench_task)
    invocations = [
        DistributedInvocation(
            Call(task, Arguments({"x": i})),
            InvocationId(f"{tag}-{i:07d}"),
            parent_invocation_id=None,
            workflow=None,
            stored_in_backend=True,
        )
        for i in range(n)
    ]
    for start in range(0, n, BATCH):
        orchestrator._register_new_invocations(invocations[start : start + BATCH])
    runner_id = f"runner-{tag}"
    if ready is not None:
        ready.wait(timeout=600)  # a process that failed to start breaks the barrier
    started = time.monotonic()
    for invocation in invocations:
        for status in STEPS:
            orchestrator._atomic_status_transition(invocation.invocation_id, status, runner_id)
    ended = time.monotonic()
    ids = [invocation.invocation_id for invocation in invocations]
    picks = random.Random(tag).choices(ids, k=reads)
    read_us: list[float] = []
    for invocation_id in picks:
        before = time.perf_counter()
        status = orchestrator.get_invocation_status(invocation_id)
        read_us.append((time.perf_counter() - before) * 1e6)
        if status != InvocationStatus.SUCCESS:
            raise AssertionError(f"{invocation_id} is {status}, expected success")
    return Sample(n * len(STEPS), started, ended, read_us)


def _process(
    kind: str,
    app_id: str,
    urls: tuple[str, str],
    n: int,
    reads: int,
    tag: str,
    start: Any,
    out: Any,
) -> None:
    try:
        app = build_app(kind, app_id, *urls)
        measure(app, 20, 20, f"warm-{tag}")  # connections, prepared statements, caches
        out.put(measure(app, n, reads, tag, start))
    except BaseException as exc:
        out.put(Sample(0, 0.0, 0.0, [], f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        dispose_all()


@dataclass
class Figures:
    transitions_per_s: float
    read_median_us: float
    read_p99_us: float


def run_once(kind: str, processes: int, urls: tuple[str, str], n: int, reads: int) -> Figures:
    """One measurement: ``processes`` spawned processes on one app, each with its own work."""
    ctx = multiprocessing.get_context("spawn")
    app_id = f"orch-bench-{uuid.uuid4().hex[:8]}"
    out, start = ctx.Queue(), ctx.Barrier(processes)
    procs = [
        ctx.Process(target=_process, args=(kind, app_id, urls, n, reads, f"p{p}", start, out))
        for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    samples: list[Sample] = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    errors = [s.error for s in samples if s.error]
    if errors:
        raise RuntimeError(f"{kind} with {processes} process(es) failed: {errors[0]}")
    wall = max(s.ended for s in samples) - min(s.started for s in samples)
    reads_us = sorted(us for s in samples for us in s.read_us)
    return Figures(
        transitions_per_s=sum(s.transitions for s in samples) / wall,
        read_median_us=median(reads_us),
        read_p99_us=reads_us[min(len(reads_us) - 1, int(len(reads_us) * 0.99))],
    )


def render(results: dict[tuple[str, int], list[Figures]], rounds: int) -> str:
    lines = [
        "| orchestrator | processes | transitions / s | get_invocation_status median µs "
        "| p99 µs | transitions x SQLite | status latency x SQLite |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = {kind: i for i, kind in enumerate(KINDS)}
    for (kind, processes), figures in sorted(
        results.items(), key=lambda kv: (kv[0][1], order[kv[0][0]])
    ):
        rate = median([f.transitions_per_s for f in figures])
        read = median([f.read_median_us for f in figures])
        p99 = median([f.read_p99_us for f in figures])
        reference = results.get((SQLITE, processes))
        if kind != SQLITE and reference:
            rate_ratio = median(
                [
                    o.transitions_per_s / s.transitions_per_s
                    for o, s in zip(figures, reference, strict=True)
                ]
            )
            read_ratio = median(
                [
                    o.read_median_us / s.read_median_us
                    for o, s in zip(figures, reference, strict=True)
                ]
            )
            ratios = f"{rate_ratio:.2f} | {read_ratio:.2f}"
        else:
            ratios = "- | -"
        lines.append(
            f"| {kind} | {processes} | {rate:,.0f} | {read:,.0f} | {p99:,.0f} | {ratios} |"
        )
    lines.append("")
    lines.append(f"Medians over {rounds} rounds; ratios are medians of the per-round ratios.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orchestrator", description=__doc__)
    parser.add_argument("-n", "--invocations", type=int, default=500, help="per process")
    parser.add_argument("--reads", type=int, default=2000, help="status reads per process")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians over them)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the results and machine description into docs/benchmarks.md",
    )
    args = parser.parse_args(argv)

    with postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        machine = machine_description(db.url)
        print("\n".join(machine))
        load_before = load_average()
        print(f"load average before (1 / 5 / 15 min): {load_before}")
        results: dict[tuple[str, int], list[Figures]] = {}
        with tempfile.TemporaryDirectory(prefix="pynenc-orch-bench-") as tmp:
            for round_no in range(args.rounds):
                for processes in args.processes:
                    for kind in KINDS:
                        sqlite_path = str(Path(tmp) / f"{uuid.uuid4().hex}.db")
                        figures = run_once(
                            kind,
                            processes,
                            (db.url, sqlite_path),
                            args.invocations,
                            args.reads,
                        )
                        results.setdefault((kind, processes), []).append(figures)
                        print(
                            f"round {round_no + 1}/{args.rounds}: {kind}, {processes} "
                            f"process(es): {figures.transitions_per_s:,.0f} transitions/s, "
                            f"status read median {figures.read_median_us:,.0f} µs",
                            flush=True,
                        )
        load_after = load_average()
        table = render(results, args.rounds)
        print()
        print(table)
        print(f"load average after (1 / 5 / 15 min): {load_after}")
        if args.write_docs:
            command = "python -m benchmarks.orchestrator " + " ".join(
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
            ]
            replace_section("orchestrator", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
