"""Retention at volume: a day of 1,000,000 invocations removed by batched DELETE and by
dropping time partitions, on the same server and the same rows.

One database, migrated to head, is seeded server-side (``INSERT ... SELECT
generate_series``, :mod:`benchmarks.retention_seed`) with "a day" of N finished
invocations two days old: the invocation row, five history rows, the result and the
orchestrator's row of each (the broker's rows of finished invocations are gone), plus
a small set of live invocations of today that the hot-path probe works on. Then:

a) **DELETE**: the day is removed by the project's purge
   (:func:`benchmarks.retention_adapter.purge_finished`, one call),
   in batches; total seconds and rows per second. Meanwhile a probe on its own
   connection repeats two hot-path calls of a runner, with the project's own statements:
   the orchestrator's status change of a live invocation and the state backend's
   history insert. Their p50 and p95 during the purge are compared with the same probe
   run just before it, with nothing else running.
b) **Partitions**: the same day, seeded the same way into a copy of the tables that
   dominate the bytes (history, invocation, result, orchestrator invocation), each
   partitioned by day on its time column (recorded_at, created_at, stored_at,
   registered_at) with a partition per day of a 14-day window (``--partitions-kept``);
   retention is ``DETACH PARTITION ... CONCURRENTLY`` and ``DROP TABLE`` of the day's
   partitions. Seconds, and the same probe during it. The probe's calls name no time,
   so each probes every partition: its figures before the removal show that price.
c) **Space reuse** (DELETE design): in a fresh database, seed a day, purge it, vacuum
   (what autovacuum does in the day between two retention runs), five times; the
   tables' sizes after each seeding, the last against the first (target within 10 %).

Run it with ``python -m benchmarks.retention_volume`` (``--invocations`` scales the day
down, ``--cycle-invocations`` the days of c). It uses databases of its own on
``--postgres-url`` / ``$PYNENC_BENCH_POSTGRES_URL`` (else an embedded PostgreSQL 18) and
drops them at the end. ``--write-docs`` writes the figures into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from benchmarks.common import (
    bench_database,
    load_average,
    machine_description,
    postgres_server,
    replace_section,
)
from benchmarks.retention_adapter import purge_finished
from benchmarks.retention_seed import (
    APP,
    PARTITIONED_SCHEMA,
    create_partitioned_copy,
    drop_day_partitions,
    seed_day,
    seed_live,
    table_sizes,
)
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.orchestrator.sql import statements as orchestrator_statements
from pynenc_postgres.state_backend.sql import statements as state_statements

TARGET_SECONDS = 60.0
TARGET_SLOWDOWN = 2.0
TARGET_GROWTH = 0.10
# The probe paces itself: a runner's calls arrive spread out, not back to back.
PROBE_PAUSE = 0.005


# -- the hot-path probe -------------------------------------------------------------------


@dataclass
class Latencies:
    """Seconds per call of each hot-path statement, in the order measured."""

    calls: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.calls.setdefault(name, []).append(seconds)

    def percentile(self, name: str, q: float) -> float:
        values = sorted(self.calls.get(name, []))
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    def count(self, name: str) -> int:
        return len(self.calls.get(name, []))


STATUS_CHANGE = "status change (orchestrator UPDATE)"
HISTORY_INSERT = "history insert (state backend)"
PROBES = (STATUS_CHANGE, HISTORY_INSERT)


def _probe_loop(url: str, schema: str, live_ids: list[str], stop: threading.Event) -> Latencies:
    orchestrator = orchestrator_statements(schema)
    state = state_statements(schema)
    out = Latencies()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        i = 0
        while not stop.is_set():
            invocation_id = live_ids[i % len(live_ids)]
            i += 1
            began = time.perf_counter()
            conn.execute(
                orchestrator.transition_overriding_owner,
                ("running", True, None, uuid.uuid4().hex, APP, invocation_id, ["running"]),
            ).fetchall()
            out.add(STATUS_CHANGE, time.perf_counter() - began)
            now = datetime.now(UTC)
            began = time.perf_counter()
            conn.execute(
                state.add_history,
                (invocation_id, APP, now, "running", "probe", now, "probe-runner", None),
            )
            out.add(HISTORY_INSERT, time.perf_counter() - began)
            time.sleep(PROBE_PAUSE)
    return out


@contextmanager
def probing(url: str, schema: str, live_ids: list[str]) -> Iterator[Latencies]:
    """Run the probe in a thread while the block runs; its latencies fill the result."""
    stop = threading.Event()
    result = Latencies()

    def target() -> None:
        measured = _probe_loop(url, schema, live_ids, stop)
        result.calls.update(measured.calls)

    thread = threading.Thread(target=target, name="hot-path-probe")
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


def baseline(url: str, schema: str, live_ids: list[str], seconds: float) -> Latencies:
    with probing(url, schema, live_ids) as measured:
        time.sleep(seconds)
    return measured


# -- the measurements ---------------------------------------------------------------------


@dataclass
class Run:
    """One retention of the day and what the probe saw."""

    design: str
    seconds: float
    rows: int
    before: Latencies
    during: Latencies
    detail: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")

    def slowdown(self, name: str, q: float) -> float:
        return self.during.percentile(name, q) / self.before.percentile(name, q)

    @property
    def fast(self) -> bool:
        return self.seconds < TARGET_SECONDS

    @property
    def calm(self) -> bool:
        return all(self.slowdown(name, 0.95) <= TARGET_SLOWDOWN for name in PROBES)

    def meets(self) -> bool:
        return self.fast and self.calm

    def verdict(self) -> str:
        """Which of the two targets (time, hot-path latency) the run meets."""
        time_part = "meets" if self.fast else "misses"
        latency_part = "meets" if self.calm else "misses"
        if time_part == latency_part:
            return f"{time_part} the time and the latency targets"
        return f"{time_part} the time target and {latency_part} the latency target"


def settle(url: str) -> None:
    """What a day-old table looks like: vacuumed, analyzed, and its WAL checkpointed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


