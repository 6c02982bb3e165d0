"""``pynenc-postgres demo``: the whole product working, end to end, in under a minute.

With no configuration it starts an embedded PostgreSQL 18 whose data lives in
``./.pynenc-postgres/embedded``; with ``PYNENC__POSTGRES_URL`` (or ``--url``) it uses
that server instead. Either way it migrates the schema, starts runner processes with
pynenc's own ``pynenc --app ... runner start`` (each a ``PersistentProcessRunner`` with
its worker processes), all configured by ``PYNENC__*`` variables for the Postgres-only
stack (state backend, broker, orchestrator, trigger and client data store), submits the
sample app's tasks (:mod:`pynenc_postgres.demo.tasks`), and prints an audit report read
with SQL from the plugin's tables and views, naming the host and the runner that ran
each invocation.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.errors import PostgresPluginError
from pynenc_postgres.db.settings import DatabaseSettings, libpq_url
from pynenc_postgres.demo.report import format_report, read_report
from pynenc_postgres.demo.workers import (
    WorkerProcess,
    exit_on_sigterm,
    running_workers,
    worker_command,
)

if TYPE_CHECKING:
    from psycopg.sql import Composed
    from pynenc.invocation import DistributedInvocation

DEMO_APP_ID = "pynenc_postgres_demo"
DEFAULT_WORKDIR = Path(".pynenc-postgres")
# Two runner processes, as two hosts (or compose's two worker services) would run them.
RUNNER_PROCESSES = 2
WORKER_PROCESSES_PER_RUNNER = 2
RESULT_DEADLINE_SEC = 120.0


class DemoError(PostgresPluginError):
    """The demo could not finish; the message says which step failed."""


@dataclass
class Progress:
    """Prints one line per step, with the time since the demo started."""

    write: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    started: float = field(default_factory=time.monotonic)

    def __call__(self, message: str) -> None:
        self.write(f"[{time.monotonic() - self.started:5.1f}s] {message}")


def demo_environment(url: str, settings: DatabaseSettings) -> dict[str, str]:
    """Configuration of the demo app, as the environment variables its workers read.

    Runner processes rebuild the app from these variables alone, as a deployment
    configures them, so every component class is named here rather than passed to a
    builder. Every component is a Postgres one: the database is all they share.
    """
    return {
        "PYNENC__APP_ID": DEMO_APP_ID,
        "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
        "PYNENC__BROKER_CLS": "PostgresBroker",
        "PYNENC__ORCHESTRATOR_CLS": "PostgresOrchestrator",
        "PYNENC__TRIGGER_CLS": "PostgresTrigger",
        "PYNENC__CLIENT_DATA_STORE_CLS": "PostgresClientDataStore",
        "PYNENC__POSTGRES_URL": url,
        "PYNENC__POSTGRES_SCHEMA": settings.schema,
        "PYNENC__RUNNER_CLS": "PersistentProcessRunner",
        "PYNENC__NUM_PROCESSES": str(WORKER_PROCESSES_PER_RUNNER),
        "PYNENC__RUNNER_LOOP_SLEEP_TIME_SEC": "0.05",
        "PYNENC__INVOCATION_WAIT_RESULTS_SLEEP_TIME_SEC": "0.05",
        # The report shows every failure; pynenc's own log lines would bury it.
        "PYNENC__LOGGING_LEVEL": "critical",
    }


@contextmanager
def database(url: str | None, workdir: Path, progress: Progress) -> Iterator[str]:
    """The URL of the demo's database: the configured one, else an embedded server."""
    if url:
        yield url
        return
    from pynenc_postgres.embedded import start_embedded_postgres

    data_dir = workdir / "embedded"
    progress(f"Starting an embedded PostgreSQL 18 (data in {data_dir}/)")
    server = start_embedded_postgres(data_dir.resolve())
    try:
        yield server.url
    finally:
        dispose_all()
        progress("Stopping the embedded PostgreSQL (its data stays for the next run)")
        server.stop()


