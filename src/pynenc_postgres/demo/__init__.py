"""``pynenc-postgres demo``: the whole product working, end to end, in under a minute.

With no configuration it starts an embedded PostgreSQL 18 whose data lives in
``./.pynenc-postgres/embedded``; with ``PYNENC__POSTGRES_URL`` (or ``--url``) it uses
that server instead. Either way it migrates the schema, runs the sample app of
:mod:`pynenc_postgres.demo.tasks` on pynenc's ``PersistentProcessRunner`` (worker
processes, pynenc's SQLite broker and orchestrator, this plugin's state backend), and
prints an audit report read with SQL from the plugin's tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.errors import PostgresPluginError
from pynenc_postgres.db.settings import DatabaseSettings, libpq_url
from pynenc_postgres.demo.report import format_report, read_report

if TYPE_CHECKING:
    from pynenc.invocation import DistributedInvocation

DEMO_APP_ID = "pynenc_postgres_demo"
DEFAULT_WORKDIR = Path(".pynenc-postgres")
WORKER_PROCESSES = 3
RESULT_DEADLINE_SEC = 90.0


class DemoError(PostgresPluginError):
    """The demo could not finish; the message says which step failed."""


@dataclass
class Progress:
    """Prints one line per step, with the time since the demo started."""

    write: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    started: float = field(default_factory=time.monotonic)

    def __call__(self, message: str) -> None:
        self.write(f"[{time.monotonic() - self.started:5.1f}s] {message}")


def demo_environment(url: str, sqlite_path: Path, settings: DatabaseSettings) -> dict[str, str]:
    """Configuration of the demo app, as the environment variables its workers read.

    Spawned workers rebuild the app from these variables alone, so every component
    class is named here rather than passed to a builder.
    """
    return {
        "PYNENC__APP_ID": DEMO_APP_ID,
        "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
        "PYNENC__POSTGRES_URL": url,
        "PYNENC__POSTGRES_SCHEMA": settings.schema,
        "PYNENC__BROKER_CLS": "SQLiteBroker",
        "PYNENC__ORCHESTRATOR_CLS": "SQLiteOrchestrator",
        "PYNENC__TRIGGER_CLS": "SQLiteTrigger",
        "PYNENC__CLIENT_DATA_STORE_CLS": "SQLiteClientDataStore",
        "PYNENC__SQLITE_DB_PATH": str(sqlite_path),
        "PYNENC__RUNNER_CLS": "PersistentProcessRunner",
        "PYNENC__NUM_PROCESSES": str(WORKER_PROCESSES),
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
) -> int:
    """Run the demo and print its report.

    :param url: database to use; ``None`` uses ``PYNENC__POSTGRES_URL`` / pynenc
        config, and when that is empty too, an embedded server.
    :param workdir: folder for the embedded server's data and the SQLite file.
    :param schema_name: Postgres schema of the tables (default: config, ``public``).
    :param progress: where progress lines go.
    :param monitor_port: after the report, serve pynmon (``pynenc monitor``) on this
        port until interrupted, with the database still up.
    :return: the process exit code.
    """
    from pynenc_postgres.conf import ConfigPostgres

    progress = progress or Progress()
    conf = ConfigPostgres()
    url = url or conf.postgres_url or None
    schema_name = schema_name or conf.postgres_schema
    workdir.mkdir(parents=True, exist_ok=True)
    with database(url, workdir, progress) as db_url:
        settings = DatabaseSettings(url=db_url, schema=schema_name)
        progress(f"Using PostgreSQL {_server_version(settings)} at {settings.server}")
        schema.upgrade(settings)
        progress(f"Schema {settings.schema!r} migrated to revision {schema.current(settings)}")
        sqlite_path = (workdir / "demo.sqlite3").resolve()
        for leftover in sqlite_path.parent.glob(sqlite_path.name + "*"):
            leftover.unlink()
        with _environment(demo_environment(db_url, sqlite_path, settings)):
            _run_app(progress, sqlite_path)
        progress("Audit report, read with SQL from the pynenc_* tables:")
        print()
        print(format_report(read_report(settings, DEMO_APP_ID)))
        print()
        if monitor_port is not None:
            return serve_monitor(demo_environment(db_url, sqlite_path, settings), monitor_port)
    return 0


def serve_monitor(environment: dict[str, str], port: int) -> int:
    """Run ``pynenc monitor`` on the demo's data until it exits or Ctrl-C.

    pynmon discovers the apps through ``PostgresStateBackend.discover_app_infos``; the
    environment tells it which database and which SQLite file hold them.
    """
    env = {**os.environ, **environment}
    env.pop("PYNENC__APP_ID")  # pynmon discovers the apps; it is not one of them
    pynenc = Path(sys.executable).with_name("pynenc")
    command = [str(pynenc) if pynenc.exists() else "pynenc", "monitor", "--port", str(port)]
    print(f"pynmon: http://127.0.0.1:{port}/switch-app/{DEMO_APP_ID}  (Ctrl-C stops it)")
    # A folder without Python files, so pynmon finds no local app to use instead.
    workdir = Path(environment["PYNENC__SQLITE_DB_PATH"]).parent
    monitor = subprocess.Popen(command, env=env, cwd=workdir)
    try:
        return monitor.wait()
    except KeyboardInterrupt:
        monitor.terminate()
        monitor.wait(timeout=30)
        return 0


def _run_app(progress: Progress, sqlite_path: Path) -> None:
    from pynenc_postgres.demo import tasks

    app = tasks.app
    app.purge()
    progress(f"Cleared app {DEMO_APP_ID!r}: no rows of an earlier demo run remain")
    progress(
        f"Starting pynenc's PersistentProcessRunner: {WORKER_PROCESSES} worker processes, "
        f"SQLite broker and orchestrator ({sqlite_path.name}), PostgresStateBackend"
    )
    # pynenc warns about a __main__ guard (the console script has one) and about running
    # the runner loop in a thread (signals are handled by the demo's main thread).
    warnings.filterwarnings("ignore", module=r"pynenc\.runner")
    runner = threading.Thread(target=app.runner.run, name="demo-runner", daemon=True)
    runner.start()
    try:
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
        progress(f"Submitted {len(invocations)} invocations; waiting for the workers")
        deadline = time.monotonic() + RESULT_DEADLINE_SEC
        for label, invocation in invocations:
            while not invocation.status.is_final():
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"{label} did not finish within {RESULT_DEADLINE_SEC:.0f} s "
                        f"(status {invocation.status.value}). Is the machine overloaded?"
                    )
                time.sleep(0.05)
            progress(f"  {label:<28} -> {_outcome(invocation)}")
    finally:
        progress("Stopping the runner and its workers")
        app.runner.stop_runner_loop()
        runner.join(timeout=30)


def _outcome(invocation: DistributedInvocation) -> str:
    status = invocation.status
    try:
        result: Any = invocation.result
    except Exception as exc:
        return f"{status.value.upper()}: {type(exc).__name__}: {exc}"
    return f"{status.value.upper()}: {result!r}"


def _server_version(settings: DatabaseSettings) -> str:
    # The pooled handle checks the schema on first use, and the schema may not exist yet.
    import psycopg

    conninfo = libpq_url(settings.url)
    with psycopg.connect(conninfo, connect_timeout=settings.connect_timeout) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


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
