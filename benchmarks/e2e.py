"""End-to-end benchmark: tiny tasks through pynenc's PersistentProcessRunner, submit to result.

Three pynenc stacks and procrastinate, measured in the same run and alternately within
each round, so machine noise hits them alike:

* **Postgres only**, durable: PostgresBroker, PostgresOrchestrator, PostgresTrigger,
  PostgresClientDataStore and PostgresStateBackend, ``synchronous_commit=on`` (the
  server's default: every commit waits for the WAL flush);
* **Postgres only**, relaxed: the same with ``synchronous_commit=off``;
* **pynenc's SQLite stack**: SQLiteBroker, SQLiteOrchestrator, SQLiteTrigger,
  SQLiteClientDataStore and SQLiteStateBackend on one file (WAL, ``synchronous=NORMAL``:
  no flush per commit, so compare it with the relaxed figure for like with like);
* **procrastinate** 3.x, the Postgres-native task queue, on the same server and database
  with its defaults (durable commits, ``LISTEN``/``NOTIFY``), at concurrency 1 and 4 per
  worker process (installed from ``benchmarks/requirements.txt``, never a dependency of
  the package).

For each stack, with one and with two worker processes (pynenc: one or two runner
processes, each a ``PersistentProcessRunner`` with one worker process, as two hosts would
each run one; procrastinate: one or two ``procrastinate worker`` processes):

* **throughput**: N tiny tasks submitted in one batch (pynenc: ``task.parallelize``;
  procrastinate: ``batch_defer``), timed from the start of the submission until the client
  has read the last result (procrastinate stores no results: until the client has seen
  every job succeeded, polling as often as pynenc's client polls, every 0.1 s); tasks/s;
* **idle latency** (one runner): with the runner idle, one task is submitted; the time
  from the start of the submission to the start of the task body (pynenc sets the
  invocation RUNNING just before it), p50 and p90 over the samples of every round.

The runners are separate processes configured by ``PYNENC__*`` variables alone, as in a
deployment; they are started fresh for every measurement (a new app id, a new SQLite
file), and warmed up before the clock starts. Both sides log at ``warning``.

Run it with ``python -m benchmarks.e2e``. The Postgres server is ``--postgres-url`` or
``$PYNENC_BENCH_POSTGRES_URL``, else an embedded PostgreSQL; the benchmark creates its
own database there and drops it afterwards. ``--write-docs`` puts the results into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    server_label,
)
from pynenc_postgres.db.engine import dispose_all

REPO = Path(__file__).resolve().parent.parent
RUNNER = "from benchmarks.e2e_app import app; app.runner.run()"

PG = "Postgres only (durable)"
PG_OFF = "Postgres only (synchronous_commit=off)"
SQLITE = "pynenc SQLite stack"
PROCRASTINATE = "procrastinate {version}, concurrency {concurrency}"
PROCRASTINATE_CONCURRENCY = (1, 4)
PYNENC_STACKS = (PG, PG_OFF, SQLITE)
# pynenc's client polls for results every invocation_wait_results_sleep_time_sec (0.1 s).
POLL_SECONDS = 0.1
RUNNERS = (1, 2)
WORKERS_PER_RUNNER = 1


def procrastinate_version() -> str:
    from importlib.metadata import version

    return version("procrastinate")


def procrastinate_stack(concurrency: int) -> str:
    return PROCRASTINATE.format(version=procrastinate_version(), concurrency=concurrency)


def stacks() -> tuple[str, ...]:
    return PYNENC_STACKS + tuple(procrastinate_stack(c) for c in PROCRASTINATE_CONCURRENCY)


# Long enough for a runner to go idle: its workers wait in the broker again.
IDLE_SECONDS = 0.5
STARTUP_SECONDS = 120.0

POSTGRES_COMPONENTS = {
    "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
    "PYNENC__BROKER_CLS": "PostgresBroker",
    "PYNENC__ORCHESTRATOR_CLS": "PostgresOrchestrator",
    "PYNENC__TRIGGER_CLS": "PostgresTrigger",
    "PYNENC__CLIENT_DATA_STORE_CLS": "PostgresClientDataStore",
}
SQLITE_COMPONENTS = {
    "PYNENC__STATE_BACKEND_CLS": "SQLiteStateBackend",
    "PYNENC__BROKER_CLS": "SQLiteBroker",
    "PYNENC__ORCHESTRATOR_CLS": "SQLiteOrchestrator",
    "PYNENC__TRIGGER_CLS": "SQLiteTrigger",
    "PYNENC__CLIENT_DATA_STORE_CLS": "SQLiteClientDataStore",
}


def stack_env(stack: str, url: str, scratch: Path) -> dict[str, str]:
    """The ``PYNENC__*`` variables of one measurement of ``stack`` (a fresh app id)."""
    env = {
        "PYNENC__APP_ID": f"e2e-{uuid.uuid4().hex[:10]}",
        "PYNENC__LOGGING_LEVEL": "warning",
    }
    if stack == SQLITE:
        env |= SQLITE_COMPONENTS
        env["PYNENC__SQLITE_DB_PATH"] = str(scratch / f"{env['PYNENC__APP_ID']}.db")
    else:
        env |= POSTGRES_COMPONENTS
        env["PYNENC__POSTGRES_URL"] = url
        if stack == PG_OFF:
            env["PYNENC__POSTGRES_SYNCHRONOUS_COMMIT"] = "off"
    return env


@contextmanager
def pynenc_environment(env: dict[str, str]) -> Iterator[None]:
    """This process's ``PYNENC__*`` variables are ``env`` alone for the duration."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("PYNENC__")}
    for name in saved:
        del os.environ[name]
    os.environ.update(env)
    try:
        yield
    finally:
        for name in env:
            os.environ.pop(name, None)
        os.environ.update(saved)


