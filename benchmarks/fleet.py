"""Fleet benchmark: what a host of idle and busy worker processes costs the server.

One host runs pynenc's ``PersistentProcessRunner`` with 1, 4, 16, 32 (and 64 if asked)
worker processes on the Postgres-only stack, configured by ``PYNENC__*`` variables alone,
in ``LISTEN`` and in poll mode. For each size and mode it measures, on an embedded
PostgreSQL 18 that counts statements (:mod:`benchmarks.server_counters`):

* **idle**: after ``--settle`` seconds without work, committed transactions
  (``pg_stat_database.xact_commit``) and statements (``pg_stat_statements``) per second
  over ``--idle`` seconds, and the server sessions the host holds;
* **one at a time**: ``--singles`` tasks submitted one after the other, each once the
  previous one ran and ``--gap`` seconds passed (so the fleet is idle when it arrives):
  submit-to-start latency p50/p99 (the task reports when its body started), and per task
  the transactions, statements and claims (``DELETE`` from the queue) the server saw. The
  claims are given raw and net of the idle rate measured just before (the claims the
  task caused);
* **burst**: ``--burst`` tasks submitted in one batch (``parallelize``), timed from the
  submission to the last task's start report: tasks/s and transactions per task.

Then the **backlog**: one fleet of ``--backlog-workers`` processes runs bursts with and
without ``--backlog`` queued invocations of the same app (REGISTERED, in a queue the
fleet does not consume), ``--backlog-rounds`` times in turn (every other round with the
backlog first): the backlog is seeded with ``INSERT ... SELECT generate_series`` and
analyzed before each burst with it, and deleted after. The ratio of tasks/s is the
median over the rounds; the idle window over the backlog gives the shared buffers per
call of every statement the idle loop sends.

The task reports to the benchmark over UDP, and the client never polls results, so the
counts are the fleet's and the submissions' only. Run it with ``python -m
benchmarks.fleet``; ``--workers 1,4 --modes listen --idle 10 --singles 10 --burst 200
--backlog 10000`` is a quick preliminary run. ``--write-docs`` writes the results into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pynenc import Pynenc

from benchmarks import fleet_app
from benchmarks.common import (
    bench_database,
    load_average,
    machine_description,
    median,
    replace_section,
)
from benchmarks.server_counters import (
    UNCOUNTED,
    Counters,
    counting_postgres_server,
    difference,
    ensure_extension,
    short,
    snapshot,
)
from pynenc_postgres.capacity import idle_fleet
from pynenc_postgres.db.engine import dispose_all

REPO = Path(__file__).resolve().parent.parent
OPERATIONS = REPO / "docs" / "operations.md"
CAPACITY_WORKERS = 8
CAPACITY_HOSTS = (1, 10, 50)
RUNNER = "from benchmarks.fleet_app import app; app.runner.run()"
STARTUP_SECONDS = 600.0
REPORT_SECONDS = 300.0
BACKLOG_QUEUE = "backlog"
MODES = ("listen", "poll")
BURST_TAIL_SECONDS = 3.0
# The benchmark's own client sessions are not the host's.
CLIENT_APPLICATION_NAME = "pynenc-fleet-bench-client"

POSTGRES_COMPONENTS = {
    "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
    "PYNENC__BROKER_CLS": "PostgresBroker",
    "PYNENC__ORCHESTRATOR_CLS": "PostgresOrchestrator",
    "PYNENC__TRIGGER_CLS": "PostgresTrigger",
    "PYNENC__CLIENT_DATA_STORE_CLS": "PostgresClientDataStore",
}


def is_claim(query: str) -> bool:
    return "DELETE FROM" in query and "pynenc_broker_message" in query and "SKIP LOCKED" in query


# -- the task reports ----------------------------------------------------------------------


class Reports:
    """Start reports of ``fleet_app.ping`` received over UDP: argument -> start time."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.started: dict[int, float] = {}
        self.pids: dict[int, int] = {}
        self._cond = threading.Condition()
        self._numbers = iter(range(10**9))
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(256)
            except TimeoutError:
                continue
            except OSError:
                return
            n, started, pid = data.decode().split()
            with self._cond:
                self.started[int(n)] = float(started)
                self.pids[int(n)] = int(pid)
                self._cond.notify_all()

    def fresh(self, count: int) -> list[int]:
        """Arguments never used before in this run, so an old report cannot answer for them."""
        return [next(self._numbers) for _ in range(count)]

    def wait_for(self, numbers: range | list[int], timeout: float = REPORT_SECONDS) -> None:
        wanted = set(numbers)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not wanted <= self.started.keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = len(wanted - self.started.keys())
                    raise RuntimeError(f"{missing} of {len(wanted)} tasks never started")
                self._cond.wait(remaining)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(2)


