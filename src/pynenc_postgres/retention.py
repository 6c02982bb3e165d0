"""Retention: delete old invocations of one app in short, index-backed batches.

An invocation is in scope when it belongs to the app, its current status (its latest
history row, in write order) is one of the requested statuses (by default pynenc's
final statuses) and, with ``older_than``, that status was recorded before
``now() - older_than``.

Candidates are read in keyset order from the history index
``(app_id, recorded_at, invocation_id, status)``, so every batch starts where the
previous one stopped and reads only old rows. Each batch is one transaction that
removes the invocations it found from every table at once: history, result,
exception, workflow membership, and the invocation row. An invocation that defines a
workflow run also takes that run, its workflow data and its membership list with it.
Runner contexts and app info are shared by all invocations and are never deleted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.db import models as m
from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.db.sql import quote_ident

PURGED_TABLES = (
    m.InvocationHistory.__tablename__,
    m.InvocationResult.__tablename__,
    m.InvocationException.__tablename__,
    m.WorkflowSubInvocation.__tablename__,
    m.WorkflowData.__tablename__,
    m.WorkflowRun.__tablename__,
    m.Invocation.__tablename__,
)
"""Tables a purge deletes from, in the order the counts are reported."""

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_START = datetime(1, 1, 1, tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` into a timedelta.

    :param text: a whole number followed by one unit: s, m, h, d or w.
    :raises PostgresConfigError: the text is not of that form.
    """
    match = _DURATION.match(text.lower())
    if not match:
        raise PostgresConfigError(
            f"Cannot read the duration {text!r}. Use a whole number and a unit: "
            "45s, 90m, 12h, 30d or 2w."
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_statuses(names: Iterable[str]) -> tuple[str, ...]:
    """Validate status names (any case) against pynenc's statuses.

    :param names: e.g. ``["FAILED", "success"]``.
    :raises PostgresConfigError: a name is not a pynenc status.
    """
    valid = {status.value for status in InvocationStatus}
    statuses = []
    for name in names:
        value = name.strip().lower()
        if value not in valid:
            raise PostgresConfigError(
                f"{name!r} is not a pynenc invocation status. Use one of: "
                f"{', '.join(sorted(valid))}."
            )
        statuses.append(value)
    return tuple(dict.fromkeys(statuses))


def final_statuses() -> tuple[str, ...]:
    """pynenc's final statuses, the default scope of a purge."""
    return tuple(sorted(status.value for status in InvocationStatus.get_final_statuses()))


@dataclass
class PurgeReport:
    """What a purge deleted (or, in a dry run, would delete).

    :param app_id: the app purged.
    :param cutoff: statuses recorded before this moment were in scope (None: any age).
    :param statuses: the current statuses in scope.
    :param dry_run: True when nothing was deleted.
    :param invocations: invocations in scope.
    :param batches: transactions used.
    :param rows: rows per table.
    """

    app_id: str
    cutoff: datetime | None
    statuses: tuple[str, ...]
    dry_run: bool
    invocations: int = 0
    batches: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PURGED_TABLES, 0))

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def render(self) -> str:
        """Human-readable summary, one line per table."""
        verb = "would delete" if self.dry_run else "deleted"
        age = f" older than {self.cutoff.isoformat()}" if self.cutoff else ""
        lines = [
            f"app {self.app_id}: {verb} {self.invocations} invocations with status "
            f"{', '.join(self.statuses)}{age} in {self.batches} batches"
        ]
        width = max(len(table) for table in self.rows)
        lines += [f"  {table:<{width}}  {count:>10}" for table, count in self.rows.items()]
        lines.append(f"  {'total rows':<{width}}  {self.total_rows:>10}")
        return "\n".join(lines)


def _candidates_sql(schema: str, with_cutoff: bool) -> str:
    hist = f"{quote_ident(schema)}.{m.InvocationHistory.__tablename__}"
    cutoff = "AND h.recorded_at < %(cutoff)s" if with_cutoff else ""
    # The scan walks the (app_id, recorded_at, invocation_id, status) index from the
    # cursor, which is unique (the primary key's columns). The NOT EXISTS probe of the
    # primary key (app_id, invocation_id, recorded_at >= the row's) keeps only each
    # invocation's latest row in write order, so an invocation whose status moved on,
    # even within the same microsecond, is never in scope.
    return f"""
        SELECT h.recorded_at, h.invocation_id, h.status,
               NOT EXISTS (
                   SELECT 1 FROM {hist} later
                   WHERE later.app_id = h.app_id AND later.invocation_id = h.invocation_id
                     AND (later.recorded_at, later.write_order, later.status)
                         > (h.recorded_at, h.write_order, h.status)
               ) AS is_latest
        FROM {hist} h
        WHERE h.app_id = %(app_id)s {cutoff}
          AND (h.recorded_at, h.invocation_id, h.status)
              > (%(after_at)s, %(after_id)s, %(after_status)s)
          AND h.status = ANY(%(statuses)s)
        ORDER BY h.recorded_at, h.invocation_id, h.status
        LIMIT %(limit)s"""


