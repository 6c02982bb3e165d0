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

Then the **backlog**: one fleet of ``--backlog-workers`` processes drains bursts of
``--backlog-burst`` tasks with and without ``--backlog`` queued invocations of the same
app, ``--backlog-rounds`` times in turn (every other round with the backlog first), with
each kind of ``--backlog-statistics``. The backlog is REGISTERED invocations of the
fleet's task in a queue the fleet does not consume, with every row a submission writes
(invocation, REGISTERED history row, orchestrator row, queue message), copied from one of
the client's own submissions and seeded with ``INSERT ... SELECT generate_series``.
``fresh`` statistics: the tables are ``VACUUM (ANALYZE)``d with the backlog in them;
``stale``: they are analyzed before it arrives and autovacuum's ANALYZE is held off while
it is there (a plain ``VACUUM`` after the insert, as autovacuum would run). After each
drain with it the backlog is deleted and the tables ``VACUUM (ANALYZE)``d, so the drain
without it steps over no dead rows; every drain starts right after a ``VACUUM`` of the
tables, so none steps over the dead rows of the drain before it either, and after a
``CHECKPOINT``, so it shares the disk with no earlier writes. A drain's tasks
are submitted while the fleet is paused (``SIGSTOP``) and timed from resuming it to the
last start report; per task, the server's counts of the fleet's statements alone
(``pg_stat_statements``: statements, shared buffers hit or read, WAL, execution time), which
do not move with the machine's load, say whether the backlog makes a statement of the
loop dearer. The report gives each round's ratio of tasks/s and the median with its
range, the statements whose buffers per call differ most between the two sides, and the
idle loop's statements over the backlog.

The task reports to the benchmark over UDP, and the client never polls results, so the
counts are the fleet's and the submissions' only. Run it with ``python -m
benchmarks.fleet``; ``--workers 1,4 --modes listen --idle 10 --singles 10 --burst 200
--backlog 10000 --backlog-burst 1000 --backlog-rounds 2`` is a quick preliminary run.
``--write-docs`` writes the results into docs/benchmarks.md.
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
    StatementCount,
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

BACKLOG_TABLES = (
    "pynenc_broker_message",
    "pynenc_orchestrator_invocation",
    "pynenc_invocation_history",
    "pynenc_invocation",
)
"""The tables a submission writes a queued invocation into."""
STATISTICS = ("fresh", "stale")
BACKLOG_SPACING_MS = 5.0
"""Registration times of the backlog, this far apart: queued over minutes, as after an outage."""
NEVER_ANALYZE = 2_000_000_000
"""An ``autovacuum_analyze_threshold`` that autovacuum never reaches."""
PAUSE_SECONDS = 0.5
"""After pausing the fleet: statements it had sent finish and are counted before the submit."""
DRAIN_TAIL_SECONDS = 1.0
"""After the last start: the last tasks finish (``pg_stat_statements`` counts at once)."""

# What the client wrote for a real submission of the fleet's task (a warm-up invocation):
# the task key, the call key without the arguments' id, and the owner and runner context
# of its REGISTERED history row, so the backlog's rows are the client's own, multiplied.
TEMPLATE_SQL = """
    SELECT i.task_id, left(i.call_id, length(i.call_id) - length(i.arguments_id)),
           h.status_owner_id, h.runner_id
    FROM pynenc_invocation i
    JOIN pynenc_invocation_history h USING (app_id, invocation_id)
    WHERE i.app_id = %s AND h.status = 'registered'
    LIMIT 1"""

# Each queued invocation as a submission leaves it: its row, its REGISTERED history row,
# its orchestrator row (REGISTERED, owned by the client's runner context) and its queue
# message, with distinct arguments (sha256 ids, as pynenc's), UUIDs for ids (spread over
# the primary keys among the fleet's own, as pynenc's uuid4 ids are) and registration
# times spread over the last minutes in routing order.
_BACKLOG_ID = "md5(%(app)s || ':backlog:' || i)::uuid::text"
_SERIES = f"""
    WITH s AS (
        SELECT i, {_BACKLOG_ID} AS id, encode(sha256(i::text::bytea), 'hex') AS args_id,
               now() - (%(n)s - i) * %(spacing)s * interval '1 ms' AS at
        FROM generate_series(1, %(n)s) AS i)"""