# -- one fleet -----------------------------------------------------------------------------


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


@dataclass
class Fleet:
    """A running host: one runner process and its workers, and the client app."""

    url: str
    app_id: str
    workers: int
    mode: str
    client: Pynenc
    process: subprocess.Popen[bytes]

    def sessions(self) -> int:
        """Server sessions of the database other than this benchmark's own."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT {UNCOUNTED} count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid() AND application_name <> %s",
                (CLIENT_APPLICATION_NAME,),
            ).fetchone()
        return int(row[0]) if row else 0


def stack_env(url: str, app_id: str, mode: str, port: int) -> dict[str, str]:
    return {
        **POSTGRES_COMPONENTS,
        "PYNENC__APP_ID": app_id,
        "PYNENC__POSTGRES_URL": url,
        "PYNENC__POSTGRES_BROKER_WAKEUP": mode,
        "PYNENC__LOGGING_LEVEL": "warning",
        fleet_app.PORT_ENV: str(port),
    }


@contextmanager
def running_fleet(
    url: str, workers: int, mode: str, reports: Reports, log: Path
) -> Iterator[Fleet]:
    app_id = f"fleet-{uuid.uuid4().hex[:10]}"
    env = stack_env(url, app_id, mode, reports.port)
    runner_env = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")}
    runner_env |= env
    runner_env |= {
        "PYNENC__RUNNER_CLS": "PersistentProcessRunner",
        "PYNENC__NUM_PROCESSES": str(workers),
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            cwd=REPO,
            env=runner_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client_env = {k: v for k, v in env.items() if k.startswith("PYNENC__")}
        client_env["PYNENC__POSTGRES_APPLICATION_NAME"] = CLIENT_APPLICATION_NAME
        with pynenc_environment(client_env):
            client = Pynenc()
            fleet_app.ping.app = client
            fleet = Fleet(url, app_id, workers, mode, client, process)
            deadline = time.monotonic() + STARTUP_SECONDS
            # The runner and each of its workers heartbeat as a runner.
            while len(client.orchestrator.get_active_runners()) < workers + 1:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the runner did not start its workers; see {log}")
                time.sleep(0.2)
            # Every worker imports, connects and runs tasks before anything is measured.
            warm = reports.fresh(8 * workers)
            list(fleet_app.ping.parallelize([(n,) for n in warm]).invocations)
            reports.wait_for(warm)
            yield fleet
    finally:
        stop(process)
        fleet_app.ping.app = fleet_app.app
        dispose_all()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the runner and its workers (their own process group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- measurements --------------------------------------------------------------------------


@dataclass
class Idle:
    seconds: float
    counters: Counters
    sessions: int

    @property
    def commits_per_second(self) -> float:
        return self.counters.commits / self.seconds

    @property
    def statements_per_second(self) -> float:
        return self.counters.calls / self.seconds

    @property
    def claims_per_second(self) -> float:
        return sum(s.calls for s in self.counters.statements.values() if is_claim(s.query)) / (
            self.seconds
        )


@dataclass
class Singles:
    latencies: list[float]
    counters: Counters
    seconds: float
    idle_claims_per_second: float

    @property
    def tasks(self) -> int:
        return len(self.latencies)

    @property
    def claims(self) -> int:
        return sum(s.calls for s in self.counters.statements.values() if is_claim(s.query))

    @property
    def net_claims_per_task(self) -> float:
        return (self.claims - self.idle_claims_per_second * self.seconds) / self.tasks


@dataclass
class Burst:
    tasks: int
    seconds: float
    counters: Counters

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds


def measure_idle(fleet: Fleet, url: str, settle: float, seconds: float) -> Idle:
    time.sleep(settle)
    sessions = fleet.sessions()
    before = snapshot(url)
    time.sleep(seconds)
    return Idle(seconds, difference(before, snapshot(url)), sessions)


def measure_singles(
    fleet: Fleet, url: str, reports: Reports, tasks: int, gap: float, idle: Idle
) -> Singles:
    latencies = []
    time.sleep(gap)
    before = snapshot(url)
    began = time.monotonic()
    for _ in range(tasks):
        (n,) = reports.fresh(1)
        submitted = time.time()
        fleet_app.ping(n)
        reports.wait_for([n])
        latencies.append(reports.started[n] - submitted)
        time.sleep(gap)
    elapsed = time.monotonic() - began
    counters = difference(before, snapshot(url))
    return Singles(latencies, counters, elapsed, idle.claims_per_second)


def measure_burst(fleet: Fleet, url: str, reports: Reports, tasks: int) -> Burst:
    """Submission to the last start report; the counts also cover the fleet finishing."""
    numbers = reports.fresh(tasks)
    before = snapshot(url)
    began = time.monotonic()
    list(fleet_app.ping.parallelize([(n,) for n in numbers]).invocations)
    reports.wait_for(numbers)
    elapsed = time.monotonic() - began
    # The last tasks finish and every busy session publishes its counts within a second.
    time.sleep(BURST_TAIL_SECONDS)
    return Burst(tasks, elapsed, difference(before, snapshot(url)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Row:
    mode: str
    workers: int
    idle: Idle
    singles: Singles | None = None
    burst: Burst | None = None


# -- the backlog ---------------------------------------------------------------------------

BACKLOG_SQL = (
    """
    INSERT INTO pynenc_invocation (app_id, invocation_id, task_id, call_id, arguments_id,
        serialized_arguments)
    SELECT %(app)s, 'backlog-' || i, 'benchmarks.fleet_app.ping',
           'benchmarks.fleet_app.ping:' || md5(i::text), md5(i::text), '{"n": "' || i || '"}'
    FROM generate_series(1, %(n)s) AS i""",
    """
    INSERT INTO pynenc_orchestrator_invocation (app_id, invocation_id, task_id, call_id,
        status, status_set_at)
    SELECT %(app)s, 'backlog-' || i, 'benchmarks.fleet_app.ping',
           'benchmarks.fleet_app.ping:' || md5(i::text), 'registered', now()
    FROM generate_series(1, %(n)s) AS i""",
    """
    INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id)
    SELECT %(app)s, %(queue)s, 0, 'backlog-' || i FROM generate_series(1, %(n)s) AS i""",
)


def seed_backlog(url: str, app_id: str, count: int) -> float:
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in BACKLOG_SQL:
            conn.execute(statement, {"app": app_id, "n": count, "queue": BACKLOG_QUEUE})
        conn.execute("ANALYZE")
    return time.monotonic() - began


def remove_backlog(url: str, app_id: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("pynenc_broker_message", "pynenc_orchestrator_invocation"):
            conn.execute(
                f"DELETE FROM {table} WHERE app_id = %s AND invocation_id LIKE 'backlog-%%'",
                (app_id,),
            )
        conn.execute(
            "DELETE FROM pynenc_invocation WHERE app_id = %s AND invocation_id LIKE 'backlog-%%'",
            (app_id,),
        )
        conn.execute("VACUUM ANALYZE pynenc_broker_message, pynenc_orchestrator_invocation")


@dataclass
class Backlog:
    """Bursts of one fleet without and with the backlog, alternating, and its idle loop."""

    count: int
    seed_seconds: float
    idle: Idle
    empty: list[Burst]
    full: list[Burst]

    @property
    def ratio(self) -> float:
        """Median over rounds of the backlog burst's tasks/s over the empty one's."""
        pairs = zip(self.full, self.empty, strict=True)
        return median([f.tasks_per_second / e.tasks_per_second for f, e in pairs])


def measure_backlog(fleet: Fleet, url: str, reports: Reports, args: Any) -> Backlog:
    empty: list[Burst] = []
    full: list[Burst] = []
    seeded = 0.0
    idle: Idle | None = None
    for round_number in range(args.backlog_rounds):
        # Every other round runs the backlog first, so neither side always goes first.
        backlog_first = round_number % 2 == 1
        if not backlog_first:
            empty.append(measure_burst(fleet, url, reports, args.burst))
        seeded = seed_backlog(url, fleet.app_id, args.backlog)
        if idle is None:
            idle = measure_idle(fleet, url, args.settle, args.idle)
        full.append(measure_burst(fleet, url, reports, args.burst))
        remove_backlog(url, fleet.app_id)
        if backlog_first:
            empty.append(measure_burst(fleet, url, reports, args.burst))
        print(
            f"  round {round_number + 1}: {empty[-1].tasks_per_second:.0f} tasks/s empty, "
            f"{full[-1].tasks_per_second:.0f} with the backlog",
            flush=True,
        )
    assert idle is not None
    return Backlog(args.backlog, seeded, idle, empty, full)


# -- report --------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


def statement_table(report: Report, counters: Counters, seconds: float, n: int = 12) -> None:
    report.say("| statement | calls/s | buffers/call |")
    report.say("| --- | ---: | ---: |")
    for s in counters.top(n):
        report.say(
            f"| `{short(s.query, 80).replace('|', '/')}` | {s.calls / seconds:.2f} "
            f"| {s.blocks_per_call:.1f} |"
        )


def render_rows(report: Report, rows: list[Row], args: Any) -> None:
    report.say(
        "| mode | workers | idle tx/s | idle tx/s per worker | idle statements/s | sessions "
        "| tx per task (one at a time) | claims per task (net) | submit to start p50 | p99 "
        f"| burst of {args.burst}: tasks/s | tx per task |"
    )
    report.say("| --- " + "| ---: " * 11 + "|")
    for row in rows:
        idle = row.idle
        cells = [
            row.mode,
            str(row.workers),
            f"{idle.commits_per_second:.1f}",
            f"{idle.commits_per_second / row.workers:.2f}",
            f"{idle.statements_per_second:.1f}",
            str(idle.sessions),
        ]
        if row.singles:
            s = row.singles
            cells += [
                f"{s.counters.commits / s.tasks:.1f}",
                f"{s.net_claims_per_task:.2f} ({s.claims / s.tasks:.1f} raw)",
                f"{median(s.latencies) * 1000:.1f} ms",
                f"{percentile(s.latencies, 0.99) * 1000:.1f} ms",
            ]
        else:
            cells += ["", "", "", ""]
        if row.burst:
            b = row.burst
            cells += [f"{b.tasks_per_second:.0f}", f"{b.counters.commits / b.tasks:.1f}"]
        else:
            cells += ["", ""]
        report.say("| " + " | ".join(cells) + " |")


def render_capacity(rows: list[Row], command: str) -> list[str]:
    """The capacity table of docs/operations.md: the formula, next to this run's host."""
    measured = {r.mode: r.idle for r in rows if r.workers == CAPACITY_WORKERS}
    lines = [
        f"Idle fleets of hosts with {CAPACITY_WORKERS} worker processes each, the defaults. "
        "Formula: `pynenc_postgres.capacity.idle_fleet`; measured: one host of "
        f"{CAPACITY_WORKERS} workers by `{command}`, times the number of hosts (the poll "
        "row measured without the pooler: the transactions are the same).",
        "",
        "| hosts | wake-up | server sessions | idle transactions/s (formula) | measured |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for hosts in CAPACITY_HOSTS:
        for mode, label in (("listen", "listen, direct"), ("poll", "poll, behind PgBouncer")):
            load = idle_fleet(hosts, CAPACITY_WORKERS, wakeup=mode)
            sessions = (
                f"{load.sessions}"
                if mode == "listen"
                else f"PgBouncer's pool ({load.sessions} client connections)"
            )
            idle = measured.get(mode)
            seen = f"{idle.commits_per_second * hosts:.1f}" if idle else "not run"
            lines.append(
                f"| {hosts} | {label} | {sessions} | {load.transactions_per_second:.1f} | {seen} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--postgres-url", help="a server with pg_stat_statements loaded")
    parser.add_argument(
        "--workers", default="1,4,8,16,32", help="worker processes, e.g. 1,4,16 (8: capacity)"
    )
    parser.add_argument("--modes", default="listen,poll")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before measuring")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle window")
    parser.add_argument("--singles", type=int, default=40, help="tasks one at a time")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between single tasks")
    parser.add_argument("--singles-workers", default="", help="sizes with singles (default all)")
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=100_000, help="0 skips the backlog run")
    parser.add_argument("--backlog-workers", type=int, default=16)
    parser.add_argument("--backlog-rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.workers.split(",") if n]
    modes = [m for m in args.modes.split(",") if m]
    singles_sizes = {int(n) for n in args.singles_workers.split(",") if n} or set(sizes)
    scratch = Path(tempfile.mkdtemp(prefix="pynenc-fleet-"))
    log = scratch / "runner.log"
    reports = Reports()
    rows: list[Row] = []
    backlogs: list[tuple[str, Backlog]] = []
    settings = {"max_connections": str(max(200, 3 * max(sizes) + 50))}
    command = "python -m benchmarks.fleet " + " ".join(argv if argv is not None else sys.argv[1:])
    with (
        counting_postgres_server(args.postgres_url, settings) as admin_url,
        bench_database(admin_url) as db,
    ):
        ensure_extension(db.url)
        machine = machine_description(db.url)
        load = [load_average()]
        print(f"runner logs: {log}")
        for mode in modes:
            for workers in sizes:
                with running_fleet(db.url, workers, mode, reports, log) as fleet:
                    idle = measure_idle(fleet, db.url, args.settle, args.idle)
                    row = Row(mode, workers, idle)
                    print(
                        f"{mode} {workers} workers idle: {idle.commits_per_second:.1f} tx/s, "
                        f"{idle.statements_per_second:.1f} statements/s, "
                        f"{idle.sessions} sessions",
                        flush=True,
                    )
                    if args.singles and workers in singles_sizes:
                        row.singles = measure_singles(
                            fleet, db.url, reports, args.singles, args.gap, idle
                        )
                        s = row.singles
                        print(
                            f"  one at a time: p50 {median(s.latencies) * 1000:.1f} ms, "
                            f"{s.counters.commits / s.tasks:.1f} tx/task, "
                            f"{s.net_claims_per_task:.2f} net claims/task",
                            flush=True,
                        )
                    if args.burst:
                        row.burst = measure_burst(fleet, db.url, reports, args.burst)
                        print(f"  burst: {row.burst.tasks_per_second:.0f} tasks/s", flush=True)
                    rows.append(row)
        if args.backlog:
            for mode in modes:
                with running_fleet(db.url, args.backlog_workers, mode, reports, log) as fleet:
                    backlog = measure_backlog(fleet, db.url, reports, args)
                backlogs.append((mode, backlog))
                print(
                    f"{mode} backlog of {args.backlog}: {backlog.ratio:.2f}x the empty run; "
                    f"idle {backlog.idle.statements_per_second:.1f} statements/s",
                    flush=True,
                )
        load.append(load_average())
    reports.close()

    report = Report()
    report.say(
        f"One host, `PersistentProcessRunner`, the Postgres-only stack. Command: `{command}` "
        f"(idle window {args.idle:.0f} s after {args.settle:.0f} s without work; "
        f"{args.singles} tasks one at a time, {args.gap} s apart; a burst of {args.burst})."
    )
    report.say()
    for fact in machine:
        report.say(f"- {fact}")
    report.say(f"- load average (1/5/15 min): {load[0]} at the start, {load[1]} at the end")
    report.say()
    render_rows(report, rows, args)
    for mode, backlog in backlogs:
        report.say()
        rates = ", ".join(
            f"{e.tasks_per_second:.0f} / {f.tasks_per_second:.0f}"
            for e, f in zip(backlog.empty, backlog.full, strict=True)
        )
        report.say(
            f"Backlog of {backlog.count:,} queued invocations ({mode}, {args.backlog_workers} "
            f"workers; seeded and analyzed in {backlog.seed_seconds:.1f} s): bursts of "
            f"{args.burst} without / with it, alternating in one fleet: {rates} tasks/s; "
            f"median ratio {backlog.ratio:.2f}x. Idle over the backlog: "
            f"{backlog.idle.commits_per_second:.1f} tx/s; its statements:"
        )
        report.say()
        statement_table(report, backlog.idle.counters, backlog.idle.seconds)
    capacity = render_capacity(rows, command)
    print()
    print("\n".join(capacity))
    if args.write_docs:
        replace_section("fleet", "\n".join(report.lines))
        if any(r.workers == CAPACITY_WORKERS for r in rows):
            replace_section("capacity", "\n".join(capacity), OPERATIONS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
