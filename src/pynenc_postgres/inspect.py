"""Read-only terminal views of invocations, built on the audit views.

Every query runs in a ``READ ONLY`` transaction, so ``pynenc-postgres inspect`` can
use the same credentials as an auditor and can never change a row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg

from pynenc_postgres.db import models as m
from pynenc_postgres.db.engine import Database, get_database
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.db.sql import quote_ident
from pynenc_postgres.retention import parse_statuses

T = TypeVar("T")

STATUS_VIEW = "pynenc_invocation_status"
TIMELINE_VIEW = "pynenc_invocation_timeline"


@dataclass(frozen=True)
class InvocationSummary:
    """One row of ``pynenc_invocation_status``."""

    app_id: str
    invocation_id: str
    task_id: str
    status: str | None
    registered_at: datetime | None
    status_changed_at: datetime | None
    runner_id: str | None
    has_result: bool
    exception_name: str | None


@dataclass(frozen=True)
class TimelineStep:
    """One row of ``pynenc_invocation_timeline``."""

    step: int
    status: str
    recorded_at: datetime
    since_previous: timedelta | None
    runner_id: str
    runner_cls: str | None


@dataclass(frozen=True)
class InvocationDetail:
    """An invocation with its timeline, arguments, and result or exception."""

    summary: InvocationSummary
    serialized_arguments: str
    parent_invocation_id: str | None
    workflow_id: str | None
    timeline: list[TimelineStep]
    serialized_result: str | None
    serialized_exception: str | None


def _read_only_database(settings: DatabaseSettings) -> Database:
    # Inspecting must never migrate, whatever postgres_auto_migrate says.
    return get_database(settings.without_schema_changes())


def _read(settings: DatabaseSettings, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    def op(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        conn.execute("SET TRANSACTION READ ONLY")
        return conn.execute(query, params).fetchall()

    return _read_only_database(settings).run(op, transaction=True)


_SUMMARY_COLUMNS = (
    "app_id, invocation_id, task_id, status, registered_at, status_changed_at, runner_id, "
    "has_result, exception_name"
)


def list_invocations(
    settings: DatabaseSettings,
    app_id: str | None = None,
    task: str | None = None,
    statuses: Sequence[str] | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[InvocationSummary]:
    """Invocations with their current status, most recent change first.

    :param settings: the database.
    :param app_id: only this app (recommended: every index starts with ``app_id``).
    :param task: task key (``module.function``) or just the function name.
    :param statuses: only invocations whose current status is one of these (any case).
    :param since: only invocations with a status change at or after this moment.
    :param limit: at most this many rows (at least 1).
    :raises PostgresConfigError: a status that is not pynenc's, or a limit below 1; before
        anything is read.
    """
    if limit < 1:
        raise PostgresConfigError(f"The limit is {limit}; it must be at least 1.")
    wanted = parse_statuses(statuses) if statuses else ()
    s = quote_ident(settings.schema)
    hist = f"{s}.{m.InvocationHistory.__tablename__}"
    conditions = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if app_id:
        conditions.append("v.app_id = %(app_id)s")
        params["app_id"] = app_id
    if task:
        conditions.append("(v.task_id = %(task)s OR v.task_id LIKE %(task_suffix)s)")
        params["task"] = task
        params["task_suffix"] = "%." + task.replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_"
        )
    if wanted:
        conditions.append("v.status = ANY(%(statuses)s)")
        params["statuses"] = list(wanted)
    if since is not None:
        conditions.append(
            f"EXISTS (SELECT 1 FROM {hist} h WHERE h.app_id = v.app_id "
            "AND h.invocation_id = v.invocation_id AND h.recorded_at >= %(since)s)"
        )
        params["since"] = since
    query = (
        f"SELECT {_SUMMARY_COLUMNS} FROM {s}.{STATUS_VIEW} v WHERE {' AND '.join(conditions)} "
        "ORDER BY v.status_changed_at DESC NULLS LAST, v.invocation_id LIMIT %(limit)s"
    )
    return [InvocationSummary(*row) for row in _read(settings, query, params)]


def invocation_detail(
    settings: DatabaseSettings, invocation_id: str, app_id: str | None = None
) -> list[InvocationDetail]:
    """One invocation's timeline with its result or exception.

    :param settings: the database.
    :param invocation_id: the invocation.
    :param app_id: its app; without it every app holding that id is shown (a scan).
    :return: one detail per app holding the id (normally one, empty if unknown).
    """
    s = quote_ident(settings.schema)
    app_filter = "AND v.app_id = %(app_id)s" if app_id else ""
    params: dict[str, Any] = {"invocation_id": invocation_id, "app_id": app_id}
    rows = _read(
        settings,
        f"""SELECT {", ".join("v." + c for c in _SUMMARY_COLUMNS.split(", "))},
                   i.serialized_arguments, i.parent_invocation_id, i.workflow_id,
                   r.serialized_result, e.serialized_exception
            FROM {s}.{STATUS_VIEW} v
            JOIN {s}.{m.Invocation.__tablename__} i
              ON i.app_id = v.app_id AND i.invocation_id = v.invocation_id
            LEFT JOIN {s}.{m.InvocationResult.__tablename__} r
              ON r.app_id = v.app_id AND r.invocation_id = v.invocation_id
            LEFT JOIN {s}.{m.InvocationException.__tablename__} e
              ON e.app_id = v.app_id AND e.invocation_id = v.invocation_id
            WHERE v.invocation_id = %(invocation_id)s {app_filter}
            ORDER BY v.app_id""",
        params,
    )
    details = []
    for row in rows:
        summary = InvocationSummary(*row[:9])
        steps = _read(
            settings,
            f"""SELECT step, status, recorded_at, since_previous, runner_id, runner_cls
                FROM {s}.{TIMELINE_VIEW}
                WHERE app_id = %(app_id)s AND invocation_id = %(invocation_id)s
                ORDER BY step""",
            {"app_id": summary.app_id, "invocation_id": invocation_id},
        )
        details.append(
            InvocationDetail(
                summary=summary,
                serialized_arguments=row[9],
                parent_invocation_id=row[10],
                workflow_id=row[11],
                timeline=[TimelineStep(*step) for step in steps],
                serialized_result=row[12],
                serialized_exception=row[13],
            )
        )
    return details


# -- rendering --------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _duration(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    return f"+{delta.total_seconds():.3f}s"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def render_invocations(invocations: Sequence[InvocationSummary]) -> str:
    """The invocation list as a table (times in UTC)."""
    if not invocations:
        return "No invocation matches."
    rows = [
        (
            inv.app_id,
            inv.invocation_id,
            inv.task_id,
            inv.status or "-",
            _when(inv.registered_at),
            _when(inv.status_changed_at),
            "yes" if inv.has_result else "no",
            inv.exception_name or "-",
        )
        for inv in invocations
    ]
    headers = (
        "APP",
        "INVOCATION",
        "TASK",
        "STATUS",
        "REGISTERED (UTC)",
        "LAST CHANGE (UTC)",
        "RESULT",
        "EXCEPTION",
    )
    return render_table(headers, rows) + f"\n{len(invocations)} invocation(s)"


def _pretty(serialized: str) -> str:
    try:
        return json.dumps(json.loads(serialized), indent=2, ensure_ascii=False)
    except ValueError:
        return serialized


def render_detail(detail: InvocationDetail) -> str:
    """One invocation: identity, arguments, timeline, and result or exception."""
    inv = detail.summary
    lines = [
        f"Invocation {inv.invocation_id}",
        f"  app        {inv.app_id}",
        f"  task       {inv.task_id}",
        f"  status     {inv.status or '-'} since {_when(inv.status_changed_at)} UTC",
        f"  parent     {detail.parent_invocation_id or '-'}",
        f"  workflow   {detail.workflow_id or '-'}",
        f"  arguments  {detail.serialized_arguments}",
        "",
        "Timeline",
    ]
    steps = [
        (
            str(step.step),
            step.status,
            _when(step.recorded_at),
            _duration(step.since_previous),
            f"{step.runner_cls or '?'} {step.runner_id}",
        )
        for step in detail.timeline
    ]
    table = render_table(("STEP", "STATUS", "RECORDED AT (UTC)", "AFTER", "RUNNER"), steps)
    lines += ["  " + line for line in table.splitlines()]
    if detail.serialized_result is not None:
        lines += ["", "Result", "  " + detail.serialized_result]
    if detail.serialized_exception is not None:
        lines += ["", f"Exception {inv.exception_name}"]
        lines += ["  " + line for line in _pretty(detail.serialized_exception).splitlines()]
    if detail.serialized_result is None and detail.serialized_exception is None:
        lines += ["", "No result or exception stored yet."]
    return "\n".join(lines)