@contextmanager
def running(
    stack_vars: dict[str, str],
    runners: int,
    log: Path,
    workers_per_runner: int = WORKERS_PER_RUNNER,
) -> Iterator[Pynenc]:
    """``runners`` runner processes, and a client app bound to the tasks."""
    runner_env = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")}
    runner_env |= stack_vars
    runner_env |= {
        "PYNENC__RUNNER_CLS": "PersistentProcessRunner",
        "PYNENC__NUM_PROCESSES": str(workers_per_runner),
    }
    workers = runners * workers_per_runner
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("ab") as out:
            for _ in range(runners):
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", RUNNER],
                        cwd=REPO,
                        env=runner_env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        with pynenc_environment(stack_vars):
            client = Pynenc()
            e2e_app.tiny.app = client
            e2e_app.started_at.app = client
            deadline = time.monotonic() + STARTUP_SECONDS
            # Every runner process and each of its workers heartbeat as a runner.
            while len(client.orchestrator.get_active_runners()) < runners + workers:
                exited = any(process.poll() is not None for process in processes)
                if exited or time.monotonic() > deadline:
                    raise RuntimeError(f"the runners did not start their workers; see {log}")
                time.sleep(0.1)
            # Every worker imports and connects before the clock starts.
            warm = list(e2e_app.tiny.parallelize([(i,) for i in range(20 * workers)]).results)
            assert sorted(warm) == list(range(20 * workers))
            yield client
    finally:
        for process in processes:
            stop(process)
        e2e_app.tiny.app = e2e_app.app
        e2e_app.started_at.app = e2e_app.app
        dispose_all()


@contextmanager
def procrastinate_running(url: str, workers: int, concurrency: int, log: Path) -> Iterator[None]:
    """``workers`` procrastinate worker processes, warmed up, with a fresh job table."""
    from benchmarks import e2e_procrastinate

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
    env = {**os.environ, e2e_procrastinate.URL_ENV: url}
    code = f"from benchmarks.e2e_procrastinate import work; work({concurrency})"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("ab") as out:
            for _ in range(workers):
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", code],
                        cwd=REPO,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        # Every worker fetches jobs before the clock starts.
        procrastinate_drain(url, 20 * workers)
        yield
    finally:
        for process in processes:
            stop(process)


def procrastinate_drain(url: str, tasks: int) -> float:
    """Defer ``tasks`` jobs in one batch; jobs per second until every one has succeeded."""
    from benchmarks import e2e_procrastinate

    with psycopg.connect(url, autocommit=True) as conn:
        done_before = _succeeded(conn)
        began = time.perf_counter()
        e2e_procrastinate.tiny.batch_defer(*({"x": i} for i in range(tasks)))
        deadline = time.monotonic() + STARTUP_SECONDS
        while _succeeded(conn) < done_before + tasks:
            if time.monotonic() > deadline:
                raise RuntimeError("procrastinate's workers did not finish the jobs")
            time.sleep(POLL_SECONDS)
        return tasks / (time.perf_counter() - began)