def run_demo(
    url: str | None = None,
    *,
    workdir: Path = DEFAULT_WORKDIR,
    schema_name: str | None = None,
    progress: Progress | None = None,
    monitor_port: int | None = None,
    runner_processes: int = RUNNER_PROCESSES,
) -> int:
    """Run the demo and print its report.

    :param url: database to use; ``None`` uses ``PYNENC__POSTGRES_URL`` / pynenc
        config, and when that is empty too, an embedded server.
    :param workdir: folder for the embedded server's data and the runners' logs.
    :param schema_name: Postgres schema of the tables (default: config, ``public``).
    :param progress: where progress lines go.
    :param monitor_port: after the report, serve pynmon (``pynenc monitor``) on this
        port until interrupted, with the database still up.
    :param runner_processes: runner processes to start; ``0`` starts none and relies
        on runners already serving the database (compose's worker services).
    :return: the process exit code.
    """
    from pynenc_postgres.conf import ConfigPostgres

    progress = progress or Progress()
    conf = ConfigPostgres()
    url = url or conf.postgres_url or None
    schema_name = schema_name or conf.postgres_schema
    workdir.mkdir(parents=True, exist_ok=True)
    with exit_on_sigterm(), database(url, workdir, progress) as db_url:
        settings = DatabaseSettings(url=db_url, schema=schema_name)
        progress(f"Using PostgreSQL {_server_version(settings)} at {settings.server}")
        schema.upgrade(settings)
        progress(f"Schema {settings.schema!r} migrated to revision {schema.current(settings)}")
        environment = demo_environment(db_url, settings)
        with _environment(environment):
            since = _run_app(progress, settings, environment, workdir, runner_processes)
        progress("Audit report, read with SQL from the pynenc_* tables and views:")
        print()
        print(format_report(read_report(settings, DEMO_APP_ID, since)))
        print()
        if monitor_port is not None:
            return serve_monitor(environment, monitor_port, workdir)
    return 0


def serve_monitor(environment: dict[str, str], port: int, workdir: Path) -> int:
    """Run ``pynenc monitor`` on the demo's data until it exits or Ctrl-C.

    pynmon discovers the apps through ``PostgresStateBackend.discover_app_infos``; the
    environment tells it which database holds them.
    """
    env = {**os.environ, **environment}
    env.pop("PYNENC__APP_ID")  # pynmon discovers the apps; it is not one of them
    pynenc = Path(sys.executable).with_name("pynenc")
    command = [str(pynenc) if pynenc.exists() else "pynenc", "monitor", "--port", str(port)]
    print(f"pynmon: http://127.0.0.1:{port}/switch-app/{DEMO_APP_ID}  (Ctrl-C stops it)")
    # A folder without Python files, so pynmon finds no local app to use instead.
    monitor = subprocess.Popen(command, env=env, cwd=workdir)
    try:
        return monitor.wait()
    except KeyboardInterrupt:
        monitor.terminate()
        monitor.wait(timeout=30)
        return 0


def _run_app(
    progress: Progress,
    settings: DatabaseSettings,
    environment: dict[str, str],
    workdir: Path,
    runner_processes: int,
) -> datetime:
    """Start the runners, submit the tasks and wait for them; return the start time.

    The start time is read from the database server's clock, the clock that the
    report's filter compares with.
    """
    from pynenc_postgres.demo import tasks

    if runner_processes:
        # Runners that other processes started may be serving this app; only a demo
        # that owns its runners may clear the app's rows.
        tasks.app.purge()
        progress(f"Cleared app {DEMO_APP_ID!r}: no rows of an earlier demo run remain")
    since = _server_now(settings)
    with running_workers(runner_processes, environment, workdir.resolve()) as workers:
        if workers:
            progress(
                f"Started {len(workers)} runner processes with pynenc's "
                f"`{shlex.join(worker_command('python'))}`, each a PersistentProcessRunner "
                f"with {WORKER_PROCESSES_PER_RUNNER} worker processes, configured only by "
                f"PYNENC__* variables: {', '.join(POSTGRES_COMPONENTS)}"
            )
            for worker in workers:
                progress(f"  {worker.name}: pid {worker.pid}, log {worker.log_path}")
        else:
            progress("Starting no runner: the runners already serving this database run the tasks")
        invocations: list[tuple[str, DistributedInvocation]] = [
            ("add(2, 3)", tasks.add(2, 3)),
            ("add(40, 2)", tasks.add(40, 2)),
            ("validate_order(7, items=3)", tasks.validate_order(7, 3)),
            ("validate_order(42, items=0)", tasks.validate_order(42, 0)),
            ("fetch_exchange_rate('USD')", tasks.fetch_exchange_rate("USD")),
            (
                "checkout(1001, 3 lines)",
                tasks.checkout(1001, {"tea": 2, "mug": 1, "biscuits": 4}),
            ),
        ]
        progress(f"Submitted {len(invocations)} invocations; waiting for the runners")
        deadline = time.monotonic() + RESULT_DEADLINE_SEC
        for label, invocation in invocations:
            while not invocation.status.is_final():
                _check_workers(workers)
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"{label} did not finish within {RESULT_DEADLINE_SEC:.0f} s "
                        f"(status {invocation.status.value}). "
                        + (
                            "Is the machine overloaded?"
                            if workers
                            else "Are runners serving this database? Start one with "
                            f"`{shlex.join(worker_command('python'))}`."
                        )
                    )
                time.sleep(0.05)
            progress(f"  {label:<28} -> {_outcome(invocation)}")
        _wait_for_pynenc_tasks(progress, settings, since, deadline, workers)
        if workers:
            progress("Stopping the runner processes and their worker processes")
    if workers:
        progress("Runner processes stopped")
    return since