def timed(label: str, action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    value = action()
    seconds = time.perf_counter() - began
    print(f"{label}: {seconds:.1f} s", flush=True)
    return seconds, value


def measure_delete(
    url: str, invocations: int, live: int, baseline_seconds: float
) -> tuple[Run, dict[str, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        timed(f"seed {invocations:,} invocations", lambda: seed_day(conn, "public", invocations))
        live_ids = seed_live(conn, "public", live)
    timed("vacuum, analyze, checkpoint", lambda: settle(url))
    with psycopg.connect(url, autocommit=True) as conn:
        sizes = table_sizes(conn, "public")
    before = baseline(url, "public", live_ids, baseline_seconds)
    with probing(url, "public", live_ids) as during:
        seconds, rows = timed("purge (DELETE)", lambda: purge_finished(url, APP, timedelta(days=1)))
    dispose_all()
    detail = ", ".join(f"{table} {count:,}" for table, count in rows.items() if count)
    return Run("batched DELETE", seconds, sum(rows.values()), before, during, detail), sizes


def measure_partitions(
    url: str, invocations: int, live: int, baseline_seconds: float, days_kept: int
) -> Run:
    with psycopg.connect(url, autocommit=True) as conn:
        create_partitioned_copy(conn, days_kept)
        timed(
            f"seed {invocations:,} invocations (partitioned)",
            lambda: seed_day(conn, PARTITIONED_SCHEMA, invocations),
        )
        live_ids = seed_live(conn, PARTITIONED_SCHEMA, live)
        rows = 0
        for partition in drop_day_partitions(conn, dry_run=True):
            counted = conn.execute(f"SELECT count(*) FROM {PARTITIONED_SCHEMA}.{partition}")
            rows += int(counted.fetchone()[0])  # type: ignore[index]
    timed("vacuum, analyze, checkpoint", lambda: settle(url))
    before = baseline(url, PARTITIONED_SCHEMA, live_ids, baseline_seconds)
    with probing(url, PARTITIONED_SCHEMA, live_ids) as during:

        def drop() -> list[str]:
            with psycopg.connect(url, autocommit=True) as conn:
                return drop_day_partitions(conn)

        seconds, dropped = timed("retention (DETACH CONCURRENTLY + DROP)", drop)
        # A probe of a few milliseconds' operation would see almost nothing: keep it
        # running for at least as long as the baseline's first second.
        time.sleep(max(0.0, 1.0 - seconds))
    per_table = max(days_kept, 2) + 2
    detail = f"{len(dropped)} partitions dropped, each table had {per_table}: " + ", ".join(dropped)
    return Run("DETACH + DROP partitions", seconds, rows, before, during, detail)


@dataclass
class Cycle:
    seeded_bytes: dict[str, int]
    purge_seconds: float
    vacuum_seconds: float


def measure_cycles(url: str, invocations: int, cycles: int) -> list[Cycle]:
    out = []
    for k in range(cycles):
        with psycopg.connect(url, autocommit=True) as conn:
            offset = k * invocations
            began = time.perf_counter()
            seed_day(conn, "public", invocations, offset=offset)
            print(f"cycle {k + 1}: seeded in {time.perf_counter() - began:.1f} s", flush=True)
            sizes = table_sizes(conn, "public")
        seconds, _ = timed(
            f"cycle {k + 1}: purge", lambda: purge_finished(url, APP, timedelta(days=1))
        )
        dispose_all()

        def vacuum() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM")
                # The index pages that VACUUM empties can be reused only once no snapshot
                # predates their deletion: the next VACUUM (autovacuum's next run of the
                # day) hands them to the free space map. One transaction id moves the
                # horizon past them, as the day's work would.
                conn.execute("SELECT pg_current_xact_id()")
                conn.execute("VACUUM")

        vacuum_seconds, _ = timed(f"cycle {k + 1}: vacuum", vacuum)
        out.append(Cycle(sizes, seconds, vacuum_seconds))
    return out


# -- the report ---------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def render(
    runs: list[Run],
    cycles: list[Cycle],
    invocations: int,
    cycle_invocations: int,
    seeded: dict[str, int],
) -> str:
    lines = [
        f"A day of **{invocations:,} invocations** (five history rows, a result and an "
        "orchestrator row each), removed by each design; the probe's two hot-path calls "
        "before (nothing else running) and during the removal.",
        "",
        "Bytes of the seeded tables before retention (table, indexes and TOAST):",
        "",
        "| table | MB |",
        "|---|---:|",
    ]
    lines += [f"| {table} | {size / 2**20:,.0f} |" for table, size in seeded.items()]
    lines += [
        "",
        "| design | seconds | rows | rows/s | hot-path call | p50 before ms | p50 during ms "
        "| p95 before ms | p95 during ms | p95 x | max during ms | samples during |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for i, name in enumerate(PROBES):
            head = (
                f"| {run.design} | {run.seconds:.2f} | {run.rows:,} | {run.rows_per_second:,.0f} "
                if i == 0
                else "| | | | "
            )
            lines.append(
                head + f"| {name} | {_ms(run.before.percentile(name, 0.5))} "
                f"| {_ms(run.during.percentile(name, 0.5))} "
                f"| {_ms(run.before.percentile(name, 0.95))} "
                f"| {_ms(run.during.percentile(name, 0.95))} "
                f"| {run.slowdown(name, 0.95):.2f} | {_ms(run.during.percentile(name, 1.0))} "
                f"| {run.during.count(name):,} |"
            )
    lines.append("")
    for run in runs:
        lines.append(
            f"- {run.design}: {run.seconds:.1f} s (target < {TARGET_SECONDS:.0f} s), hot-path "
            f"p95 x{max(run.slowdown(n, 0.95) for n in PROBES):.2f} (target ≤ "
            f"{TARGET_SLOWDOWN:.0f}x): **{run.verdict()}**. Rows: {run.detail}."
        )
    if cycles:
        tables = list(cycles[0].seeded_bytes)
        lines += [
            "",
            f"Space reuse, batched DELETE: {len(cycles)} cycles of {cycle_invocations:,} "
            "invocations (seed a day, purge it, then `VACUUM` twice, as autovacuum runs in "
            "the day between two retention runs: b-tree pages emptied by one vacuum are "
            "reusable only after the next); MB of each table after each seeding:",
            "",
            "| cycle | " + " | ".join(tables) + " | total | purge s | vacuum s |",
            "|---:|" + "---:|" * (len(tables) + 3),
        ]
        for k, cycle in enumerate(cycles, 1):
            total = sum(cycle.seeded_bytes.values())
            lines.append(
                f"| {k} | "
                + " | ".join(f"{cycle.seeded_bytes[t] / 2**20:,.1f}" for t in tables)
                + f" | {total / 2**20:,.1f} | {cycle.purge_seconds:.1f} "
                f"| {cycle.vacuum_seconds:.1f} |"
            )
        first = sum(cycles[0].seeded_bytes.values())
        last = sum(cycles[-1].seeded_bytes.values())
        growth = last / first - 1
        verdict = "meets" if growth <= TARGET_GROWTH else "misses"
        lines += [
            "",
            f"- After {len(cycles)} cycles the tables take {growth:+.1%} of the first "
            f"cycle's bytes (target within {TARGET_GROWTH:.0%}): **{verdict}** the target.",
        ]
    return "\n".join(lines)


def recommendation(runs: list[Run], cycles: list[Cycle]) -> str:
    """Which design meets the targets on this machine, read off the figures."""
    by_design = {run.design: run for run in runs}
    delete = by_design.get("batched DELETE")
    part = by_design.get("DETACH + DROP partitions")
    parts = []
    if delete is not None:
        reuse = ""
        if cycles:
            first = sum(cycles[0].seeded_bytes.values())
            growth = sum(cycles[-1].seeded_bytes.values()) / first - 1
            reuse = f", and its space is reused ({growth:+.1%} after {len(cycles)} cycles)"
        parts.append(
            f"Batched DELETE removed the day in {delete.seconds:.1f} s "
            f"({delete.rows_per_second:,.0f} rows/s) with the hot path's p95 at "
            f"x{max(delete.slowdown(n, 0.95) for n in PROBES):.2f}{reuse}: it "
            + delete.verdict()
            + " on this machine."
        )
    if part is not None:
        parts.append(
            f"Dropping the day's partitions took {part.seconds:.2f} s with the hot path's "
            f"p95 at x{max(part.slowdown(n, 0.95) for n in PROBES):.2f}: it "
            + part.verdict()
            + "; its time does not grow with the day's rows (it unlinks files), and "
            "the space goes back to the operating system at once."
        )
    if delete is not None and part is not None:
        costs = ", ".join(
            f"{name} p50 {_ms(part.before.percentile(name, 0.5))} ms against "
            f"{_ms(delete.before.percentile(name, 0.5))} ms"
            for name in PROBES
        )
        parts.append(
            "Its price is paid on every call: a call by invocation id names no time, so "
            f"it probes every partition ({costs} unpartitioned, before any removal)."
        )
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.retention_volume", description=__doc__
    )
    parser.add_argument("-n", "--invocations", type=int, default=1_000_000)
    parser.add_argument(
        "--live", type=int, default=10_000, help="live invocations of today, for the probe"
    )
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument(
        "--partitions-kept", type=int, default=14, help="past days' partitions per table in b"
    )
    parser.add_argument(
        "--cycle-invocations", type=int, help="invocations per day in c (default: -n)"
    )
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--skip", choices=["delete", "partitions", "cycles"], action="append")
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    skip = set(args.skip or ())
    cycle_invocations = args.cycle_invocations or args.invocations
    runs: list[Run] = []
    cycles: list[Cycle] = []
    seeded: dict[str, int] = {}
    with postgres_server(args.postgres_url) as admin_url:
        with bench_database(admin_url) as db:
            machine = machine_description(db.url)
            print("\n".join(machine))
            if "delete" not in skip:
                run, seeded = measure_delete(
                    db.url, args.invocations, args.live, args.baseline_seconds
                )
                runs.append(run)
                print(render([run], [], args.invocations, cycle_invocations, seeded), flush=True)
            if "partitions" not in skip:
                runs.append(
                    measure_partitions(
                        db.url,
                        args.invocations,
                        args.live,
                        args.baseline_seconds,
                        args.partitions_kept,
                    )
                )
                print(render(runs[-1:], [], args.invocations, cycle_invocations, {}), flush=True)
        if "cycles" not in skip:
            with bench_database(admin_url) as db:
                cycles = measure_cycles(db.url, cycle_invocations, args.cycles)
    load = load_average()
    text = render(runs, cycles, args.invocations, cycle_invocations, seeded)
    advice = recommendation(runs, cycles)
    print(text)
    print(advice)
    print(f"load average {load}")
    if args.write_docs:
        command = "python -m benchmarks.retention_volume " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-docs"
        )
        body = ["Machine:", ""] + [f"- {line}" for line in machine]
        body += ["", f"Command: `{command.strip()}`", f"Load average: {load}", "", text]
        body += ["", f"Reading of this run: {advice}"]
        replace_section("retention-volume", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
