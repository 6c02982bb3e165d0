"""What the server did, counted: transactions, statements and buffers per unit of work.

Wall-clock figures move with the machine's load; these counts do not. A benchmark takes a
:func:`snapshot` before and after its work, and :func:`difference` gives what the server did
in between: committed transactions of the database (``pg_stat_database.xact_commit``), and
calls, rows, shared buffers touched (and of those, read from outside shared buffers), WAL
written and execution time per normalised statement (``pg_stat_statements``).

The server must load ``pg_stat_statements`` at start: :func:`counting_postgres_server` starts
an embedded PostgreSQL 18 that does, unless ``$PYNENC_BENCH_POSTGRES_URL`` names a server
(which then needs ``shared_preload_libraries = 'pg_stat_statements'`` itself).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from benchmarks.common import URL_ENV

SETTLE_SECONDS = 11.0
"""Quiet time after which every idle session has published its counts."""

UNCOUNTED = "/* uncounted */"
"""Put in a benchmark's own statement to leave it out of the counts."""

# Statements the measurement itself sends, left out of the counts.
_OWN_STATEMENTS = ("pg_stat_statements", "pg_stat_database", "pg_stat_user_tables", UNCOUNTED)


@contextmanager
def counting_postgres_server(
    url: str | None = None, settings: dict[str, str] | None = None
) -> Iterator[str]:
    """The admin URL of a server that counts statements (see the module docstring).

    :param settings: ``postgresql.conf`` settings of the embedded server (a server named
        by ``url`` keeps its own).
    """
    url = url or os.environ.get(URL_ENV)
    if url:
        yield url
        return
    from pynenc_postgres.embedded import start_counting_embedded_postgres

    print(f"{URL_ENV} is not set: starting an embedded PostgreSQL with pg_stat_statements.")
    data_dir = Path(tempfile.mkdtemp(prefix="pynenc-bench-pg-")) / "data"
    embedded = start_counting_embedded_postgres(data_dir, settings=settings)
    try:
        yield embedded.url
    finally:
        embedded.stop()


@dataclass(frozen=True)
class StatementCount:
    """One normalised statement's counts over an interval."""

    query: str
    calls: int
    rows: int
    shared_blocks: int  # shared buffers hit or read
    exec_ms: float = 0.0  # the server's execution time (total_exec_time), planning excluded
    read_blocks: int = 0  # of shared_blocks, those read in (not found in shared buffers)
    wal_bytes: int = 0
    wal_fpi: int = 0  # full-page images: first changes of a page after a checkpoint

    @property
    def blocks_per_call(self) -> float:
        return self.shared_blocks / self.calls if self.calls else 0.0

    @property
    def ms_per_call(self) -> float:
        return self.exec_ms / self.calls if self.calls else 0.0


@dataclass
class Counters:
    """What the server did in one database over an interval."""

    commits: int = 0
    rollbacks: int = 0
    statements: dict[str, StatementCount] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.statements.values())

    @property
    def shared_blocks(self) -> int:
        return sum(s.shared_blocks for s in self.statements.values())

    @property
    def exec_ms(self) -> float:
        return sum(s.exec_ms for s in self.statements.values())

    @property
    def read_blocks(self) -> int:
        return sum(s.read_blocks for s in self.statements.values())

    @property
    def wal_bytes(self) -> int:
        return sum(s.wal_bytes for s in self.statements.values())

    @property
    def wal_fpi(self) -> int:
        return sum(s.wal_fpi for s in self.statements.values())

    def per(self, units: int) -> tuple[float, float]:
        """Committed transactions and statements per unit of work (a task, a submit)."""
        return self.commits / units, self.calls / units

    def top(self, n: int = 20) -> list[StatementCount]:
        """The statements called most often, most first."""
        return sorted(self.statements.values(), key=lambda s: -s.calls)[:n]


def ensure_extension(url: str) -> None:
    """Create ``pg_stat_statements`` in the database of ``url`` (its view lives per database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def snapshot(url: str) -> Counters:
    """The cumulative counters of the database of ``url`` now.

    A server process publishes its counts when its session ends, or when it has been idle
    for a while (up to about 10 s with PostgreSQL 15 and newer): take the 'after' snapshot
    once the clients have closed their connections (``dispose_all()`` and stopped runners),
    or after :data:`SETTLE_SECONDS` of quiet.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        commits, rollbacks = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone() or (0, 0)
        rows = conn.execute(
            """
            SELECT s.query, sum(s.calls)::bigint, sum(s.rows)::bigint,
                   sum(s.shared_blks_hit + s.shared_blks_read)::bigint,
                   sum(s.total_exec_time)::float8, sum(s.shared_blks_read)::bigint,
                   sum(s.wal_bytes)::bigint, sum(s.wal_fpi)::bigint
            FROM pg_stat_statements s
            WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            GROUP BY s.query"""
        ).fetchall()
    statements = {
        query: StatementCount(query, calls, n_rows, blocks, exec_ms, read, wal, fpi)
        for query, calls, n_rows, blocks, exec_ms, read, wal, fpi in rows
        if not any(own in query for own in _OWN_STATEMENTS)
    }
    return Counters(int(commits), int(rollbacks), statements)


def difference(before: Counters, after: Counters) -> Counters:
    """What happened between two snapshots (the snapshots' own transactions excluded)."""
    statements = {}
    for query, now in after.statements.items():
        then = before.statements.get(query)
        calls = now.calls - (then.calls if then else 0)
        if calls > 0:
            statements[query] = StatementCount(
                query,
                calls,
                now.rows - (then.rows if then else 0),
                now.shared_blocks - (then.shared_blocks if then else 0),
                now.exec_ms - (then.exec_ms if then else 0.0),
                now.read_blocks - (then.read_blocks if then else 0),
                now.wal_bytes - (then.wal_bytes if then else 0),
                now.wal_fpi - (then.wal_fpi if then else 0),
            )
    # The 'before' snapshot's own two statements committed in between. Autovacuum's
    # transactions count too: a few per interval, noise over hundreds of tasks.
    return Counters(
        commits=after.commits - before.commits - 2,
        rollbacks=after.rollbacks - before.rollbacks,
        statements=statements,
    )


def short(query: str, width: int = 90) -> str:
    """A statement on one line, cut to ``width`` characters, for a report table."""
    text = " ".join(query.split())
    return text if len(text) <= width else text[: width - 3] + "..."
