"""Helpers shared by the benchmarks: the Postgres server to measure, machine facts, docs output."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.settings import DatabaseSettings, redact_url

URL_ENV = "PYNENC_BENCH_POSTGRES_URL"
BASE = datetime(2025, 1, 1, tzinfo=UTC)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass
class BenchDatabase:
    """A migrated database created for one benchmark run and dropped afterwards."""

    admin_url: str
    name: str

    @property
    def url(self) -> str:
        return make_url(self.admin_url).set(database=self.name).render_as_string(False)


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    """The admin URL of the server to measure: ``url``, ``$PYNENC_BENCH_POSTGRES_URL``, or an
    embedded PostgreSQL started for this run (so the benchmark works on a fresh machine)."""
    url = url or os.environ.get(URL_ENV)
    if url:
        yield url
        return
    from pynenc_postgres.embedded import start_embedded_postgres

    print(f"{URL_ENV} is not set: starting an embedded PostgreSQL for this run.")
    data_dir = Path(tempfile.mkdtemp(prefix="pynenc-bench-pg-")) / "data"
    embedded = start_embedded_postgres(data_dir, delete_on_stop=True)
    try:
        yield embedded.url
    finally:
        embedded.stop()


@contextmanager
def bench_database(admin_url: str, name: str | None = None) -> Iterator[BenchDatabase]:
    """Create ``name`` (default: a unique name), migrate it to head, drop it on exit."""
    db = BenchDatabase(admin_url, name or f"pynenc_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
    try:
        schema.upgrade(DatabaseSettings(url=db.url))
        yield db
    finally:
        dispose_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name))
            )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(postgres_url: str, redis_version: str | None = None) -> list[str]:
    """Facts that decide the figures: CPU, cores, server version and durability settings."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        sync_commit = conn.execute("SHOW synchronous_commit").fetchone()
        wal_sync = conn.execute("SHOW wal_sync_method").fetchone()
    host = make_url(postgres_url).host or "unix socket"
    lines = [
        f"CPU: {_cpu_model()}, {os.cpu_count()} cores ({platform.system()} {platform.release()})",
        f"Python {platform.python_version()}, pynenc {version('pynenc')}, "
        f"psycopg {version('psycopg')}, SQLAlchemy {version('sqlalchemy')}",
        f"PostgreSQL {pg_version[0] if pg_version else '?'} on {host}: "
        f"fsync={fsync[0] if fsync else '?'}, "
        f"synchronous_commit={sync_commit[0] if sync_commit else '?'}, "
        f"wal_sync_method={wal_sync[0] if wal_sync else '?'}",
    ]
    if redis_version:
        lines.append(f"Redis {redis_version} (pynenc-redis {version('pynenc-redis')})")
    return lines


def server_label(url: str) -> str:
    return redact_url(url)


def replace_section(section: str, body: str, path: Path = DOCS) -> None:
    """Replace the text between ``<!-- section:begin -->`` and ``<!-- section:end -->``."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"Wrote the {section} results into {path}")


def bench_task(x: int) -> int:
    """The task every benchmark invocation calls (it must live outside ``__main__``)."""
    return x


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for the report of a run on a shared machine."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# -- server-side seeding (scale benchmark, and a realistic base for the workload) ---------


def inv_id(app: str, i: int) -> str:
    """The seeded id of invocation ``i`` of ``app`` (the same md5 the SQL computes)."""
    return hashlib.md5(f"{app}:{i}".encode()).hexdigest()


SEED_SQL = {
    "pynenc_invocation": """
        INSERT INTO pynenc_invocation (app_id, invocation_id, task_id, call_id, arguments_id,
            serialized_arguments, parent_invocation_id, workflow_id, workflow_type_key)
        SELECT %(app)s, md5(%(app)s || ':' || i), 'benchmarks.common.bench_task',
               'benchmarks.common.bench_task:' || md5(i::text), md5(i::text),
               '{"x": "' || i || '"}',
               CASE WHEN i %% 10 <> 0 THEN md5(%(app)s || ':' || (i - i %% 10)) END,
               md5(%(app)s || ':' || (i - i %% 10)), 'benchmarks.common.bench_task'
        FROM generate_series(%(lo)s::int, %(hi)s::int) AS i
        ON CONFLICT DO NOTHING""",
    "pynenc_invocation_history": """
        INSERT INTO pynenc_invocation_history (app_id, invocation_id, recorded_at, status,
            status_owner_id, status_set_at, runner_id, registered_by_invocation_id)
        SELECT %(app)s, md5(%(app)s || ':' || i),
               %(base)s::timestamptz + i * interval '1 second' + s.k * interval '10 milliseconds',
               s.status, CASE WHEN s.k > 0 THEN %(app)s || '-runner-' || (i %% 100) END,
               %(base)s::timestamptz + i * interval '1 second' + s.k * interval '10 milliseconds',
               %(app)s || '-runner-' || (i %% 100), NULL
        FROM generate_series(%(lo)s::int, %(hi)s::int) AS i,
             (VALUES (0, 'registered'), (1, 'running'), (2, 'success')) AS s(k, status)
        ON CONFLICT DO NOTHING""",
    "pynenc_invocation_result": """
        INSERT INTO pynenc_invocation_result (app_id, invocation_id, serialized_result)
        SELECT %(app)s, md5(%(app)s || ':' || i), i::text
        FROM generate_series(%(lo)s::int, %(hi)s::int) AS i
        ON CONFLICT DO NOTHING""",
    "pynenc_runner_context": """
        INSERT INTO pynenc_runner_context (app_id, runner_id, runner_cls, parent_runner_id,
            pid, hostname, thread_id)
        SELECT %(app)s, %(app)s || '-runner-' || j, 'ThreadRunner', NULL, 1000 + j,
               'host-' || (j %% 4), 140000000 + j
        FROM generate_series(0, 99) AS j
        ON CONFLICT DO NOTHING""",
}


def seed(conn: psycopg.Connection[Any], app: str, count: int) -> None:
    for statement in SEED_SQL.values():
        conn.execute(statement, {"app": app, "lo": 0, "hi": count - 1, "base": BASE})
