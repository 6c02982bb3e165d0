"""Soak: the Postgres-only stack runs tasks for minutes with a short retention window.

One runner process (``PersistentProcessRunner``, ``--workers`` worker processes) takes
tiny tasks that the benchmark submits continuously in batches (``parallelize``, then
wait for every result), for ``--minutes`` minutes. Retention with a short window
(``--retention``, 60 s) runs every ``--retention-interval`` seconds: by default in a
thread of the benchmark, through :func:`benchmarks.retention_adapter.purge_finished`;
with ``--retention-by cluster``, the runners apply it themselves (the settings
``postgres_retention`` and ``postgres_retention_interval``, in a version that has
them). At the end of each
minute the benchmark records the minute's tasks per second and, for every ``pynenc_*``
table, its live and dead rows (the server's statistics), its updates and how many of
them were HOT, its autovacuum runs and its size (table, indexes and TOAST).

Targets (issue 21): the sizes plateau (the total of the last three minutes within
10 % of each other), the last minute's throughput is at least 0.9x the first's, and no
row points at a removed invocation once the runners have stopped.

``--default-storage`` first resets the per-table storage parameters that migration 0011
sets (what a database had before it), to measure what they change.

Run it with ``python -m benchmarks.soak`` (``--minutes 10``; ``--write-docs``). The
server is ``--postgres-url`` / ``$PYNENC_BENCH_POSTGRES_URL``, else an embedded
PostgreSQL 18; the benchmark creates its own database there and drops it at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

from benchmarks import e2e, e2e_app
from benchmarks.common import (
    bench_database,
    load_average,
    machine_description,
    postgres_server,
    replace_section,
)
from benchmarks.retention_adapter import purge_finished
from pynenc_postgres import conf
from pynenc_postgres.db.engine import dispose_all

REPO = Path(__file__).resolve().parent.parent
STORAGE_MIGRATION = REPO / "alembic" / "versions" / "0011_table_storage.py"
TARGET_PLATEAU = 0.10
TARGET_THROUGHPUT = 0.9

TABLE_STATS = """
    SELECT s.relname, s.n_live_tup, s.n_dead_tup, s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd,
           s.n_tup_del, s.autovacuum_count, pg_total_relation_size(s.relid)
    FROM pg_stat_user_tables s
    WHERE s.schemaname = 'public' AND s.relname LIKE 'pynenc%%'
      AND s.relname <> 'pynenc_alembic_version'
    ORDER BY s.relname"""

# Rows that point at an invocation: (table, column holding the invocation id).
POINTERS = (
    ("pynenc_invocation_history", "invocation_id"),
    ("pynenc_invocation_result", "invocation_id"),
    ("pynenc_invocation_exception", "invocation_id"),
    ("pynenc_workflow_run", "workflow_id"),
    ("pynenc_workflow_sub_invocation", "sub_invocation_id"),
    ("pynenc_orchestrator_invocation", "invocation_id"),
    ("pynenc_orchestrator_argument", "invocation_id"),
    ("pynenc_orchestrator_waiting", "waited_invocation_id"),
    ("pynenc_orchestrator_waiting", "waiter_invocation_id"),
    ("pynenc_broker_message", "invocation_id"),
)


@dataclass(frozen=True)
class TableStats:
    live: int
    dead: int
    inserts: int
    updates: int
    hot_updates: int
    deletes: int
    autovacuums: int
    size: int


@dataclass
class Minute:
    tasks: int
    seconds: float
    tables: dict[str, TableStats]

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds

    @property
    def size(self) -> int:
        return sum(t.size for t in self.tables.values())

    @property
    def live(self) -> int:
        return sum(t.live for t in self.tables.values())

    @property
    def dead(self) -> int:
        return sum(t.dead for t in self.tables.values())


@dataclass
class Retention:
    """What the retention thread did."""

    passes: int = 0
    seconds: float = 0.0
    rows: int = 0
    errors: list[str] = field(default_factory=list)


def table_stats(conn: psycopg.Connection[Any]) -> dict[str, TableStats]:
    return {row[0]: TableStats(*(int(v) for v in row[1:])) for row in conn.execute(TABLE_STATS)}


def orphans(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows pointing at an invocation whose ``pynenc_invocation`` row is gone."""
    out = {}
    for table, column in POINTERS:
        row = conn.execute(
            f"""SELECT count(*) FROM {table} x WHERE NOT EXISTS (
                    SELECT 1 FROM pynenc_invocation i
                    WHERE i.app_id = x.app_id AND i.invocation_id = x.{column})"""
        ).fetchone()
        out[f"{table}.{column}"] = int(row[0]) if row else 0
    return out


