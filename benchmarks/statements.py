"""Statements per task: what the server does for one tiny task, end to end, client included.

One ``PersistentProcessRunner`` with two worker processes (a separate process configured by
``PYNENC__*`` variables alone, as in a deployment) runs N tiny tasks that the client submits
with ``task.parallelize`` and whose results it reads, on the Postgres-only stack with durable
commits. Around that work (after the runner's warm-up, until every session has ended) the
server's own counters are read (:mod:`benchmarks.server_counters`): committed transactions of
the database (``pg_stat_database.xact_commit``) and calls per normalised statement
(``pg_stat_statements``), divided by N. The idle loops of the runner and its workers during the
run are included: they are part of what a task costs.

Run it with ``python -m benchmarks.statements``. The server is ``--postgres-url`` or
``$PYNENC_BENCH_POSTGRES_URL`` (which must load ``pg_stat_statements``), else an embedded
PostgreSQL 18 that does. ``--write-docs`` puts the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import e2e_app
from benchmarks.common import (
    bench_database,
    load_average,
    machine_description,
    replace_section,
)
from benchmarks.e2e import PG, running, stack_env
from benchmarks.server_counters import (
    Counters,
    counting_postgres_server,
    difference,
    ensure_extension,
    short,
    snapshot,
)

WORKERS = 2
# Idle sessions publish their transaction counts at their next transaction a second after
# the last publication; a pause after the warm-up settles what the warm-up did.
SETTLE_AFTER_WARMUP = 2.0


def measure(url: str, tasks: int, scratch: Path) -> Counters:
    """The server's counts over ``tasks`` tiny tasks, from submission to the last result."""
    ensure_extension(url)
    log = scratch / "runner.log"
    with running(stack_env(PG, url, scratch), 1, log, WORKERS):
        time.sleep(SETTLE_AFTER_WARMUP)
        before = snapshot(url)
        results = list(e2e_app.tiny.parallelize([(i,) for i in range(tasks)]).results)
        assert sorted(results) == list(range(tasks)), "wrong results"
    # The runner, its workers and the client's pool are closed: every session has ended
    # and published its counts.
    return difference(before, snapshot(url))


def render(counts: Counters, tasks: int, machine: list[str], load: list[str]) -> str:
    commits, calls = counts.per(tasks)
    lines = [
        f"{tasks} tiny tasks through one `PersistentProcessRunner` with {WORKERS} worker "
        "processes, submitted with `parallelize` and every result read by the client, on the "
        "Postgres-only stack (durable commits); the server's counters over the whole run, "
        "client, runner and workers included (their idle loops too). Command: "
        f"`python -m benchmarks.statements --tasks {tasks}`.",
        "",
        *[f"- {fact}" for fact in machine],
        f"- load average (1/5/15 min): {load[0]} at the start, {load[1]} at the end",
        "",
        f"**{commits:.1f} committed transactions and {calls:.1f} statements per task** "
        f"(rollbacks: {counts.rollbacks}).",
        "",
        "| statement | per task | rows per call |",
        "| --- | ---: | ---: |",
    ]
    for statement in counts.top(40):
        per_task = statement.calls / tasks
        if per_task < 0.005:
            continue
        rows = statement.rows / statement.calls if statement.calls else 0.0
        text = short(statement.query, 110).replace("|", "\\|")
        lines.append(f"| `{text}` | {per_task:.2f} | {rows:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--tasks", type=int, default=500, help="tasks to run")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="pynenc-statements-"))
    with counting_postgres_server(args.postgres_url) as admin, bench_database(admin) as db:
        machine = machine_description(db.url)
        print(f"runner log: {scratch / 'runner.log'}")
        load = [load_average()]
        counts = measure(db.url, args.tasks, scratch)
        load.append(load_average())
    body = render(counts, args.tasks, machine, load)
    print()
    print(body)
    if args.write_docs:
        replace_section("statements", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