POSTGRES_COMPONENTS = (
    "PostgresStateBackend",
    "PostgresBroker",
    "PostgresOrchestrator",
    "PostgresTrigger",
    "PostgresClientDataStore",
)


# Invocations of this run that have not reached a final status (server clock, like the
# report's filter).
UNFINISHED_SQL = """
SELECT count(*)
FROM {schema}.pynenc_invocation_status AS s
JOIN {schema}.pynenc_invocation AS i USING (app_id, invocation_id)
WHERE s.app_id = %(app_id)s AND i.created_at >= %(since)s AND s.is_final IS NOT TRUE
"""


def _wait_for_pynenc_tasks(
    progress: Progress,
    settings: DatabaseSettings,
    since: datetime,
    deadline: float,
    workers: list[WorkerProcess],
) -> None:
    """Wait until pynenc's own tasks of this run have finished too.

    A runner fires pynenc's recovery tasks from their cron schedules (every 5 and 15
    minutes); one fired during the demo would otherwise be stopped with its runner and
    be reported half done.
    """
    from psycopg import sql

    statement = sql.SQL(UNFINISHED_SQL).format(schema=sql.Identifier(settings.schema))
    params = {"app_id": DEMO_APP_ID, "since": since}
    announced = False
    while count := _query_one(settings, statement, params):
        if not announced:
            progress(f"Waiting for {count} invocations of pynenc's own tasks to finish")
            announced = True
        _check_workers(workers)
        if time.monotonic() > deadline:
            raise DemoError(
                f"{count} invocations did not finish within {RESULT_DEADLINE_SEC:.0f} s. "
                "Is the machine overloaded?"
            )
        time.sleep(0.1)


def _check_workers(workers: list[WorkerProcess]) -> None:
    """Fail early, with the runner's own output, when a runner process has exited."""
    for worker in workers:
        code = worker.process.poll()
        if code is not None:
            tail = worker.log_path.read_text(errors="replace").splitlines()[-20:]
            raise DemoError(
                f"runner process {worker.name} (pid {worker.pid}) exited with code {code}; "
                f"the end of {worker.log_path}:\n" + "\n".join(tail)
            )


def _outcome(invocation: DistributedInvocation) -> str:
    status = invocation.status
    try:
        result: Any = invocation.result
    except Exception as exc:
        return f"{status.value.upper()}: {type(exc).__name__}: {exc}"
    return f"{status.value.upper()}: {result!r}"


def _server_version(settings: DatabaseSettings) -> str:
    # The pooled handle checks the schema on first use, and the schema may not exist yet.
    row = _query_one(settings, "SHOW server_version")
    return str(row).split()[0] if row else "?"


def _server_now(settings: DatabaseSettings) -> datetime:
    now = _query_one(settings, "SELECT now()")
    assert isinstance(now, datetime)
    return now


def _query_one(
    settings: DatabaseSettings, statement: str | Composed, params: dict[str, Any] | None = None
) -> Any:
    import psycopg

    conninfo = libpq_url(settings.url)
    with psycopg.connect(conninfo, connect_timeout=settings.connect_timeout) as conn:
        row = conn.execute(statement, params).fetchone()
    return row[0] if row else None


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
