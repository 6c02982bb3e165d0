"""The demo's audit report, read straight from the plugin's tables with SQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings

# One row per invocation, from the pynenc_invocation_status audit view (docs/audit.md):
# its current status, how many times it was retried, and how long it ran, from its
# first RUNNING row to its latest status change.
INVOCATIONS_SQL = """
SELECT s.invocation_id,
       s.task_id,
       s.parent_invocation_id,
       s.status,
       count(h.status) FILTER (WHERE h.status = 'retry') AS retries,
       s.status_changed_at - min(h.recorded_at) FILTER (WHERE h.status = 'running') AS duration,
       i.serialized_arguments,
       s.registered_at
FROM {schema}.pynenc_invocation_status AS s
JOIN {schema}.pynenc_invocation AS i USING (app_id, invocation_id)
JOIN {schema}.pynenc_invocation_history AS h USING (app_id, invocation_id)
WHERE s.app_id = %(app_id)s
GROUP BY s.invocation_id, s.task_id, s.parent_invocation_id, s.status,
         s.status_changed_at, i.serialized_arguments, s.registered_at
ORDER BY s.registered_at, s.invocation_id
"""

EXCEPTIONS_SQL = """
SELECT e.invocation_id, i.task_id, e.error_name, e.serialized_exception
FROM {schema}.pynenc_invocation_exception AS e
JOIN {schema}.pynenc_invocation AS i USING (app_id, invocation_id)
WHERE e.app_id = %(app_id)s
ORDER BY e.stored_at
"""


@dataclass(frozen=True)
class InvocationRow:
    """One line of the report."""

    invocation_id: str
    task: str
    parent_invocation_id: str | None
    status: str
    retries: int
    duration: timedelta | None
    arguments: dict[str, str]
    registered_at: datetime


@dataclass(frozen=True)
class ExceptionRow:
    """An exception that an invocation raised, as pynenc stored it."""

    invocation_id: str
    task: str
    error_name: str
    message: str


@dataclass(frozen=True)
class AuditReport:
    invocations: list[InvocationRow]
    exceptions: list[ExceptionRow]


def read_report(settings: DatabaseSettings, app_id: str) -> AuditReport:
    """Run the report's queries for one app.

    :param settings: the database holding the pynenc tables.
    :param app_id: the app whose invocations are reported.
    """
    schema = sql.Identifier(settings.schema)

    def op(conn: psycopg.Connection[Any]) -> AuditReport:
        params = {"app_id": app_id}
        invocations = [
            InvocationRow(
                invocation_id=row[0],
                task=row[1].rsplit(".", 1)[-1],
                parent_invocation_id=row[2],
                status=row[3],
                retries=row[4],
                duration=row[5],
                arguments=json.loads(row[6]),
                registered_at=row[7],
            )
            for row in conn.execute(
                sql.SQL(INVOCATIONS_SQL).format(schema=schema), params
            ).fetchall()
        ]
        exceptions = [
            ExceptionRow(
                invocation_id=row[0],
                task=row[1].rsplit(".", 1)[-1],
                error_name=row[2],
                message=exception_message(row[3]),
            )
            for row in conn.execute(sql.SQL(EXCEPTIONS_SQL).format(schema=schema), params)
        ]
        return AuditReport(invocations, exceptions)

    return get_database(settings).run(op)


def exception_message(serialized: str) -> str:
    """The message inside pynenc's serialized exception document.

    pynenc stores ``{"error_name": ..., "error_data": ...}`` where ``error_data`` is the
    exception as its serializer encoded it; the message is read from that structure
    without rebuilding the exception object.
    """
    try:
        document = json.loads(serialized)
    except ValueError:
        return serialized
    data = document.get("error_data") if isinstance(document, dict) else document
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return data
    args = _exception_args(data)
    if args is not None:
        return ", ".join(str(arg) for arg in args)
    return json.dumps(data)


def _exception_args(data: Any) -> list[Any] | None:
    if not isinstance(data, dict):
        return None
    for key in ("message", "error_message"):
        if isinstance(data.get(key), str):
            return [data[key]]
    if isinstance(data.get("args"), list):
        return list(data["args"])
    reduce = data.get("py/reduce")  # jsonpickle: [callable, {"py/tuple": args}, ...]
    if isinstance(reduce, list) and len(reduce) > 1 and isinstance(reduce[1], dict):
        args = reduce[1].get("py/tuple")
        if isinstance(args, list):
            return args
    return None


def format_report(report: AuditReport) -> str:
    """The report as a plain-text table, sub-tasks indented under their parent."""
    header = ("invocation", "task", "arguments", "status", "retries", "duration")
    lines = [
        (
            row.invocation_id[:8],
            "  " * depth + ("└ " if depth else "") + row.task,
            _arguments(row.arguments),
            row.status.upper(),
            str(row.retries),
            _duration(row.duration),
        )
        for row, depth in _tree_order(report.invocations)
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)),
        "  ".join("-" * width for width in widths),
    ]
    out += [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in lines
    ]
    counts: dict[str, int] = {}
    for row in report.invocations:
        counts[row.status.upper()] = counts.get(row.status.upper(), 0) + 1
    out.append("")
    out.append(
        f"{len(report.invocations)} invocations: "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    )
    for exc in report.exceptions:
        out.append("")
        out.append(f"Exception of {exc.task} ({exc.invocation_id[:8]}): {exc.error_name}")
        out.append(f"    {exc.message}")
    return "\n".join(out)


def _tree_order(rows: list[InvocationRow]) -> list[tuple[InvocationRow, int]]:
    """Rows in registration order, each sub-invocation right under its parent."""
    ids = {row.invocation_id for row in rows}
    children: dict[str | None, list[InvocationRow]] = {}
    for row in rows:
        parent = row.parent_invocation_id if row.parent_invocation_id in ids else None
        children.setdefault(parent, []).append(row)
    ordered: list[tuple[InvocationRow, int]] = []

    def visit(parent: str | None, depth: int) -> None:
        for row in children.get(parent, []):
            ordered.append((row, depth))
            visit(row.invocation_id, depth + 1)

    visit(None, 0)
    return ordered


def _arguments(arguments: dict[str, str]) -> str:
    text = ", ".join(f"{name}={_short(value)}" for name, value in arguments.items())
    return text if len(text) <= 40 else text[:37] + "..."


def _short(serialized: str) -> str:
    try:
        value = json.loads(serialized)
    except ValueError:
        return serialized
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def _duration(duration: timedelta | None) -> str:
    if duration is None:
        return "-"
    return f"{duration.total_seconds() * 1000:.0f} ms"
