"""The record of retention runs (``pynenc_retention_run``), read for operators."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import sql as retention_sql


@dataclass(frozen=True)
class RetentionRun:
    """One retention run, as recorded.

    :param outcome: ``running``, ``completed``, ``blocked`` or ``failed``.
    :param rows_removed: rows removed per table.
    """

    app_id: str
    run_id: str
    kind: str
    runner_id: str | None
    policy: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    invocations: int
    batches: int
    batches_blocked: int
    rows_removed: dict[str, int]
    error: str | None


def last_runs(
    settings: DatabaseSettings, app_id: str | None = None, limit: int = 10
) -> list[RetentionRun]:
    """The latest runs, newest first, read in a ``READ ONLY`` transaction (the auditor
    role can run it) that never migrates the schema.

    :param app_id: only this app's runs (None: every app's).
    :param limit: at most this many.
    """
    sql = retention_sql.statements(settings.schema)

    def op(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        conn.execute("SET TRANSACTION READ ONLY")
        return conn.execute(sql.last_runs, {"app_id": app_id, "limit": limit}).fetchall()

    rows = get_database(settings.without_schema_changes()).run(op, transaction=True)
    return [RetentionRun(*row) for row in rows]


def render_runs(runs: list[RetentionRun]) -> str:
    """One block per run: its summary line, then the rows removed per table."""
    if not runs:
        return "No retention run recorded."
    blocks = []
    for run in runs:
        took = (
            f"{(run.finished_at - run.started_at).total_seconds():.1f}s"
            if run.finished_at is not None
            else "not finished"
        )
        lines = [
            f"{run.started_at.isoformat()}  app {run.app_id}  {run.kind}  {run.outcome}  "
            f"{run.invocations} invocations in {run.batches} batches  ({took})",
            f"  run {run.run_id}  policy: {run.policy}"
            + (f"  runner: {run.runner_id}" if run.runner_id else ""),
        ]
        if run.batches_blocked:
            lines.append(f"  batches blocked by locks: {run.batches_blocked}")
        if run.error:
            lines.append(f"  error: {run.error}")
        removed = {table: count for table, count in run.rows_removed.items() if count}
        if removed:
            width = max(len(table) for table in removed)
            lines += [f"    {table:<{width}}  {count:>10}" for table, count in removed.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