BACKLOG_SQL = (
    f"""{_SERIES}
    INSERT INTO pynenc_invocation (app_id, invocation_id, task_id, call_id, arguments_id,
        serialized_arguments, created_at, updated_at)
    SELECT %(app)s, id, %(task)s, %(call)s || args_id, args_id, '{{"n": "' || i || '"}}',
           at, at
    FROM s""",
    f"""{_SERIES}
    INSERT INTO pynenc_invocation_history (app_id, invocation_id, recorded_at, status,
        status_owner_id, status_set_at, runner_id)
    SELECT %(app)s, id, at, 'registered', %(owner)s, at, %(runner)s FROM s""",
    f"""{_SERIES}
    INSERT INTO pynenc_orchestrator_invocation (app_id, invocation_id, task_id, call_id,
        status, status_owner_id, status_set_at, registered_at)
    SELECT %(app)s, id, %(task)s, %(call)s || args_id, 'registered', %(owner)s, at, at
    FROM s""",
    f"""{_SERIES}
    INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id, routed_at)
    SELECT %(app)s, %(queue)s, %(priority)s, id, at FROM s ORDER BY i""",
)


def seed_backlog(url: str, app_id: str, count: int, statistics: str) -> float:
    """Queue ``count`` invocations of the fleet's task in a queue it does not consume.

    ``fresh``: the tables are analyzed with the backlog in them. ``stale``: they are
    analyzed before it arrives, and autovacuum's ANALYZE is held off while it is there
    (autovacuum still vacuums them). Either way they are vacuumed after the insert, as
    autovacuum would after 100,000 inserted rows, so the first burst does not pay the hint
    bits of rows nobody read yet.
    """
    tables = ", ".join(BACKLOG_TABLES)
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        template = conn.execute(TEMPLATE_SQL, (app_id,)).fetchone()
        if template is None:
            raise RuntimeError(f"app {app_id} has no submission of the fleet's task to copy")
        task, call_prefix, owner, runner = template
        if statistics == "stale":
            conn.execute(f"ANALYZE {tables}")
            for table in BACKLOG_TABLES:
                conn.execute(
                    f"ALTER TABLE {table} SET (autovacuum_analyze_threshold = {NEVER_ANALYZE})"
                )
        params = {
            "app": app_id,
            "n": count,
            "spacing": BACKLOG_SPACING_MS,
            "task": task,
            "call": call_prefix,
            "owner": owner,
            "runner": runner,
            "queue": BACKLOG_QUEUE,
            "priority": float(fleet_app.ping.broker_priority),
        }
        for statement in BACKLOG_SQL:
            conn.execute(statement, params)
        conn.execute(f"VACUUM (ANALYZE) {tables}" if statistics == "fresh" else f"VACUUM {tables}")
    return time.monotonic() - began


def remove_backlog(url: str, app_id: str, count: int) -> None:
    """Delete the backlog, then VACUUM (ANALYZE) its tables.

    The burst without the backlog then steps over none of its 100,000 dead rows (and their
    index entries), and plans with the statistics of the tables without it.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        for table in BACKLOG_TABLES:
            deleted = conn.execute(
                f"DELETE FROM {table} WHERE app_id = %(app)s AND invocation_id IN ("
                f"SELECT {_BACKLOG_ID} FROM generate_series(1, %(n)s) AS i)",
                {"app": app_id, "n": count},
            ).rowcount
            if deleted != count:
                raise RuntimeError(f"{table} held {deleted} of the {count} queued invocations")
            conn.execute(f"ALTER TABLE {table} RESET (autovacuum_analyze_threshold)")
    vacuum_backlog_tables(url)


def vacuum_backlog_tables(url: str) -> None:
    """VACUUM (ANALYZE) the backlog's tables (statistics of the tables without it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM (ANALYZE) {', '.join(BACKLOG_TABLES)}")


@dataclass
class Drain:
    """A burst submitted while the fleet was paused, then taken by the fleet."""

    tasks: int
    seconds: float  # from resuming the fleet to the last task's start
    submission: Counters  # the client's statements, while the fleet was paused
    fleet: Counters  # from resuming the fleet to DRAIN_TAIL_SECONDS after the last start

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds

    @property
    def statements_per_task(self) -> float:
        return self.fleet.calls / self.tasks

    @property
    def buffers_per_task(self) -> float:
        return self.fleet.shared_blocks / self.tasks

    @property
    def ms_per_task(self) -> float:
        return self.fleet.exec_ms / self.tasks

    @property
    def reads_per_task(self) -> float:
        return self.fleet.read_blocks / self.tasks

    @property
    def wal_per_task(self) -> float:
        return self.fleet.wal_bytes / self.tasks

    @property
    def fpi_per_task(self) -> float:
        return self.fleet.wal_fpi / self.tasks


