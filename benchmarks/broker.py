"""Broker benchmark: PostgresBroker against pynenc's SQLiteBroker, in the same run.

Three measurements, through pynenc's public broker API:

* **Throughput.** Each consumer process routes one invocation (``route_invocation``) and
  takes one (``retrieve_invocation``), in a loop; the figure is route-and-retrieve pairs
  per second over all consumers, with 1 and with 4 consumer processes. The stacks run
  alternately within each round, so machine noise hits them alike; figures are medians
  over the rounds. pynenc's SQLite commits in WAL mode with ``synchronous=NORMAL`` (no
  fsync per commit), so it is compared with ours both durable (``synchronous_commit=on``,
  the server default) and relaxed (``synchronous_commit=off``).
* **Idle pickup latency.** A consumer process waits in ``retrieve_invocation`` on an
  empty queue; the time from the start of ``route_invocation`` in another process to
  the consumer holding the id, p50 and p99, with ``LISTEN``/``NOTIFY`` and with polling
  (``postgres_broker_poll_interval_sec``, default 0.05 s).
* **Queue table size under churn.** 4 consumer processes make 100,000 route-and-retrieve
  pairs in a fresh database; the size of ``pynenc_broker_message`` (heap, indexes, TOAST)
  is sampled while they run and reported at the end, with the dead rows and autovacuum
  runs seen. Three variants of the table, each in its own database: the migration's
  per-table autovacuum settings, the server's defaults (``RESET``), and no autovacuum
  (``autovacuum_enabled = false``, what a server with ``autovacuum = off`` gives).

Run it with ``python -m benchmarks.broker``. The Postgres server is ``--postgres-url`` or
``$PYNENC_BENCH_POSTGRES_URL``, else an embedded PostgreSQL; the benchmark creates its
own database there and drops it afterwards. ``--write-docs`` puts the results into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from pynenc import Pynenc, PynencBuilder

from benchmarks.common import (
    bench_database,
    load_average,
    machine_description,
    median,
    postgres_server,
    replace_section,
)

OURS = "PostgresBroker (durable)"
OURS_OFF = "PostgresBroker (synchronous_commit=off)"
SQLITE = "SQLiteBroker"
STACKS = (OURS, OURS_OFF, SQLITE)
CONSUMERS = (1, 4)
DEADLINE_SEC = 600.0


@dataclass(frozen=True)
class Target:
    """Where a stack keeps its queue; picklable, so a child process can rebuild the app."""

    stack: str
    postgres_url: str
    sqlite_path: str
    app_id: str


def build_app(target: Target, **config: Any) -> Pynenc:
    """An app whose broker is the stack's; pynenc's memory components for the rest."""
    builder = PynencBuilder().app_id(target.app_id)
    if target.stack == SQLITE:
        builder = builder.sqlite(sqlite_db_path=target.sqlite_path).custom_config(
            broker_cls="SQLiteBroker", **config
        )
    else:
        builder = builder.memory().postgres_state_backend(
            url=target.postgres_url,
            synchronous_commit="off" if target.stack == OURS_OFF else None,
        )
        builder = builder.custom_config(broker_cls="PostgresBroker", **config)
    return builder.build()


# -- throughput --------------------------------------------------------------------


def pair_worker(target: Target, worker: int, pairs: int, start: Any, results: Any) -> None:
    """Route one invocation and take one, ``pairs`` times, after an untimed warm-up."""
    try:
        broker = build_app(target, queue_timeout_sec=1.0).broker
        for i in range(20):
            broker.route_invocation(f"warm-{worker}-{i}", "default", 0.0)
            while broker.retrieve_invocation() is None:
                pass
        start.wait(DEADLINE_SEC)
        began = time.monotonic()
        for i in range(pairs):
            broker.route_invocation(f"w{worker}-{i}", "default", float(i % 3))
            # Another consumer may have taken every queued id: then wait for the next.
            while broker.retrieve_invocation() is None:
                pass
        results.put((began, time.monotonic()))
    except BaseException as exc:
        results.put(("error", repr(exc)))
        raise


def run_pairs(target: Target, consumers: int, pairs: int) -> float:
    """Pairs per second of ``consumers`` processes making ``pairs`` pairs in all."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(consumers)
    results: Any = ctx.Queue()
    per_worker = pairs // consumers
    processes = [
        ctx.Process(target=pair_worker, args=(target, w, per_worker, start, results))
        for w in range(consumers)
    ]
    for process in processes:
        process.start()
    spans = [results.get(timeout=DEADLINE_SEC) for _ in processes]
    for process in processes:
        process.join(DEADLINE_SEC)
    errors = [span[1] for span in spans if span[0] == "error"]
    if errors:
        raise RuntimeError(f"{target.stack}: {errors}")
    elapsed = max(end for _, end in spans) - min(began for began, _ in spans)
    return per_worker * consumers / elapsed


def purge(target: Target) -> None:
    build_app(target).broker.purge()


# -- idle pickup latency -------------------------------------------------------------