def _table_sql(schema: str, dry_run: bool) -> dict[str, str]:
    s = quote_ident(schema)
    keys = {
        m.InvocationHistory.__tablename__: "invocation_id = ANY(%(ids)s)",
        m.InvocationResult.__tablename__: "invocation_id = ANY(%(ids)s)",
        m.InvocationException.__tablename__: "invocation_id = ANY(%(ids)s)",
        m.WorkflowSubInvocation.__tablename__: (
            "(sub_invocation_id = ANY(%(ids)s) OR workflow_id = ANY(%(ids)s))"
        ),
        m.WorkflowData.__tablename__: "workflow_id = ANY(%(ids)s)",
        m.WorkflowRun.__tablename__: "workflow_id = ANY(%(ids)s)",
        m.Invocation.__tablename__: "invocation_id = ANY(%(ids)s)",
    }
    statements = {}
    for table, condition in keys.items():
        verb = "DELETE FROM"
        if dry_run:
            # A membership row can match two batches (its workflow in one, its
            # sub-invocation in another); the dry run counts distinct rows.
            verb = (
                "SELECT workflow_id, sub_invocation_id FROM"
                if table == m.WorkflowSubInvocation.__tablename__
                else "SELECT count(*) FROM"
            )
        statements[table] = f"{verb} {s}.{table} WHERE app_id = %(app_id)s AND {condition}"
    return statements


def purge_invocations(
    settings: DatabaseSettings,
    app_id: str,
    older_than: timedelta | None = None,
    statuses: Iterable[str] | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    on_batch: Callable[[PurgeReport], None] | None = None,
) -> PurgeReport:
    """Delete one app's invocations by current status and its age, in batches.

    :param settings: the database. Its schema must be at head: a purge never creates
        or migrates it, even with ``auto_migrate``.
    :param app_id: the app whose invocations are purged; no other app is touched.
    :param older_than: only invocations whose current status was recorded at least this
        long ago (server clock). None: any age.
    :param statuses: current statuses in scope, any case. None: pynenc's final statuses
        (success, failed, concurrency_controlled_final). Naming a non-final status
        such as ``running`` also deletes invocations a runner may still be working on.
    :param batch_size: invocations per transaction.
    :param dry_run: count what would be deleted, delete nothing.
    :param on_batch: called with the running report after each batch.
    :return: the counts per table.
    """
    if batch_size < 1:
        raise PostgresConfigError("batch_size must be at least 1.")
    if older_than is not None and older_than < timedelta(0):
        # A cutoff in the future would put every invocation in scope, however recent.
        raise PostgresConfigError(f"older_than must not be negative (got {older_than}).")
    if not app_id:
        raise PostgresConfigError("A purge needs the app id whose invocations it deletes.")
    scope = parse_statuses(statuses) if statuses is not None else final_statuses()
    if not scope:
        raise PostgresConfigError("A purge needs at least one status.")
    # Deleting rows is no reason to run DDL, whatever postgres_auto_migrate says.
    database = get_database(settings.without_schema_changes())

    def server_now(conn: psycopg.Connection[Any]) -> datetime:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        moment: datetime = row[0]
        return moment

    cutoff = database.run(server_now) - older_than if older_than is not None else None
    report = PurgeReport(app_id=app_id, cutoff=cutoff, statuses=scope, dry_run=dry_run)
    candidates = _candidates_sql(settings.schema, cutoff is not None)
    per_table = _table_sql(settings.schema, dry_run)
    cursor: tuple[datetime, str, str] = (_START, "", "")

    Cursor = tuple[datetime, str, str]
    seen_memberships: set[tuple[str, str]] = set()

    def batch(conn: psycopg.Connection[Any]) -> tuple[Cursor | None, int, dict[str, int]]:
        params: dict[str, Any] = {
            "app_id": app_id,
            "cutoff": cutoff,
            "statuses": list(scope),
            "after_at": cursor[0],
            "after_id": cursor[1],
            "after_status": cursor[2],
            "limit": batch_size,
        }
        rows = conn.execute(candidates, params).fetchall()
        counts = dict.fromkeys(per_table, 0)
        if not rows:
            return None, 0, counts
        ids = [row[1] for row in rows if row[3]]
        if ids:
            for table, statement in per_table.items():
                result = conn.execute(statement, {"app_id": app_id, "ids": ids})
                if dry_run and table == m.WorkflowSubInvocation.__tablename__:
                    fresh = {(row[0], row[1]) for row in result.fetchall()} - seen_memberships
                    seen_memberships.update(fresh)
                    counts[table] = len(fresh)
                elif dry_run:
                    counted = result.fetchone()
                    counts[table] = int(counted[0]) if counted else 0
                else:
                    counts[table] = result.rowcount
        last = rows[-1]
        return (last[0], last[1], last[2]), len(ids), counts

    while True:
        # Counts are added only once the batch committed, so a retried batch
        # is not counted twice.
        next_cursor, found, counts = database.run(batch, transaction=True)
        if next_cursor is None:
            return report
        cursor = next_cursor
        report.batches += 1
        report.invocations += found
        for table, count in counts.items():
            report.rows[table] += count
        if on_batch is not None:
            on_batch(report)