def storage_migration() -> ModuleType | None:
    """Migration 0011's module, for the parameters it sets (None before it exists)."""
    if not STORAGE_MIGRATION.exists():
        return None
    spec = importlib.util.spec_from_file_location("table_storage_0011", STORAGE_MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reset_storage(url: str) -> None:
    """Undo migration 0011's storage parameters (its downgrade's statements)."""
    module = storage_migration()
    if module is None:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in module.downgrade_statements():
            conn.execute(statement)


def retention_loop(
    url: str, app_id: str, window: float, interval: float, stop: threading.Event, out: Retention
) -> None:
    while not stop.wait(interval):
        began = time.perf_counter()
        try:
            rows = purge_finished(url, app_id, timedelta(seconds=window))
        except Exception as error:  # a failed pass is reported, the next one goes on
            out.errors.append(f"{type(error).__name__}: {error}")
            continue
        out.passes += 1
        out.seconds += time.perf_counter() - began
        out.rows += sum(rows.values())


def soak(url: str, args: argparse.Namespace, scratch: Path) -> tuple[list[Minute], Retention]:
    stack = e2e.stack_env(e2e.PG, url, scratch)
    app_id = stack["PYNENC__APP_ID"]
    by_cluster = args.retention_by == "cluster"
    if by_cluster:
        stack["PYNENC__POSTGRES_RETENTION"] = f"{args.retention:.0f}s"
        stack["PYNENC__POSTGRES_RETENTION_INTERVAL"] = f"{args.retention_interval:.0f}s"
    minutes: list[Minute] = []
    retention = Retention()
    stop = threading.Event()
    thread = threading.Thread(
        target=retention_loop,
        args=(url, app_id, args.retention, args.retention_interval, stop, retention),
        name="retention",
    )
    with (
        e2e.running(stack, 1, scratch / "runner.log", workers_per_runner=args.workers),
        psycopg.connect(url, autocommit=True) as conn,
    ):
        if not by_cluster:
            thread.start()
        try:
            began = minute_began = time.perf_counter()
            done = 0
            while len(minutes) < args.minutes:
                group = e2e_app.tiny.parallelize([(i,) for i in range(args.batch)])
                assert len(list(group.results)) == args.batch
                done += args.batch
                now = time.perf_counter()
                if now - minute_began >= args.minute_seconds:
                    minutes.append(Minute(done, now - minute_began, table_stats(conn)))
                    last = minutes[-1]
                    print(
                        f"minute {len(minutes)}: {last.tasks_per_second:.0f} tasks/s, "
                        f"{last.size / 2**20:.1f} MB, {last.live:,} live rows, "
                        f"{last.dead:,} dead; retention {retention.passes} passes, "
                        f"{retention.rows:,} rows, {len(retention.errors)} errors",
                        flush=True,
                    )
                    done, minute_began = 0, now
            print(f"ran {time.perf_counter() - began:.0f} s", flush=True)
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()
    dispose_all()
    return minutes, retention


def delta(last: TableStats, first: TableStats | None, name: str) -> int:
    return int(getattr(last, name)) - (int(getattr(first, name)) if first else 0)


def render(
    minutes: list[Minute],
    retention: Retention,
    orphan_rows: dict[str, int],
    start: dict[str, TableStats],
    args: argparse.Namespace,
) -> tuple[str, bool]:
    lines = [
        f"{len(minutes)} minutes, 1 runner with {args.workers} worker processes, tiny tasks "
        f"submitted in batches of {args.batch}; retention window {args.retention:.0f} s, "
        f"applied every {args.retention_interval:.0f} s "
        + (
            "by the runners (the cluster's scheduled retention)"
            if args.retention_by == "cluster"
            else f"by the benchmark ({retention.passes} passes, {retention.rows:,} rows, "
            f"{retention.seconds / max(retention.passes, 1):.2f} s per pass, "
            f"{len(retention.errors)} failed)"
        )
        + "; storage parameters: "
        + ("reset to the defaults (before 0011)" if args.default_storage else "as migrated")
        + ".",
        "",
        "| minute | tasks/s | MB (all pynenc_* tables) | live rows | dead rows |",
        "|---:|---:|---:|---:|---:|",
    ]
    for k, m in enumerate(minutes, 1):
        lines.append(
            f"| {k} | {m.tasks_per_second:.0f} | {m.size / 2**20:.1f} | {m.live:,} | {m.dead:,} |"
        )
    last = minutes[-1]
    tail = [m.size for m in minutes[-3:]]
    plateau = max(tail) / min(tail) - 1
    ratio = last.tasks_per_second / minutes[0].tasks_per_second
    orphan_total = sum(orphan_rows.values())
    met = plateau <= TARGET_PLATEAU and ratio >= TARGET_THROUGHPUT and orphan_total == 0
    lines += [
        "",
        f"- Sizes of the last three minutes within **{plateau:.1%}** of each other "
        f"(target {TARGET_PLATEAU:.0%}).",
        f"- Last minute's throughput **{ratio:.2f}x** the first's (target ≥ {TARGET_THROUGHPUT}x).",
        f"- Rows pointing at a removed invocation after the run: **{orphan_total}** "
        "(target 0)"
        + (
            ": " + ", ".join(f"{k} {v}" for k, v in orphan_rows.items() if v)
            if orphan_total
            else ""
        )
        + ".",
        "",
        "Per table over the whole run (updates, and how many were HOT; the largest dead-row "
        "count seen at a minute's end; autovacuum runs; size at the first and the last "
        "minute's end):",
        "",
        "| table | inserts | updates | HOT % | deletes | max dead rows | autovacuums "
        "| MB first | MB last |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for table, stats in last.tables.items():
        before = start.get(table)
        updates = delta(stats, before, "updates")
        hot = delta(stats, before, "hot_updates")
        inserts = delta(stats, before, "inserts")
        deletes = delta(stats, before, "deletes")
        if not (updates or inserts or deletes):
            continue
        max_dead = max(m.tables[table].dead for m in minutes if table in m.tables)
        first_size = minutes[0].tables[table].size if table in minutes[0].tables else 0
        lines.append(
            f"| {table} | {inserts:,} | {updates:,} | "
            f"{(100 * hot / updates if updates else 0):.0f} | {deletes:,} | {max_dead:,} | "
            f"{delta(stats, before, 'autovacuums')} | {first_size / 2**20:.2f} | "
            f"{stats.size / 2**20:.2f} |"
        )
    if retention.errors:
        lines += ["", "Retention errors: " + "; ".join(retention.errors[:5])]
    return "\n".join(lines), met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--retention", type=float, default=60.0, help="window, seconds")
    parser.add_argument("--retention-interval", type=float, default=10.0, help="seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--retention-by", choices=["benchmark", "cluster"], default="benchmark")
    parser.add_argument("--default-storage", action="store_true")
    parser.add_argument(
        "--minute-seconds", type=float, default=60.0, help="length of a 'minute' (smoke runs)"
    )
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.minutes < 1:
        parser.error("--minutes must be at least 1")
    scheduled = any(
        hasattr(cls, "postgres_retention") for cls in vars(conf).values() if isinstance(cls, type)
    )
    if args.retention_by == "cluster" and not scheduled:
        parser.error("this version has no scheduled retention: use --retention-by benchmark")
    scratch = Path(tempfile.mkdtemp(prefix="pynenc-soak-"))
    with postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        machine = machine_description(db.url)
        print("\n".join(machine) + f"\nrunner logs: {scratch / 'runner.log'}")
        if args.default_storage:
            reset_storage(db.url)
        with psycopg.connect(db.url, autocommit=True) as conn:
            start = table_stats(conn)
        minutes, retention = soak(db.url, args, scratch)
        with psycopg.connect(db.url, autocommit=True) as conn:
            orphan_rows = orphans(conn)
    text, met = render(minutes, retention, orphan_rows, start, args)
    load = load_average()
    print(text)
    print(f"targets {'met' if met else 'missed'}; load average {load}")
    if args.write_docs:
        command = "python -m benchmarks.soak " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-docs"
        )
        section = "soak-default-storage" if args.default_storage else "soak"
        body = ["Machine:", ""] + [f"- {line}" for line in machine]
        body += ["", f"Command: `{command.strip()}`", f"Load average: {load}", "", text]
        replace_section(section, "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
