"""Side-by-side state-backend benchmark: ours against SQLite, memory, Redis and a raw-psycopg floor.

The workload, per invocation, through pynenc's public ``BaseStateBackend`` methods:
``upsert_invocations`` in batches of 100; ``add_history`` for REGISTERED, RUNNING and SUCCESS
with one runner context; ``set_result``; then ``get_invocation``, ``get_history`` and
``get_result``. The backends run alternately within each round, so machine noise hits them
all alike; the figures are medians over the rounds, and the ratios are medians of the
per-round ratios.

Ours (durable and relaxed) also runs twice more, to price two things every process pays
for: with an OpenTelemetry SDK meter provider configured (the hooks of
``db/telemetry.py`` count every call, and the instruments are collected after each timed
run; the target is at most 2 % over ours without the hooks), and with the trigger of
``pynenc_history_counter`` disabled (what the exporter's finished and failed counters cost
each SUCCESS history row). For these it also reports the CPU per invocation of this
process and of the server's processes (when the server runs on this machine).

Run it with ``python -m benchmarks.workload`` (``make bench``). The Postgres server is
``--postgres-url`` or ``$PYNENC_BENCH_POSTGRES_URL``, else an embedded PostgreSQL; the
benchmark creates its own database there and drops it afterwards.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
import timeit
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pynenc import Pynenc, PynencBuilder
from pynenc.arguments import Arguments
from pynenc.call import Call
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.dist_invocation import DistributedInvocation
from pynenc.invocation.status import InvocationStatus, InvocationStatusRecord
from pynenc.runner.runner_context import RunnerContext

from benchmarks.common import (
    bench_database,
    bench_task,
    load_average,
    machine_description,
    median,
    postgres_server,
    replace_section,
    seed,
)
from benchmarks.floor import RawPsycopgFloorBackend
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.state_backend.sql import statements

BATCH = 100
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

OURS = "postgres (durable)"
OURS_OFF = "postgres (synchronous_commit=off)"
OURS_OTEL = "postgres (durable), OpenTelemetry SDK"
OURS_NO_COUNTERS = "postgres (durable), history counters off"
OURS_OFF_OTEL = "postgres (synchronous_commit=off), OpenTelemetry SDK"
OURS_OFF_NO_COUNTERS = "postgres (synchronous_commit=off), history counters off"
# Ours as it is, with an OpenTelemetry SDK provider, and without the history counters.
VARIANTS = {OURS: (OURS_OTEL, OURS_NO_COUNTERS), OURS_OFF: (OURS_OFF_OTEL, OURS_OFF_NO_COUNTERS)}
OTEL_KINDS = (OURS_OTEL, OURS_OFF_OTEL)
NO_COUNTER_KINDS = (OURS_NO_COUNTERS, OURS_OFF_NO_COUNTERS)
SQLITE = "SQLiteStateBackend"
MEMORY = "MemStateBackend"
REDIS = "RedisStateBackend"
FLOOR = "raw psycopg floor (durable)"
FLOOR_OFF = "raw psycopg floor (synchronous_commit=off)"
SQL_ONLY = "SQL only, no pynenc (durable)"
SQL_ONLY_OFF = "SQL only, no pynenc (synchronous_commit=off)"


# -- the workload through pynenc's public API --------------------------------------------


@dataclass
class PynencWorkload:
    """N invocations of one app, built before the clock starts."""

    app: Pynenc
    n: int
    tag: str
    invocations: list[DistributedInvocation[Any, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        task = self.app.task(bench_task)
        for i in range(self.n):
            call = Call(task, Arguments({"x": i}))
            self.invocations.append(
                DistributedInvocation(
                    call,
                    InvocationId(f"{self.tag}-{i:07d}"),
                    parent_invocation_id=None,
                    workflow=None,
                    stored_in_backend=True,
                )
            )
        self.context = RunnerContext(runner_cls="BenchRunner", runner_id=f"runner-{self.tag}")

    def run(self) -> None:
        backend = self.app.state_backend
        ctx = self.context
        running = InvocationStatusRecord(InvocationStatus.RUNNING, runner_id=ctx.runner_id)
        for start in range(0, self.n, BATCH):
            batch = self.invocations[start : start + BATCH]
            backend.upsert_invocations(batch)
            for number, inv in enumerate(batch, start):
                inv_id = inv.invocation_id
                backend.add_history(
                    inv_id, InvocationStatusRecord(InvocationStatus.REGISTERED), ctx
                )
                backend.add_history(inv_id, running, ctx)
                backend.add_history(
                    inv_id,
                    InvocationStatusRecord(InvocationStatus.SUCCESS, runner_id=ctx.runner_id),
                    ctx,
                )
                backend.set_result(inv_id, number)
                fetched = backend.get_invocation(inv_id)
                history = backend.get_history(inv_id)
                result = backend.get_result(inv_id)
                if fetched.invocation_id != inv_id or len(history) != 3 or result != number:
                    raise AssertionError(f"{type(backend).__name__} lost data for {inv_id}")


def build_app(kind: str, app_id: str, postgres_url: str, redis_url: str, tmp: Path) -> Pynenc:
    builder = PynencBuilder().app_id(app_id)
    if kind in (OURS, OURS_OTEL, OURS_NO_COUNTERS):
        builder = builder.memory().postgres_state_backend(url=postgres_url)
    elif kind in (OURS_OFF, OURS_OFF_OTEL, OURS_OFF_NO_COUNTERS):
        builder = builder.memory().postgres_state_backend(
            url=postgres_url, synchronous_commit="off"
        )
    elif kind == SQLITE:
        builder = builder.sqlite(sqlite_db_path=str(tmp / f"{app_id}.db"))
    elif kind in (FLOOR, FLOOR_OFF):
        builder = builder.memory().postgres_state_backend(
            url=postgres_url, synchronous_commit="off" if kind == FLOOR_OFF else None
        )
        builder = builder.custom_config(state_backend_cls=RawPsycopgFloorBackend.__name__)
    elif kind == MEMORY:
        builder = builder.memory()
    elif kind == REDIS:
        builder = builder.memory().custom_config(
            state_backend_cls="RedisStateBackend", redis_url=redis_url
        )
    else:
        raise ValueError(kind)
    app: Pynenc = builder.build()
    app.logger.setLevel("WARNING")
    return app


# -- pynenc left out: the statements alone ------------------------------------------------


class SqlOnly:
    """The same statements and commits as our backend, with pynenc left out entirely.

    No pynenc objects, no serialization, no DTOs: one autocommit connection and the
    statement texts of :mod:`pynenc_postgres.state_backend.sql`. It shows how much of each
    backend's time is pynenc's own work; the floor that targets compare against is
    :class:`benchmarks.floor.RawPsycopgFloorBackend`, driven through pynenc's API.
    """

    def __init__(self, url: str, synchronous_commit: str = "") -> None:
        options = f"-c synchronous_commit={synchronous_commit}" if synchronous_commit else ""
        self.conn = psycopg.connect(url, autocommit=True, options=options)
        self.cursor = self.conn.cursor()
        self.sql = statements("public")

    def run(self, n: int, tag: str) -> None:
        from datetime import UTC, datetime

        conn, sql, app_id = self.cursor, self.sql, f"floor-{tag}"
        runner = f"runner-{tag}"
        conn.execute(
            sql.store_runner_context,
            (app_id, [runner], ["BenchRunner"], [None], [1], ["host"], [1]),
        )
        task_key = f"{bench_task.__module__}.bench_task"
        for start in range(0, n, BATCH):
            ids = [f"{tag}-{i:07d}" for i in range(start, min(start + BATCH, n))]
            nones: list[str | None] = [None] * len(ids)
            conn.execute(
                sql.upsert_invocations,
                (
                    app_id,
                    ids,
                    [task_key] * len(ids),
                    [f"{task_key}#{i}" for i in ids],
                    ids,
                    ['{"x": "1"}'] * len(ids),
                    nones,
                    nones,
                    nones,
                    nones,
                    nones,
                ),
            )
            for inv_id in ids:
                for status, owner in (
                    ("registered", None),
                    ("running", runner),
                    ("success", runner),
                ):
                    now = datetime.now(UTC)
                    conn.execute(
                        sql.add_history, (inv_id, app_id, now, status, owner, now, runner, None)
                    )
                conn.execute(sql.set_result, (app_id, inv_id, "1"))
                conn.execute(sql.get_invocation, (app_id, inv_id)).fetchone()
                conn.execute(sql.get_history, (app_id, inv_id)).fetchall()
                conn.execute(sql.get_result, (app_id, inv_id)).fetchone()

    def purge(self, tag: str) -> None:
        for statement in self.sql.purge_app:
            self.cursor.execute(statement, (f"floor-{tag}",))


# -- one round ---------------------------------------------------------------------------


def redis_version(redis_url: str) -> str | None:
    try:
        import redis

        info: dict[str, Any] = redis.Redis.from_url(redis_url, socket_timeout=2).info("server")
        return str(info["redis_version"])
    except Exception as exc:  # any failure means: measure without Redis
        print(f"Redis at {redis_url} is unreachable ({type(exc).__name__}: {exc}); skipping it.")
        return None


# -- what ours runs with: OpenTelemetry's hooks, the history counters' triggers --------

_OTEL_READER: Any = None


def use_opentelemetry(enabled: bool) -> None:
    """Ours with an SDK meter provider and the hooks, or with the hooks replaced by no-ops.

    Without the hooks is ours without the ``otel`` extra. With them, every call of the
    database layer is counted and an in-memory reader collects the instruments after
    each timed run (an application's periodic reader collects once a minute or so).
    """
    global _OTEL_READER
    from pynenc_postgres.db import engine, telemetry

    if enabled and _OTEL_READER is None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        _OTEL_READER = InMemoryMetricReader()
        telemetry.set_meter_provider(MeterProvider(metric_readers=[_OTEL_READER]))

    def nothing(*args: Any) -> None:
        return None

    engine.count_statement = telemetry.count_statement if enabled else nothing  # type: ignore[assignment]
    engine.count_operation = telemetry.count_operation if enabled else nothing  # type: ignore[assignment]


HISTORY_COUNTER_TRIGGERS = ("pynenc_history_counter_count",)


def use_history_counters(postgres_url: str, enabled: bool) -> None:
    """Enable or disable the triggers that keep ``pynenc_history_counter`` (migration 0007)."""
    action = "ENABLE" if enabled else "DISABLE"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for trigger in HISTORY_COUNTER_TRIGGERS:
            conn.execute(f"ALTER TABLE pynenc_invocation_history {action} TRIGGER {trigger}")


class Runner:
    def __init__(self, postgres_url: str, redis_url: str, n: int, warmup: int) -> None:
        self.postgres_url = postgres_url
        self.redis_url = redis_url
        self.n = n
        self.warmup = warmup
        self.tmp = Path(tempfile.mkdtemp(prefix="pynenc-bench-"))
        self.floors: dict[str, SqlOnly] = {}
        self.counters = True
        self.client_cpu: float | None = None  # of the last measure(), for ours only
        self.server_cpu: float | None = None

    def measure(self, kind: str, round_no: int) -> float:
        """Seconds for the timed workload of ``kind`` (warm-up and cleanup untimed)."""
        tag = f"r{round_no}-{uuid.uuid4().hex[:8]}"
        self.client_cpu = self.server_cpu = None
        if kind in (SQL_ONLY, SQL_ONLY_OFF):
            floor = self.floors.get(kind)
            if floor is None:
                floor = SqlOnly(self.postgres_url, "off" if kind == SQL_ONLY_OFF else "")
                self.floors[kind] = floor
            floor.run(self.warmup, f"w{tag}")
            gc.collect()
            started = time.perf_counter()
            floor.run(self.n, tag)
            elapsed = time.perf_counter() - started
            floor.purge(tag)
            floor.purge(f"w{tag}")
            return elapsed
        use_opentelemetry(kind in OTEL_KINDS)
        counters = kind not in NO_COUNTER_KINDS
        if counters != self.counters:
            use_history_counters(self.postgres_url, counters)
            self.counters = counters
        app = build_app(kind, f"bench-{tag}", self.postgres_url, self.redis_url, self.tmp)
        PynencWorkload(app, self.warmup, f"w{tag}").run()
        work = PynencWorkload(app, self.n, tag)
        gc.collect()
        backends = server_backends(self.postgres_url)
        server_cpu = backend_cpu_seconds(backends)
        client_cpu = time.process_time()
        started = time.perf_counter()
        work.run()
        if kind in OTEL_KINDS:
            _OTEL_READER.get_metrics_data()
        elapsed = time.perf_counter() - started
        self.client_cpu = time.process_time() - client_cpu
        after = backend_cpu_seconds(backends)
        self.server_cpu = None if server_cpu is None or after is None else after - server_cpu
        app.state_backend.purge()
        if isinstance(app.state_backend, RawPsycopgFloorBackend):
            app.state_backend.close()
        return elapsed


def server_backends(postgres_url: str) -> list[int]:
    """Pids of the server processes serving pynenc's pools in this database."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'pynenc'"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def backend_cpu_seconds(pids: list[int]) -> float | None:
    """CPU seconds the server processes ``pids`` used so far; None unless the server is local."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return None
    return total / ticks if pids else None


@dataclass
class Results:
    kinds: list[str]
    runs: dict[str, list[float]] = field(default_factory=dict)  # µs per invocation
    # CPU µs per invocation of the benchmark process and of the server processes (ours only)
    client_cpu: dict[str, list[float]] = field(default_factory=dict)
    server_cpu: dict[str, list[float]] = field(default_factory=dict)

    def cpu_ratio(self, table: dict[str, list[float]], kind: str, reference: str) -> float | None:
        if len(table.get(kind, [])) != len(self.runs[kind]) or len(table.get(reference, [])) != len(
            self.runs.get(reference, [])
        ):
            return None
        pairs = zip(table[kind], table[reference], strict=True)
        return median([a / b for a, b in pairs if b > 0])

    def us(self, kind: str) -> float:
        return median(self.runs[kind])

    def ratio(self, kind: str, reference: str) -> float | None:
        if kind not in self.runs or reference not in self.runs:
            return None
        pairs = zip(self.runs[kind], self.runs[reference], strict=True)
        return median([a / b for a, b in pairs])


def analyze(postgres_url: str) -> None:
    """Refresh the planner statistics, as autovacuum does within a minute on a live system.

    Statements prepared while a table is empty keep a generic plan made without
    statistics; with several indexes led by ``app_id`` that plan may pick one that
    scans the app's rows. ANALYZE invalidates those plans, so every backend is
    measured in the steady state rather than in its first minute.
    """
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


BACKGROUND = 20_000


def seed_background(postgres_url: str) -> None:
    """Give the tables a past: rows of another app, so that the statements the backends
    prepare get plans made with real statistics (index scans), as in a database in use.

    On an empty table a prepared statement's generic plan is a sequential scan, and it
    stays cached until the next ANALYZE even as the table grows.
    """
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        seed(conn, "bench-background", BACKGROUND)
    analyze(postgres_url)


def side_by_side(runner: Runner, kinds: list[str], rounds: int) -> Results:
    results = Results(kinds, {kind: [] for kind in kinds})
    seed_background(runner.postgres_url)
    for kind in kinds:  # open connections and prepare statements before any round
        runner.measure(kind, -1)
    analyze(runner.postgres_url)
    for round_no in range(rounds):
        # Rotate the order each round so no backend always runs first or last.
        order = kinds[round_no % len(kinds) :] + kinds[: round_no % len(kinds)]
        for kind in order:
            seconds = runner.measure(kind, round_no)
            results.runs[kind].append(seconds / runner.n * 1e6)
            if runner.client_cpu is not None:
                results.client_cpu.setdefault(kind, []).append(runner.client_cpu / runner.n * 1e6)
            if runner.server_cpu is not None:
                results.server_cpu.setdefault(kind, []).append(runner.server_cpu / runner.n * 1e6)
        line = ", ".join(f"{kind}: {results.runs[kind][-1]:.0f}" for kind in kinds)
        print(f"round {round_no + 1}/{rounds} (µs/invocation) {line}", flush=True)
    return results


# -- paired slices: the hooks and the trigger, on and off in turns -------------------------


@dataclass
class Paired:
    """Per pair of slices (one on, one off, in alternating order): time and CPU ratios."""

    name: str
    collection_ms: float | None = None
    per_call_ns: float | None = None
    calls_per_invocation: float | None = None
    hooks_share: float | None = None
    time: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)

    def line(self) -> str:
        def pct(values: list[float]) -> str:
            return f"{(median(values) - 1) * 100:+.1f} %" if values else "-"

        collection = (
            f"; one collection of every instrument by the reader takes {self.collection_ms:.2f} ms"
            if self.collection_ms is not None
            else ""
        )
        direct = ""
        if self.per_call_ns is not None and self.hooks_share is not None:
            direct = (
                f". Measured directly, the hook costs {self.per_call_ns:.0f} ns per call of the "
                f"database layer, {self.calls_per_invocation:.1f} calls per invocation: "
                f"{self.hooks_share * 100:.2f} % of the benchmark process's CPU per invocation"
            )
        return (
            f"{self.name}: **{pct(self.time)}** of the time, {pct(self.client_cpu)} of the "
            f"benchmark process's CPU, {pct(self.server_cpu)} of the server's CPU "
            f"(medians over {len(self.time)} pairs){collection}{direct}"
        )


def hook_cost_ns(calls: int = 200_000) -> float:
    """Nanoseconds of the statement hook, called as the database layer calls it."""
    from pynenc_postgres.db import telemetry

    def statement() -> None:  # Database._statement
        telemetry.count_statement("SELECT 1")

    def fetchone() -> None:  # Database.fetchone
        statement()

    def component() -> None:  # the component's call
        fetchone()

    def bare() -> None:
        pass

    def bare_fetchone() -> None:
        bare()

    def bare_component() -> None:
        bare_fetchone()

    hooked = timeit.timeit(component, number=calls)
    plain = timeit.timeit(bare_component, number=calls)
    return (hooked - plain) / calls * 1e9


def paired(
    postgres_url: str, tmp: Path, kind: str, pairs: int, batch: int, warmup: int
) -> tuple[Paired, Paired]:
    """The hooks (with an SDK provider) and the history counters' trigger, each turned on
    and off for alternate slices of ``batch`` invocations of one app, ``pairs`` times.

    Neighbouring slices share the machine's load of the moment, so the ratio of a pair
    is steadier on a busy machine than that of two whole runs; the median of the pairs
    is reported.
    """
    app = build_app(kind, f"bench-paired-{uuid.uuid4().hex[:8]}", postgres_url, "", tmp)
    PynencWorkload(app, warmup, "paired-warmup").run()
    results = (Paired("OpenTelemetry SDK over no hooks"), Paired("trigger on over off"))
    slice_no = 0

    def measure(hooks: bool) -> tuple[float, float, float | None]:
        nonlocal slice_no
        use_opentelemetry(hooks)
        work = PynencWorkload(app, batch, f"paired-{slice_no}")
        slice_no += 1
        gc.collect()
        backends = server_backends(postgres_url)
        server = backend_cpu_seconds(backends)
        client = time.process_time()
        started = time.perf_counter()
        work.run()
        elapsed = time.perf_counter() - started
        client = time.process_time() - client
        after = backend_cpu_seconds(backends)
        if hooks:  # a reader collects once a minute or so: its cost is reported apart
            _OTEL_READER.get_metrics_data()
        return elapsed, client, None if server is None or after is None else after - server

    from pynenc_postgres.db import telemetry

    before = sum(telemetry.statement_counts().values())
    measure(hooks=True)  # the SDK's first collection, and warm caches, untimed
    calls_per_invocation = (sum(telemetry.statement_counts().values()) - before) / batch
    _, cpu_off, _ = measure(hooks=False)
    results[0].per_call_ns = hook_cost_ns()
    results[0].hooks_share = calls_per_invocation * results[0].per_call_ns / 1e9 / (cpu_off / batch)
    results[0].calls_per_invocation = calls_per_invocation
    collection = time.perf_counter()
    _OTEL_READER.get_metrics_data()
    results[0].collection_ms = (time.perf_counter() - collection) * 1000
    for number in range(pairs):
        for result, toggle in zip(results, ("hooks", "counters"), strict=True):
            runs = {}
            for on in (True, False) if number % 2 == 0 else (False, True):
                if toggle == "counters":
                    use_history_counters(postgres_url, on)
                runs[on] = measure(hooks=on and toggle == "hooks")
            use_history_counters(postgres_url, True)
            (t_on, c_on, s_on), (t_off, c_off, s_off) = runs[True], runs[False]
            result.time.append(t_on / t_off)
            result.client_cpu.append(c_on / c_off if c_off else 1.0)
            if s_on is not None and s_off:
                result.server_cpu.append(s_on / s_off)
    use_opentelemetry(False)
    app.state_backend.purge()
    return results


# -- two writer processes ------------------------------------------------------------------


def _writer(
    postgres_url: str,
    app_id: str,
    tag: str,
    n: int,
    warmup: int,
    barrier: Any,
    out: Any,
) -> None:
    try:
        tmp = Path(tempfile.mkdtemp(prefix="pynenc-bench-"))
        app = build_app(OURS, app_id, postgres_url, "", tmp)
        PynencWorkload(app, warmup, f"w{tag}").run()
        work = PynencWorkload(app, n, tag)
        analyze(postgres_url)
        gc.collect()
        barrier.wait()
        started = time.monotonic()
        work.run()
        out.put((started, time.monotonic(), None))
    except BaseException as exc:
        out.put((0.0, 0.0, f"{type(exc).__name__}: {exc}"))
        raise


def _deadlocks(postgres_url: str) -> int:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def writers(postgres_url: str, n: int, warmup: int, writer_counts: list[int]) -> float:
    """Run the workload in one process, then in several at once (same app), alternately."""
    ctx = multiprocessing.get_context("spawn")
    seconds: dict[int, list[float]] = {count: [] for count in writer_counts}
    errors: list[str] = []
    deadlocks_before = _deadlocks(postgres_url)
    rounds = 3
    for round_no in range(rounds):
        for count in writer_counts:
            app_id = f"writers-{uuid.uuid4().hex[:8]}"
            barrier, out = ctx.Barrier(count), ctx.Queue()
            procs = [
                ctx.Process(
                    target=_writer,
                    args=(postgres_url, app_id, f"p{p}", n, warmup, barrier, out),
                )
                for p in range(count)
            ]
            for proc in procs:
                proc.start()
            reports = [out.get() for _ in procs]
            for proc in procs:
                proc.join()
            errors += [error for _, _, error in reports if error]
            wall = max(end for _, end, _ in reports) - min(start for start, _, _ in reports)
            seconds[count].append(wall)
            print(
                f"writers round {round_no + 1}/{rounds}: {count} process(es) x {n} "
                f"invocations in {wall:.2f}s ({count * n / wall:.0f} invocations/s)",
                flush=True,
            )
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                for table in ("pynenc_invocation", "pynenc_invocation_history"):
                    conn.execute(f"DELETE FROM {table} WHERE app_id = %s", (app_id,))
    deadlocks = _deadlocks(postgres_url) - deadlocks_before
    one, many = writer_counts[0], writer_counts[-1]
    throughput = {count: count * n / median(seconds[count]) for count in writer_counts}
    ratio = throughput[many] / throughput[one]
    print(
        f"{many} writers: {throughput[many]:.0f} invocations/s, {one} writer: "
        f"{throughput[one]:.0f} invocations/s, ratio {ratio:.2f}; "
        f"errors: {len(errors)}; deadlocks: {deadlocks}"
    )
    for error in errors[:5]:
        print(f"  error: {error}")
    return ratio


# -- output ------------------------------------------------------------------------------

TARGETS: list[tuple[str, str, float]] = [
    (OURS, REDIS, 1.1),
    (OURS, SQLITE, 1.0),
    (OURS, FLOOR, 1.15),
    (OURS_OFF, REDIS, 0.6),
    (OURS_OFF, FLOOR_OFF, 1.15),
    (OURS_OTEL, OURS, 1.02),
    (OURS_OFF_OTEL, OURS_OFF, 1.02),
]


def render_otel(results: Results, machine: list[str], command: str, rounds: int) -> str:
    """The price of the OpenTelemetry hooks and of the history counters, in this run."""
    lines = ["Machine:", ""] + [f"- {line}" for line in machine]
    lines += ["", f"Command: `{command.strip()}`", f"Load average: {load_average()}", ""]
    lines += [
        f"| ours | µs / invocation (median of {rounds}) | x | client CPU µs | x "
        "| server CPU µs | x |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    verdicts = []
    for base, (otel, no_counters) in VARIANTS.items():
        if base not in results.runs:
            continue
        for kind in (base, otel, no_counters):
            if kind not in results.runs:
                continue
            client = results.client_cpu.get(kind)
            server = results.server_cpu.get(kind)
            lines.append(
                f"| {kind} | {results.us(kind):.0f} | {cell(results.ratio(kind, base), 3)} "
                f"| {cell(median(client) if client else None)} "
                f"| {cell(results.cpu_ratio(results.client_cpu, kind, base), 3)} "
                f"| {cell(median(server) if server else None)} "
                f"| {cell(results.cpu_ratio(results.server_cpu, kind, base), 3)} |"
            )
        wall = results.ratio(otel, base)
        cpu = results.cpu_ratio(results.client_cpu, otel, base)
        if wall is not None:
            verdict = "met" if wall <= 1.02 else "**not met**"
            verdicts.append(
                f"{base}: OpenTelemetry SDK over no hooks **{(wall - 1) * 100:+.1f} %** of "
                f"the time (target ≤ +2 %, {verdict})"
                + (f", {(cpu - 1) * 100:+.1f} % of the benchmark process's CPU." if cpu else ".")
            )
        counters = results.ratio(base, no_counters)
        server = results.cpu_ratio(results.server_cpu, base, no_counters)
        if counters is not None:
            verdicts.append(
                f"{base}: history counters (trigger on) over trigger off "
                f"{(counters - 1) * 100:+.1f} % of the time"
                + (f", {(server - 1) * 100:+.1f} % of the server's CPU." if server else ".")
            )
    return "\n".join([*lines, "", *(f"- {line}" for line in verdicts)])


def render(results: Results, rounds: int, n: int) -> str:
    lines = [
        f"| backend | µs / invocation (median of {rounds}) | min | x ours (durable) |",
        "|---|---:|---:|---:|",
    ]
    for kind in results.kinds:
        ratio = results.ratio(kind, OURS)
        shown = "-" if ratio is None else f"{ratio:.2f}"  # ours was left out with --only
        lines.append(
            f"| {kind} | {results.us(kind):.0f} | {min(results.runs[kind]):.0f} | {shown} |"
        )
    lines += ["", "| target | measured | limit | met |", "|---|---:|---:|---|"]
    for kind, reference, limit in TARGETS:
        ratio = results.ratio(kind, reference)
        if ratio is None:
            lines.append(f"| {kind} / {reference} | not measured | ≤ {limit} | |")
            continue
        met = "yes" if ratio <= limit else "**no**"
        lines.append(f"| {kind} / {reference} | {ratio:.2f} | ≤ {limit} | {met} |")
    lines.append("")
    lines.append(f"N = {n} invocations per round; ratios are medians of the per-round ratios.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workload", description=__doc__)
    parser.add_argument("-n", "--invocations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds (medians over them)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed invocations per round")
    parser.add_argument("--postgres-url", help="server to measure (default: see module doc)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--only", nargs="*", help="measure only these backends (by name)")
    parser.add_argument(
        "--writers",
        type=int,
        default=2,
        help="also compare this many writer processes with one (0 skips it)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=20,
        help="pairs of alternating slices for the price of the hooks and the trigger (0 skips)",
    )
    parser.add_argument("--pair-batch", type=int, default=200, help="invocations per slice")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the results and machine description into docs/benchmarks.md",
    )
    args = parser.parse_args(argv)

    with postgres_server(args.postgres_url) as admin_url, bench_database(admin_url) as db:
        redis_ver = redis_version(args.redis_url)
        kinds = [OURS, OURS_OTEL, OURS_NO_COUNTERS, OURS_OFF, OURS_OFF_OTEL]
        kinds += [OURS_OFF_NO_COUNTERS, FLOOR, FLOOR_OFF]
        kinds += [SQL_ONLY, SQL_ONLY_OFF, SQLITE, MEMORY]
        kinds += [REDIS] if redis_ver else []
        if args.only:
            kinds = [kind for kind in kinds if any(o.lower() in kind.lower() for o in args.only)]
        machine = machine_description(db.url, redis_ver)
        print("\n".join(machine))
        runner = Runner(db.url, args.redis_url, args.invocations, args.warmup)
        results = side_by_side(runner, kinds, args.rounds)
        for floor in runner.floors.values():
            floor.conn.close()
        dispose_all()
        table = render(results, args.rounds, args.invocations)
        print()
        print(table)
        command = "python -m benchmarks.workload " + shlex.join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write-docs"
        )
        otel = None
        if any(kind in kinds for kind in OTEL_KINDS + NO_COUNTER_KINDS):
            otel = render_otel(results, machine, command, args.rounds)
            if args.pairs:
                lines = [
                    "",
                    f"In alternating slices of {args.pair_batch} invocations of one app "
                    f"({OURS_OFF}), on then off or off then on:",
                    "",
                ]
                for result in paired(
                    db.url, runner.tmp, OURS_OFF, args.pairs, args.pair_batch, args.warmup
                ):
                    lines.append(f"- {result.line()}.")
                otel += "\n" + "\n".join(lines)
            print()
            print(otel)
        ratio = None
        if args.writers > 1:
            print()
            ratio = writers(db.url, args.invocations, args.warmup, [1, args.writers])
        if args.write_docs:
            body = ["Machine:", ""] + [f"- {line}" for line in machine]
            body += ["", f"Command: `{command.strip()}`", "", table]
            if ratio is not None:
                body += [
                    "",
                    f"{args.writers} writer processes on the same app: "
                    f"**{ratio:.2f}x** the throughput of one (target ≥ 1.4), "
                    "median of 3 alternating rounds.",
                ]
            if not args.only:  # a partial run must not replace the whole table
                replace_section("workload", "\n".join(body))
            if otel is not None:
                replace_section("otel", otel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