def _succeeded(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
    ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def procrastinate_app(url: str) -> Iterator[None]:
    """procrastinate's client, open on ``url``, with its schema applied once."""
    # The module reads its URL when first imported, as its worker processes do.
    os.environ["PROCRASTINATE_BENCH_URL"] = url
    from benchmarks import e2e_procrastinate

    app = e2e_procrastinate.app
    with app.open():
        with psycopg.connect(url, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if not exists or exists[0] is None:
            app.schema_manager.apply_schema()
        yield


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the runner and its workers (their own process group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any
    except ProcessLookupError:
        pass


def throughput(tasks: int) -> float:
    began = time.perf_counter()
    group = e2e_app.tiny.parallelize([(i,) for i in range(tasks)])
    results = list(group.results)
    elapsed = time.perf_counter() - began
    # The group yields results as the invocations finish, not in submission order.
    assert sorted(results) == list(range(tasks)), "wrong results"
    return tasks / elapsed


def idle_latencies(samples: int) -> list[float]:
    """Seconds from the start of a submission to the start of the task body, runner idle."""
    latencies = []
    for _ in range(samples):
        time.sleep(IDLE_SECONDS)
        submitted = time.time()
        invocation = e2e_app.started_at()
        latencies.append(float(invocation.result) - submitted)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Results:
    tasks_per_second: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def median_rate(self, stack: str, runners: int) -> float:
        return median(self.tasks_per_second[(stack, runners)])

    def round_ratios(self, a: tuple[str, int], b: tuple[str, int]) -> float:
        """Median over rounds of the ratio a / b measured in the same round."""
        pairs = zip(self.tasks_per_second[a], self.tasks_per_second[b], strict=True)
        return median([x / y for x, y in pairs])


def measure(url: str, tasks: int, rounds: int, samples: int, scratch: Path) -> Results:
    results = Results()
    log = scratch / "runner.log"
    every = stacks()
    with procrastinate_app(url):
        for round_number in range(rounds):
            # Rotate the order, so no stack always runs first (or last) in a round.
            shift = round_number % len(every)
            order = every[shift:] + every[:shift]
            for runners in RUNNERS:
                for stack in order:
                    line = f"round {round_number + 1}: {stack}, {runners} worker process(es): "
                    if stack in PYNENC_STACKS:
                        with running(stack_env(stack, url, scratch), runners, log):
                            rate = throughput(tasks)
                            line += f"{rate:.0f} tasks/s"
                            if runners == 1:
                                latencies = idle_latencies(samples)
                                results.latencies.setdefault(stack, []).extend(latencies)
                                line += f"; idle latency p50 {median(latencies) * 1000:.0f} ms"
                    else:
                        concurrency = int(stack.rsplit(" ", 1)[1])
                        with procrastinate_running(url, runners, concurrency, log):
                            rate = procrastinate_drain(url, tasks)
                        line += f"{rate:.0f} jobs/s"
                    results.tasks_per_second.setdefault((stack, runners), []).append(rate)
                    print(line, flush=True)
    return results


def best_procrastinate(results: Results, runners: int) -> list[float]:
    """procrastinate's best rate of each round (its best concurrency in that round)."""
    per_concurrency = [
        results.tasks_per_second[(procrastinate_stack(c), runners)]
        for c in PROCRASTINATE_CONCURRENCY
    ]
    return [max(rates) for rates in zip(*per_concurrency, strict=True)]


def render(
    results: Results, tasks: int, rounds: int, samples: int, machine: list[str], load: list[str]
) -> str:
    lines = [
        f"End to end through `PersistentProcessRunner` (one worker process per runner) and "
        f"procrastinate's worker: {tasks} tiny tasks submitted in one batch, timed to the last "
        f"result; medians of {rounds} rounds (stacks alternate within each round; the runners "
        f"and workers restart for every measurement). Command: `python -m benchmarks.e2e "
        f"--tasks {tasks} --rounds {rounds} --latency-samples {samples}`.",
        "",
        *[f"- {fact}" for fact in machine],
        f"- load average (1/5/15 min): {load[0]} at the start, {load[1]} at the end",
        "",
        "| Stack | 1 worker process (tasks/s) | 2 worker processes (tasks/s) | 2 / 1 | "
        "idle submit to RUNNING p50 | p90 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stack in stacks():
        one, two = results.median_rate(stack, 1), results.median_rate(stack, 2)
        scale = results.round_ratios((stack, 2), (stack, 1))
        lat = results.latencies.get(stack)
        latency = (
            f"{median(lat) * 1000:.1f} ms | {percentile(lat, 0.9) * 1000:.1f} ms"
            if lat
            else "- | -"
        )
        lines.append(f"| {stack} | {one:.0f} | {two:.0f} | {scale:.2f}x | {latency} |")
    lines.append("")
    for runners in RUNNERS:
        best = best_procrastinate(results, runners)
        ours = results.tasks_per_second[(PG, runners)]
        ratio = median([a / b for a, b in zip(ours, best, strict=True)])
        lines.append(
            f"- {PG} against procrastinate's best concurrency, {runners} worker process(es), "
            f"both durable: {ratio:.2f}x"
        )
    for stack in (PG, PG_OFF):
        for runners in RUNNERS:
            ratio = results.round_ratios((stack, runners), (SQLITE, runners))
            lines.append(
                f"- {stack} against pynenc's SQLite stack, {runners} runner(s): {ratio:.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=20, help="per stack and round")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="pynenc-e2e-"))
    with postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        machine = machine_description(db.url)
        print(f"Postgres: {server_label(db.url)}; runner logs: {scratch / 'runner.log'}")
        load = [load_average()]
        results = measure(db.url, args.tasks, args.rounds, args.latency_samples, scratch)
        load.append(load_average())
    body = render(results, args.tasks, args.rounds, args.latency_samples, machine, load)
    print()
    print(body)
    if args.write_docs:
        replace_section("e2e", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
