"""Does autovacuum follow a retention run, and is the freed space reused? Defaults against 0011.

Two schemas of one database hold the same rows: ``public``, migrated to head (with the
storage parameters of migration 0011), and ``defaults``, migrated the same way and then
reset to the server's autovacuum settings (0011's downgrade). Each is seeded with
``--days`` days (14) of ``--per-day`` finished invocations (:mod:`benchmarks.retention_seed`),
vacuumed and analyzed. Then, in both:

1. the oldest day is purged (:func:`benchmarks.retention_adapter.purge_finished`), as a
   daily retention run with a 14-day window does;
2. the benchmark waits up to two autovacuum naps (``autovacuum_naptime``) and reports,
   per table, the dead rows the purge left, the dead rows at which autovacuum starts
   (``threshold + scale_factor * reltuples``), and whether autovacuum ran;
3. the next day is seeded, and each table's size is compared with its size before the
   purge: space that a vacuum freed is reused, space that none freed is not.

The figures are counts and sizes, not times: the machine's load does not change them.
Run it with ``python -m benchmarks.retention_autovacuum`` (``--write-docs``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.common import bench_database, machine_description, postgres_server, replace_section
from benchmarks.retention_adapter import purge_finished
from benchmarks.retention_seed import APP, SEEDED_TABLES, seed_day, table_sizes
from benchmarks.soak import storage_migration
from pynenc_postgres.db import schema as db_schema
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.settings import DatabaseSettings

SCHEMAS = ("public", "defaults")

STATS = """
    SELECT s.relname, s.n_dead_tup, c.reltuples::bigint, s.autovacuum_count,
           coalesce(
               (SELECT option_value::float8 FROM pg_options_to_table(c.reloptions)
                WHERE option_name = 'autovacuum_vacuum_threshold'),
               current_setting('autovacuum_vacuum_threshold')::float8)
           + coalesce(
               (SELECT option_value::float8 FROM pg_options_to_table(c.reloptions)
                WHERE option_name = 'autovacuum_vacuum_scale_factor'),
               current_setting('autovacuum_vacuum_scale_factor')::float8) * c.reltuples
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = %s AND s.relname = ANY(%s)"""


@dataclass
class TableResult:
    dead_after_purge: int
    vacuum_at: int
    vacuumed: bool
    size_before: int
    size_after_next_day: int
    heap_before: int
    heap_after_next_day: int

    @property
    def growth(self) -> float:
        return self.size_after_next_day / self.size_before - 1

    @property
    def heap_growth(self) -> float:
        return self.heap_after_next_day / self.heap_before - 1


def stats(conn: psycopg.Connection[Any], schema: str) -> dict[str, tuple[int, int, int, int]]:
    rows = conn.execute(STATS, (schema, list(SEEDED_TABLES))).fetchall()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def reset_storage(conn: psycopg.Connection[Any], schema: str) -> None:
    module = storage_migration()
    if module is None:
        return
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    for statement in module.downgrade_statements():
        conn.execute(statement)
    conn.execute("RESET search_path")


def oldest_day_age(conn: psycopg.Connection[Any], days_ago: int) -> timedelta:
    """The age of the start of the day after ``days_ago``, plus a minute: a purge of what
    is older takes that day but its last minute, and nothing of the next day although
    it reads the clock a moment later."""
    row = conn.execute(
        "SELECT now() - (date_trunc('day', now()) - %s * interval '1 day') + interval '1 minute'",
        (days_ago - 1,),
    ).fetchone()
    assert row is not None
    age: timedelta = row[0]
    return age


def measure(url: str, days: int, per_day: int) -> dict[str, dict[str, TableResult]]:
    with psycopg.connect(url, autocommit=True) as conn:
        db_schema.upgrade(DatabaseSettings(url=url, schema="defaults"))
        reset_storage(conn, "defaults")
        naptime = conn.execute("SELECT current_setting('autovacuum_naptime')::interval")
        nap = naptime.fetchone()[0].total_seconds()  # type: ignore[index]
        oldest = days + 1
        for schema in SCHEMAS:
            began = time.perf_counter()
            for d in range(days):
                seed_day(conn, schema, per_day, offset=d * per_day, days_ago=oldest - d)
            print(f"{schema}: seeded {days} days in {time.perf_counter() - began:.0f} s")
        conn.execute("VACUUM (ANALYZE)")
        before = {schema: table_sizes(conn, schema) for schema in SCHEMAS}
        heap_before = {schema: table_sizes(conn, schema, heap_only=True) for schema in SCHEMAS}
        counts_before = {schema: stats(conn, schema) for schema in SCHEMAS}
        age = oldest_day_age(conn, oldest)
    for schema in SCHEMAS:
        rows = purge_finished(url, APP, age, schema=schema)
        dispose_all()
        print(f"{schema}: purged {sum(rows.values()):,} rows")
    with psycopg.connect(url, autocommit=True) as conn:
        after_purge = {schema: stats(conn, schema) for schema in SCHEMAS}
        deadline = time.monotonic() + 2 * nap + 10
        now = after_purge
        while time.monotonic() < deadline:
            now = {schema: stats(conn, schema) for schema in SCHEMAS}
            if all(now[s][t][2] > counts_before[s][t][2] for s in SCHEMAS for t in SEEDED_TABLES):
                break
            time.sleep(2)
        print(f"waited {2 * nap + 10 - (deadline - time.monotonic()):.0f} s for autovacuum")
        for schema in SCHEMAS:
            seed_day(conn, schema, per_day, offset=days * per_day, days_ago=1)
        after = {schema: table_sizes(conn, schema) for schema in SCHEMAS}
        heap_after = {schema: table_sizes(conn, schema, heap_only=True) for schema in SCHEMAS}
    return {
        schema: {
            table: TableResult(
                dead_after_purge=after_purge[schema][table][0],
                vacuum_at=after_purge[schema][table][3],
                vacuumed=now[schema][table][2] > counts_before[schema][table][2],
                size_before=before[schema][table],
                size_after_next_day=after[schema][table],
                heap_before=heap_before[schema][table],
                heap_after_next_day=heap_after[schema][table],
            )
            for table in SEEDED_TABLES
        }
        for schema in SCHEMAS
    }


def render(results: dict[str, dict[str, TableResult]], days: int, per_day: int) -> str:
    label = {"public": "0011", "defaults": "server defaults"}
    lines = [
        f"{days} days of {per_day:,} invocations kept; the oldest day purged, then the "
        "next day seeded. Growth of each table over its size before the purge: of its "
        "rows' pages (the heap), and with its indexes and TOAST.",
        "",
        "| settings | table | dead rows after the purge | autovacuum starts at | "
        "autovacuum ran | rows' pages after the next day | with indexes |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for schema, tables in results.items():
        for table, r in tables.items():
            lines.append(
                f"| {label[schema]} | {table} | {r.dead_after_purge:,} | {r.vacuum_at:,} | "
                f"{'yes' if r.vacuumed else 'no'} | {r.heap_growth:+.1%} | {r.growth:+.1%} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.retention_autovacuum", description=__doc__
    )
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--per-day", type=int, default=20_000)
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    with postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        machine = machine_description(db.url)
        print("\n".join(machine))
        results = measure(db.url, args.days, args.per_day)
    text = render(results, args.days, args.per_day)
    print(text)
    if args.write_docs:
        command = "python -m benchmarks.retention_autovacuum " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-docs"
        )
        body = ["Machine:", ""] + [f"- {line}" for line in machine]
        body += ["", f"Command: `{command.strip()}`", "", text]
        replace_section("retention-autovacuum", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