def latency_consumer(target: Target, wakeup: str, samples: int, pipe: Any) -> None:
    try:
        broker = build_app(target, queue_timeout_sec=5.0, postgres_broker_wakeup=wakeup).broker
        broker.notifier().start()  # the LISTEN connection is open before we start
        pipe.send("ready")
        for _ in range(samples):
            taken = broker.retrieve_invocation()
            while taken is None:
                taken = broker.retrieve_invocation()
            pipe.send((str(taken), time.monotonic()))
    except BaseException as exc:
        pipe.send(("error", repr(exc)))
        raise


def pickup_latencies(target: Target, wakeup: str, samples: int) -> list[float]:
    """Seconds from the start of each route to the idle consumer holding the id."""
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    consumer = ctx.Process(target=latency_consumer, args=(target, wakeup, samples, theirs))
    consumer.start()
    if not ours.poll(DEADLINE_SEC) or ours.recv() != "ready":
        raise RuntimeError("the latency consumer did not start")
    broker = build_app(target).broker
    rng = random.Random(7)
    latencies = []
    for i in range(samples):
        # Long enough for the consumer to be back in its wait: it is idle when we route.
        time.sleep(rng.uniform(0.06, 0.12))
        routed = time.monotonic()
        broker.route_invocation(f"latency-{i}", "default", 0.0)
        if not ours.poll(DEADLINE_SEC):
            raise RuntimeError("the latency consumer stopped answering")
        taken, at = ours.recv()
        if taken == "error":
            raise RuntimeError(at)
        latencies.append(at - routed)
    consumer.join(DEADLINE_SEC)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- queue table under churn ---------------------------------------------------------

TABLE_SIZE_SQL = """
    SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid),
           coalesce(pg_total_relation_size(c.reltoastrelid), 0),
           s.n_live_tup, s.n_dead_tup, s.autovacuum_count
    FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE c.relname = 'pynenc_broker_message'"""


@dataclass
class Churn:
    pairs: int
    seconds: float
    samples: list[tuple[float, int, int, int, int, int, int]]  # t, heap, idx, toast, ...

    @property
    def final(self) -> tuple[float, int, int, int, int, int, int]:
        return self.samples[-1]

    def largest(self) -> int:
        return max(heap + idx + toast for _, heap, idx, toast, *_ in self.samples)


CHURN_VARIANTS = {
    "the migration's autovacuum settings": None,
    "the server's autovacuum defaults": (
        "ALTER TABLE pynenc_broker_message RESET (autovacuum_vacuum_scale_factor, "
        "autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay)"
    ),
    "no autovacuum": "ALTER TABLE pynenc_broker_message SET (autovacuum_enabled = false)",
}
"""Variants of the queue table for the churn measurement, each made in its own database."""


def churn(target: Target, pairs: int, consumers: int) -> Churn:
    """Make ``pairs`` route-and-retrieve pairs while sampling the queue table's size."""
    samples: list[tuple[float, int, int, int, int, int, int]] = []
    done = threading.Event()
    began = time.monotonic()

    def sample() -> None:
        with psycopg.connect(target.postgres_url, autocommit=True) as conn:
            while True:
                row = conn.execute(TABLE_SIZE_SQL).fetchone()
                assert row is not None
                samples.append((time.monotonic() - began, *(int(v) for v in row)))  # type: ignore[arg-type]
                if done.wait(2.0):
                    return

    sampler = threading.Thread(target=sample)
    sampler.start()
    rate = run_pairs(target, consumers, pairs)
    done.set()
    sampler.join()
    time.sleep(0.6)  # the statistics collector reports with a short delay
    with psycopg.connect(target.postgres_url, autocommit=True) as conn:
        row = conn.execute(TABLE_SIZE_SQL).fetchone()
        assert row is not None
        samples.append((time.monotonic() - began, *(int(v) for v in row)))  # type: ignore[arg-type]
    return Churn(pairs, pairs / rate, samples)


# -- report ------------------------------------------------------------------------


def kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB"


CHURN_KEYS = {
    "migration": "the migration's autovacuum settings",
    "defaults": "the server's autovacuum defaults",
    "off": "no autovacuum",
}


class Report:
    """Lines of one docs section, printed as they come."""

    def __init__(self, name: str, facts: list[str]) -> None:
        self.name = name
        self.lines = list(facts)

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


def measure_throughput(report: Report, target: Callable[[str], Target], args: Any) -> None:
    rates: dict[tuple[str, int], list[float]] = {}
    for round_number in range(args.rounds):
        for consumers in CONSUMERS:
            # The stacks alternate within a round; the order rotates every round.
            shift = round_number % len(STACKS)
            for stack in STACKS[shift:] + STACKS[:shift]:
                t = target(stack)
                rate = run_pairs(t, consumers, args.pairs)
                purge(t)
                rates.setdefault((stack, consumers), []).append(rate)
                print(
                    f"  round {round_number + 1}: {stack}, {consumers} consumer(s): "
                    f"{rate:,.0f} pairs/s",
                    flush=True,
                )

    def ratio(stack: str, consumers: int, base: tuple[str, int]) -> float:
        """Median of the per-round ratios: both runs of a round saw the same machine."""
        pairs = zip(rates[(stack, consumers)], rates[base], strict=True)
        return median([mine / theirs for mine, theirs in pairs])

    report.say(
        f"Route-and-retrieve pairs per second ({args.pairs:,} pairs per run; figures are "
        f"medians of {args.rounds} rounds, ratios medians of the per-round ratios; higher "
        "is better):"
    )
    report.say()
    report.say("| Broker | 1 consumer | 4 consumers | 4 vs 1 | vs SQLite, 1 | vs SQLite, 4 |")
    report.say("|---|---:|---:|---:|---:|---:|")
    for stack in STACKS:
        one, four = (median(rates[(stack, c)]) for c in CONSUMERS)
        report.say(
            f"| {stack} | {one:,.0f} | {four:,.0f} | {ratio(stack, 4, (stack, 1)):.2f}x | "
            f"{ratio(stack, 1, (SQLITE, 1)):.2f}x | {ratio(stack, 4, (SQLITE, 4)):.2f}x |"
        )
    report.say()