def signal_fleet(fleet: Fleet, signum: signal.Signals) -> None:
    os.killpg(fleet.process.pid, signum)


def checkpoint(url: str) -> None:
    """Write the dirty buffers out now, so that no drain shares the disk with the writes
    of what came before it (seeding or deleting a backlog, a vacuum); a role that may not
    run CHECKPOINT skips it."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass


def measure_drain(fleet: Fleet, url: str, reports: Reports, tasks: int) -> Drain:
    """Submit ``tasks`` with the fleet paused (SIGSTOP), then time the fleet taking them.

    The submission's statements and CPU are then apart from the fleet's: on a machine of
    few cores the client serializing thousands of calls would slow the fleet it times.
    """
    numbers = reports.fresh(tasks)
    checkpoint(url)
    signal_fleet(fleet, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_SECONDS)
        before = snapshot(url)
        list(fleet_app.ping.parallelize([(n,) for n in numbers]).invocations)
        submitted = snapshot(url)
    finally:
        signal_fleet(fleet, signal.SIGCONT)
    began = time.monotonic()
    reports.wait_for(numbers)
    elapsed = time.monotonic() - began
    time.sleep(DRAIN_TAIL_SECONDS)
    after = snapshot(url)
    return Drain(tasks, elapsed, difference(before, submitted), difference(submitted, after))


@dataclass
class BacklogRound:
    backlog_first: bool
    empty: Drain
    full: Drain

    @property
    def ratio(self) -> float:
        """Tasks/s with the backlog over tasks/s without it."""
        return self.full.tasks_per_second / self.empty.tasks_per_second


def summed(counters: list[Counters]) -> dict[str, StatementCount]:
    """Each statement's counts over several intervals."""
    total: dict[str, StatementCount] = {}
    for c in counters:
        for query, s in c.statements.items():
            t = total.get(query)
            total[query] = (
                StatementCount(
                    query,
                    t.calls + s.calls,
                    t.rows + s.rows,
                    t.shared_blocks + s.shared_blocks,
                    t.exec_ms + s.exec_ms,
                    t.read_blocks + s.read_blocks,
                    t.wal_bytes + s.wal_bytes,
                    t.wal_fpi + s.wal_fpi,
                )
                if t
                else s
            )
    return total


@dataclass
class Backlog:
    """Drains of one fleet without and with the backlog, alternating, and its idle loop."""

    count: int
    statistics: str
    seed_seconds: list[float]
    idle: Idle
    rounds: list[BacklogRound]

    @property
    def ratios(self) -> list[float]:
        return [r.ratio for r in self.rounds]

    @property
    def ratio(self) -> float:
        """Median over rounds of the backlog drain's tasks/s over the empty one's."""
        return median(self.ratios)

    def side(self, full: bool) -> list[Drain]:
        return [r.full if full else r.empty for r in self.rounds]

    def differing(
        self, n: int = 8
    ) -> list[tuple[str, StatementCount | None, StatementCount | None]]:
        """The fleet's statements whose buffers per call differ most between the sides."""
        empty = summed([d.fleet for d in self.side(False)])
        full = summed([d.fleet for d in self.side(True)])

        def order(query: str) -> tuple[bool, float]:
            e, f = empty.get(query), full.get(query)
            gap = abs((f.blocks_per_call if f else 0.0) - (e.blocks_per_call if e else 0.0))
            # A statement seen on one side only (a heartbeat that fell in one drain's
            # window) compares with nothing: after those seen on both.
            return (e is None or f is None, -gap)

        queries = sorted(empty.keys() | full.keys(), key=order)[:n]
        return [(q, empty.get(q), full.get(q)) for q in queries]


