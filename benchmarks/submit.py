"""Submitting benchmark: tasks per second submitted, in a batch and one at a time.

No runner runs: the clock covers the client's work until every submission has committed
(pynenc: the invocation stored, registered, recorded and routed; procrastinate: the job
inserted). Stacks, measured in the same run and alternately within each round:

* **Postgres only** (durable): every pynenc component on Postgres;
* **pynenc SQLite stack** (WAL, ``synchronous=NORMAL``) and **pynenc memory stack** (one
  process, nothing stored: pynenc's own Python cost, the floor for any backend);
* **procrastinate** 3.x on the same server and database (durable), installed from
  ``benchmarks/requirements.txt``.

Measurements: ``task.parallelize`` of N tasks (procrastinate: ``batch_defer`` of N jobs),
and M single submits one after the other (``task(x)``; procrastinate: ``defer``).

Run it with ``python -m benchmarks.submit``. The Postgres server is ``--postgres-url`` or
``$PYNENC_BENCH_POSTGRES_URL``, else an embedded PostgreSQL. ``--write-docs`` puts the
results into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from pynenc import Pynenc

from benchmarks import e2e_app
from benchmarks.common import (
    bench_database,
    load_average,
    machine_description,
    median,
    postgres_server,
    replace_section,
)
from benchmarks.e2e import (
    PG,
    SQLITE,
    procrastinate_app,
    procrastinate_version,
    pynenc_environment,
    stack_env,
)
from pynenc_postgres.db.engine import dispose_all

MEMORY = "pynenc memory stack (the floor)"
MEMORY_COMPONENTS = {
    "PYNENC__STATE_BACKEND_CLS": "MemStateBackend",
    "PYNENC__BROKER_CLS": "MemBroker",
    "PYNENC__ORCHESTRATOR_CLS": "MemOrchestrator",
    "PYNENC__TRIGGER_CLS": "MemTrigger",
    "PYNENC__CLIENT_DATA_STORE_CLS": "MemClientDataStore",
}


def procrastinate_stack() -> str:
    return f"procrastinate {procrastinate_version()} (`batch_defer`, `defer`)"


def stacks() -> tuple[str, ...]:
    return (PG, SQLITE, MEMORY, procrastinate_stack())


def pynenc_rates(env: dict[str, str], batch: int, singles: int) -> tuple[float, float]:
    """``parallelize`` of ``batch`` tasks and ``singles`` single submits, per second."""
    with pynenc_environment(env):
        client = Pynenc()
        e2e_app.tiny.app = client
        try:
            e2e_app.tiny(-1)  # connect, check the schema, register the runner context
            began = time.perf_counter()
            group = e2e_app.tiny.parallelize([(i,) for i in range(batch)])
            batch_rate = batch / (time.perf_counter() - began)
            assert len(group.invocation_map) == batch
            began = time.perf_counter()
            for i in range(singles):
                e2e_app.tiny(i)
            single_rate = singles / (time.perf_counter() - began)
        finally:
            e2e_app.tiny.app = e2e_app.app
            dispose_all()
    return batch_rate, single_rate


def procrastinate_rates(url: str, batch: int, singles: int) -> tuple[float, float]:
    from benchmarks import e2e_procrastinate

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
    e2e_procrastinate.tiny.defer(x=-1)
    began = time.perf_counter()
    e2e_procrastinate.tiny.batch_defer(*({"x": i} for i in range(batch)))
    batch_rate = batch / (time.perf_counter() - began)
    began = time.perf_counter()
    for i in range(singles):
        e2e_procrastinate.tiny.defer(x=i)
    single_rate = singles / (time.perf_counter() - began)
    return batch_rate, single_rate


def measure(
    url: str, batch: int, singles: int, rounds: int, scratch: Path
) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {}
    every = stacks()
    with procrastinate_app(url):
        for round_number in range(rounds):
            shift = round_number % len(every)
            for stack in every[shift:] + every[:shift]:
                if stack == MEMORY:
                    env = {
                        "PYNENC__APP_ID": f"submit-mem-{round_number}",
                        # As for every other stack: the floor pays for no log lines.
                        "PYNENC__LOGGING_LEVEL": "warning",
                        **MEMORY_COMPONENTS,
                    }
                    rates = pynenc_rates(env, batch, singles)
                elif stack in (PG, SQLITE):
                    rates = pynenc_rates(stack_env(stack, url, scratch), batch, singles)
                else:
                    rates = procrastinate_rates(url, batch, singles)
                results.setdefault(stack, []).append(rates)
                print(
                    f"round {round_number + 1}: {stack}: parallelize {rates[0]:,.0f}/s, "
                    f"single {rates[1]:,.0f}/s",
                    flush=True,
                )
    return results


def render(
    results: dict[str, list[tuple[float, float]]],
    batch: int,
    singles: int,
    rounds: int,
    machine: list[str],
    load: list[str],
) -> str:
    proc = results[procrastinate_stack()]
    ours = results[PG]
    lines = [
        f"Submitting without runners: `parallelize` of {batch:,} tasks (procrastinate: "
        f"`batch_defer`) and {singles:,} single submits one after the other (procrastinate: "
        f"`defer`), timed until every submission has committed; medians of {rounds} rounds "
        f"(stacks alternate within each round). Command: `python -m benchmarks.submit "
        f"--batch {batch} --singles {singles} --rounds {rounds}`.",
        "",
        *[f"- {fact}" for fact in machine],
        f"- load average (1/5/15 min): {load[0]} at the start, {load[1]} at the end",
        "",
        "| Stack | `parallelize` (tasks/s) | one at a time (tasks/s) |",
        "| --- | ---: | ---: |",
    ]
    for stack in stacks():
        rates = results[stack]
        lines.append(
            f"| {stack} | {median([r[0] for r in rates]):,.0f} | "
            f"{median([r[1] for r in rates]):,.0f} |"
        )
    batch_ratio = median([a[0] / b[0] for a, b in zip(ours, proc, strict=True)])
    single_ratio = median([a[1] / b[1] for a, b in zip(ours, proc, strict=True)])
    lines += [
        "",
        f"- {PG} against procrastinate, in a batch: {batch_ratio:.2f}x; "
        f"one at a time: {single_ratio:.2f}x (medians of the per-round ratios)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--batch", type=int, default=10_000, help="tasks per parallelize")
    parser.add_argument("--singles", type=int, default=1_000, help="single submits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="pynenc-submit-"))
    with postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        machine = machine_description(db.url)
        load = [load_average()]
        results = measure(db.url, args.batch, args.singles, args.rounds, scratch)
        load.append(load_average())
    body = render(results, args.batch, args.singles, args.rounds, machine, load)
    print()
    print(body)
    if args.write_docs:
        replace_section("submit", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