def measure_latency(report: Report, target: Callable[[str], Target], args: Any) -> None:
    report.say(
        f"Idle pickup latency, from the start of `route_invocation` to the waiting consumer "
        f"(another process) holding the id ({args.latency_samples} samples each; lower is "
        "better):"
    )
    report.say()
    report.say("| Wake-up | p50 | p99 | max |")
    report.say("|---|---:|---:|---:|")
    for wakeup, label in (("listen", "LISTEN/NOTIFY"), ("poll", "polling every 0.05 s")):
        lat = pickup_latencies(target(OURS), wakeup, args.latency_samples)
        report.say(
            f"| {label} | {percentile(lat, 0.5) * 1000:.1f} ms | "
            f"{percentile(lat, 0.99) * 1000:.1f} ms | {max(lat) * 1000:.1f} ms |"
        )
    report.say()


def measure_churn(report: Report, admin_url: str, args: Any) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('autovacuum'), current_setting('autovacuum_naptime')"
        ).fetchone()
    autovacuum, naptime = row if row else ("?", "?")
    report.say(
        f"Queue table after {args.churn_pairs:,} route-and-retrieve pairs by 4 consumers, "
        f"each variant in a fresh database (server: autovacuum = {autovacuum}, "
        f"autovacuum_naptime = {naptime}; lower is better):"
    )
    report.say()
    report.say(
        "| Table settings | seconds | heap | indexes | total at the end | largest seen "
        "| dead rows at the end | autovacuums |"
    )
    report.say("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in args.churn_variants:
        label = CHURN_KEYS[key]
        statement = CHURN_VARIANTS[label]
        with bench_database(admin_url) as churn_db:
            if statement:
                with psycopg.connect(churn_db.url, autocommit=True) as conn:
                    conn.execute(statement)
            churn_target = Target(OURS, churn_db.url, "", f"churn-{uuid.uuid4().hex[:8]}")
            result = churn(churn_target, args.churn_pairs, 4)
        _, heap, idx, toast, _, dead, vacuums = result.final
        report.say(
            f"| {label} | {result.seconds:.0f} | {kib(heap)} | {kib(idx)} | "
            f"{kib(heap + idx + toast)} | {kib(result.largest())} | {dead:,} | {vacuums} |"
        )
        print("  samples (s, heap, indexes, toast, live, dead, autovacuums):")
        for sample in result.samples:
            print(f"    {sample}")
    report.say()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.broker", description=__doc__)
    parser.add_argument("--pairs", type=int, default=2000, help="pairs per throughput run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians over them)")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--churn-pairs", type=int, default=100_000)
    parser.add_argument(
        "--churn-variants", nargs="*", default=list(CHURN_KEYS), choices=list(CHURN_KEYS)
    )
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "latency", "churn"])
    parser.add_argument(
        "--write-docs", action="store_true", help="write the results into docs/benchmarks.md"
    )
    parser.add_argument(
        "--docs-suffix", default="", help="write to sections broker-<measurement><suffix>"
    )
    args = parser.parse_args(argv)
    command = " ".join(
        ["python -m benchmarks.broker", *(argv if argv is not None else sys.argv[1:])]
    )
    reports: list[Report] = []

    with postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        tmp = Path(tempfile.mkdtemp(prefix="pynenc-bench-broker-"))

        def target(stack: str) -> Target:
            return Target(stack, db.url, str(tmp / "broker.db"), f"bench-{uuid.uuid4().hex[:8]}")

        machine = [f"- {fact}" for fact in machine_description(db.url)]
        for name, measure in (
            ("throughput", lambda r: measure_throughput(r, target, args)),
            ("latency", lambda r: measure_latency(r, target, args)),
            ("churn", lambda r: measure_churn(r, admin_url, args)),
        ):
            if name in args.skip:
                continue
            report = Report(
                f"broker-{name}{args.docs_suffix}",
                [
                    f"`{command}`",
                    "",
                    *machine,
                    f"- load average (1/5/15 min) at start: {load_average()}",
                    "",
                ],
            )
            measure(report)
            report.say(f"- load average (1/5/15 min) at the end: {load_average()}")
            reports.append(report)

    if args.write_docs:
        for report in reports:
            replace_section(report.name, "\n".join(report.lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