def measure_backlog(
    fleet: Fleet, url: str, reports: Reports, args: Any, statistics: str
) -> Backlog:
    rounds: list[BacklogRound] = []
    seeded: list[float] = []
    idle: Idle | None = None
    # A drain that is not counted: the first after the fleet started (or after the other
    # statistics' rounds) steps over what came before; neither side should.
    measure_drain(fleet, url, reports, args.backlog_burst)
    for round_number in range(args.backlog_rounds):
        # Every other round runs the backlog first, so neither side always goes first.
        backlog_first = round_number % 2 == 1
        # Every drain starts right after its tables were vacuumed (the backlog's seeding
        # and removal end with a VACUUM): none steps over the dead rows of the one before.
        empty = None
        if not backlog_first:
            vacuum_backlog_tables(url)
            empty = measure_drain(fleet, url, reports, args.backlog_burst)
        seeded.append(seed_backlog(url, fleet.app_id, args.backlog, statistics))
        # Idle over the freshly vacuumed backlog (an idle loop leaves no dead rows behind
        # but for HOT heartbeats, so the drain after it still starts on vacuumed tables).
        if idle is None:
            idle = measure_idle(fleet, url, args.settle, args.idle)
        full = measure_drain(fleet, url, reports, args.backlog_burst)
        remove_backlog(url, fleet.app_id, args.backlog)
        if empty is None:
            empty = measure_drain(fleet, url, reports, args.backlog_burst)
        backlog_round = BacklogRound(backlog_first, empty, full)
        rounds.append(backlog_round)
        print(
            f"  round {round_number + 1} ({statistics} statistics): "
            f"{empty.tasks_per_second:.0f} tasks/s empty, {full.tasks_per_second:.0f} with "
            f"the backlog ({backlog_round.ratio:.2f}x); per task "
            f"{empty.statements_per_task:.1f} / {full.statements_per_task:.1f} statements, "
            f"{empty.buffers_per_task:.1f} / {full.buffers_per_task:.1f} buffers, "
            f"{empty.reads_per_task:.1f} / {full.reads_per_task:.1f} read, "
            f"{empty.wal_per_task:.0f} / {full.wal_per_task:.0f} WAL bytes, "
            f"{empty.ms_per_task:.3f} / {full.ms_per_task:.3f} server ms",
            flush=True,
        )
    assert idle is not None
    return Backlog(args.backlog, statistics, seeded, idle, rounds)


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


STATISTICS_METHOD = {
    "fresh": "analyzed with the backlog in them (`VACUUM (ANALYZE)` after seeding)",
    "stale": "statistics taken before it arrived (`ANALYZE` before seeding, autovacuum's "
    "ANALYZE held off while it is there; a plain `VACUUM` after seeding, as autovacuum "
    "would run after the inserts)",
}


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_backlog(report: Report, mode: str, backlog: Backlog, args: Any) -> None:
    """The backlog run of one wake-up mode and one kind of statistics."""
    empty, full = backlog.side(False), backlog.side(True)
    tasks = args.backlog_burst
    report.say()
    report.say(
        f"Backlog of {backlog.count:,} queued invocations ({mode}, {args.backlog_workers} "
        f"workers, {backlog.statistics} statistics): REGISTERED invocations of the fleet's "
        "task in a queue it does not consume, each with the rows a submission writes "
        "(invocation, REGISTERED history, orchestrator row, queue message), seeded in "
        f"{median(backlog.seed_seconds):.1f} s; tables "
        f"{STATISTICS_METHOD[backlog.statistics]}. After each drain with it the backlog is "
        "deleted and its tables `VACUUM (ANALYZE)`d, so the drain without it steps over no "
        "dead rows; a drain without it that comes first in its round follows a `VACUUM "
        "(ANALYZE)` too, so every drain starts from freshly vacuumed tables (and after a "
        "`CHECKPOINT`, so it shares the disk with no earlier writes). Each round, one "
        f"fleet drains {tasks:,} tasks without and {tasks:,} with the backlog (every other "
        "round the backlog first; a first drain is not counted): the tasks are submitted "
        "while the fleet is paused (SIGSTOP), and timed from resuming it to the last task's "
        "start. Per task: the fleet's statements, shared buffers (hit + read, and read "
        "alone), WAL bytes and server execution time (`pg_stat_statements`) from resuming "
        f"it to {DRAIN_TAIL_SECONDS:.0f} s after the last start; the submission's statements "
        "are apart."
    )
    report.say()
    report.say(
        "| round | first | tasks/s without | with | ratio | statements/task without | with "
        "| buffers/task without | with | of which read without | with "
        "| WAL bytes/task without | with | server ms/task without | with |"
    )
    report.say("| ---: | --- " + "| ---: " * 13 + "|")
    for number, r in enumerate(backlog.rounds, 1):
        cells = [
            str(number),
            "with" if r.backlog_first else "without",
            f"{r.empty.tasks_per_second:.0f}",
            f"{r.full.tasks_per_second:.0f}",
            f"{r.ratio:.2f}x",
            f"{r.empty.statements_per_task:.1f}",
            f"{r.full.statements_per_task:.1f}",
            f"{r.empty.buffers_per_task:.1f}",
            f"{r.full.buffers_per_task:.1f}",
            f"{r.empty.reads_per_task:.1f}",
            f"{r.full.reads_per_task:.1f}",
            f"{r.empty.wal_per_task:.0f}",
            f"{r.full.wal_per_task:.0f}",
            f"{r.empty.ms_per_task:.3f}",
            f"{r.full.ms_per_task:.3f}",
        ]
        report.say("| " + " | ".join(cells) + " |")
    ratios = backlog.ratios

    def medians(attribute: str, digits: int) -> str:
        return (
            f"{median([getattr(d, attribute) for d in empty]):.{digits}f} / "
            f"{median([getattr(d, attribute) for d in full]):.{digits}f}"
        )

    submitted = (
        f"{median([d.submission.shared_blocks / d.tasks for d in empty]):.1f} / "
        f"{median([d.submission.shared_blocks / d.tasks for d in full]):.1f}"
    )
    report.say()
    report.say(
        f"Tasks/s with / without the backlog: median {backlog.ratio:.2f}x, rounds "
        f"{min(ratios):.2f}x..{max(ratios):.2f}x. Medians over the rounds per task, without / "
        f"with: {medians('statements_per_task', 1)} statements, "
        f"{medians('buffers_per_task', 1)} buffers (read: {medians('reads_per_task', 1)}), "
        f"{medians('wal_per_task', 0)} WAL bytes ({medians('fpi_per_task', 2)} full-page "
        f"images), {medians('ms_per_task', 3)} ms of server execution; the submission: "
        f"{submitted} buffers per task. The fleet's statements whose buffers per call differ "
        "most between the sides (all rounds):"
    )
    report.say()
    report.say(
        "| statement | calls/task without | with | buffers/call without | with "
        "| ms/call without | with |"
    )
    report.say("| --- " + "| ---: " * 6 + "|")
    drained = tasks * len(backlog.rounds)
    for query, e, f in backlog.differing():
        cells = [
            f"`{short(query, 80).replace('|', '/')}`",
            cell(e.calls / drained if e else None, 2),
            cell(f.calls / drained if f else None, 2),
            cell(e.blocks_per_call if e else None, 1),
            cell(f.blocks_per_call if f else None, 1),
            cell(e.ms_per_call if e else None, 3),
            cell(f.ms_per_call if f else None, 3),
        ]
        report.say("| " + " | ".join(cells) + " |")
    report.say()
    report.say(
        f"Idle over the backlog: {backlog.idle.commits_per_second:.1f} tx/s; its statements:"
    )
    report.say()
    statement_table(report, backlog.idle.counters, backlog.idle.seconds)


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
    parser.add_argument(
        "--backlog-burst", type=int, default=4000, help="tasks per drain of the backlog run"
    )
    parser.add_argument(
        "--backlog-rounds", type=int, default=6, help="rounds of one drain without, one with"
    )
    parser.add_argument(
        "--backlog-statistics",
        default=",".join(STATISTICS),
        help="fresh (analyzed with the backlog), stale (analyzed before it), or both",
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.workers.split(",") if n]
    modes = [m for m in args.modes.split(",") if m]
    singles_sizes = {int(n) for n in args.singles_workers.split(",") if n} or set(sizes)
    backlog_statistics = [s for s in args.backlog_statistics.split(",") if s]
    if unknown := set(backlog_statistics) - set(STATISTICS):
        parser.error(f"--backlog-statistics: unknown {', '.join(sorted(unknown))}")
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
                    for statistics in backlog_statistics:
                        backlog = measure_backlog(fleet, db.url, reports, args, statistics)
                        backlogs.append((mode, backlog))
                        print(
                            f"{mode} backlog of {args.backlog}, {statistics} statistics: "
                            f"median {backlog.ratio:.2f}x the empty run (rounds "
                            f"{min(backlog.ratios):.2f}x..{max(backlog.ratios):.2f}x); idle "
                            f"{backlog.idle.statements_per_second:.1f} statements/s",
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
        render_backlog(report, mode, backlog, args)
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
