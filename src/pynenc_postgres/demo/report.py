"""The demo's audit report, read straight from the plugin's tables with SQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings

# One row per invocation of this run (its row created since the run started, by the
# server's clock), from the pynenc_invocation_status audit view (docs/audit.md): its
# current status, how many times it was retried, how long it ran (from its first
# RUNNING row to its latest status change), and the host, process and runner of its
# latest RUNNING row, from the runner context that wrote it.
INVOCATIONS_SQL = """
SELECT s.invocation_id,
       s.task_id,
       s.parent_invocation_id,
       s.status,
       count(h.status) FILTER (WHERE h.status = 'retry') AS retries,
       s.status_changed_at - min(h.recorded_at) FILTER (WHERE h.status = 'running') AS duration,
       i.serialized_arguments,
       s.registered_at,
       ran.hostname,
       ran.pid,
       ran.runner_id
FROM {schema}.pynenc_invocation_status AS s
JOIN {schema}.pynenc_invocation AS i USING (app_id, invocation_id)
JOIN {schema}.pynenc_invocation_history AS h USING (app_id, invocation_id)
LEFT JOIN LATERAL (
    SELECT c.hostname, c.pid, c.runner_id
    FROM {schema}.pynenc_invocation_history AS r
    JOIN {schema}.pynenc_runner_context AS c
      ON c.app_id = r.app_id AND c.runner_id = r.runner_id
    WHERE r.app_id = s.app_id AND r.invocation_id = s.invocation_id AND r.status = 'running'
    ORDER BY r.recorded_at DESC, r.write_order DESC
    LIMIT 1
) AS ran ON true
WHERE s.app_id = %(app_id)s AND i.created_at >= %(since)s
GROUP BY s.invocation_id, s.task_id, s.parent_invocation_id, s.status,
         s.status_changed_at, i.serialized_arguments, s.registered_at,
         ran.hostname, ran.pid, ran.runner_id
ORDER BY s.registered_at, s.invocation_id
"""

# Every runner context that ran an invocation of this run, the runner process it is a
# worker of (its own context row), and how many invocations it ran.
RUNNERS_SQL = """
SELECT c.hostname,
       c.runner_id,
       c.runner_cls,
       c.pid,
       c.parent_runner_id,
       p.pid AS parent_pid,
       count(DISTINCT h.invocation_id) AS invocations_run
FROM {schema}.pynenc_runner_context AS c
JOIN {schema}.pynenc_invocation_history AS h
  ON h.app_id = c.app_id AND h.runner_id = c.runner_id AND h.status = 'running'
JOIN {schema}.pynenc_invocation AS i
  ON i.app_id = h.app_id AND i.invocation_id = h.invocation_id
LEFT JOIN {schema}.pynenc_runner_context AS p
  ON p.app_id = c.app_id AND p.runner_id = c.parent_runner_id
WHERE c.app_id = %(app_id)s AND i.created_at >= %(since)s
GROUP BY c.hostname, c.runner_id, c.runner_cls, c.pid, c.parent_runner_id, p.pid
ORDER BY c.hostname, p.pid NULLS FIRST, c.pid, c.runner_id
"""

EXCEPTIONS_SQL = """
SELECT e.invocation_id, i.task_id, e.error_name, e.serialized_exception
FROM {schema}.pynenc_invocation_exception AS e
JOIN {schema}.pynenc_invocation AS i USING (app_id, invocation_id)
WHERE e.app_id = %(app_id)s AND i.created_at >= %(since)s
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
    hostname: str | None
    """Host of the runner that ran it last; None if it never ran."""
    pid: int | None
    runner_id: str | None


@dataclass(frozen=True)
class RunnerRow:
    """A runner context (a worker process) that ran invocations."""

    hostname: str
    runner_id: str
    runner_cls: str
    pid: int
    parent_runner_id: str | None
    parent_pid: int | None
    """Process id of the runner it is a worker of, if that context was stored."""
    invocations_run: int


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
    runners: list[RunnerRow]
    exceptions: list[ExceptionRow]


def read_report(settings: DatabaseSettings, app_id: str, since: datetime) -> AuditReport:
    """Run the report's queries for one app.

    :param settings: the database holding the pynenc tables.
    :param app_id: the app whose invocations are reported.
    :param since: report the invocations whose rows were created from then on (a time
        of the database server's clock).
    """
    schema = sql.Identifier(settings.schema)

    def op(conn: psycopg.Connection[Any]) -> AuditReport:
        params = {"app_id": app_id, "since": since}
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
                hostname=row[8],
                pid=row[9],
                runner_id=row[10],
            )
            for row in conn.execute(
                sql.SQL(INVOCATIONS_SQL).format(schema=schema), params
            ).fetchall()
        ]
        runners = [
            RunnerRow(*row)
            for row in conn.execute(sql.SQL(RUNNERS_SQL).format(schema=schema), params)
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
        return AuditReport(invocations, runners, exceptions)

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
    """The report as plain-text tables, sub-tasks indented under their parent."""
    rows = [
        (
            row.invocation_id[:8],
            "  " * depth + ("└ " if depth else "") + row.task,
            _arguments(row.arguments),
            row.status.upper(),
            str(row.retries),
            _duration(row.duration),
            row.hostname or "-",
            _short_id(row.runner_id),
        )
        for row, depth in _tree_order(report.invocations)
    ]
    out = _table(
        ("invocation", "task", "arguments", "status", "retries", "duration", "host", "runner"),
        rows,
    )
    counts: dict[str, int] = {}
    for row in report.invocations:
        counts[row.status.upper()] = counts.get(row.status.upper(), 0) + 1
    out.append("")
    out.append(
        f"{len(report.invocations)} invocations: "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    )
    hosts = sorted({runner.hostname for runner in report.runners})
    processes = {runner.parent_runner_id or runner.runner_id for runner in report.runners}
    out.append("")
    out.append(
        f"Runners that ran them: {len(report.runners)} worker processes of "
        f"{len(processes)} runner processes, on {len(hosts)} "
        f"{'host' if len(hosts) == 1 else 'hosts'} ({', '.join(hosts)})"
    )
    out.append("")
    out += _table(
        ("host", "runner", "class", "pid", "worker of", "runner pid", "invocations run"),
        [
            (
                runner.hostname,
                _short_id(runner.runner_id),
                runner.runner_cls,
                str(runner.pid),
                _short_id(runner.parent_runner_id),
                str(runner.parent_pid) if runner.parent_pid is not None else "-",
                str(runner.invocations_run),
            )
            for runner in report.runners
        ],
    )
    for exc in report.exceptions:
        out.append("")
        out.append(f"Exception of {exc.task} ({exc.invocation_id[:8]}): {exc.error_name}")
        out.append(f"    {exc.message}")
    return "\n".join(out)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip(),
        "  ".join("-" * width for width in widths),
        *(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
            for cells in rows
        ),
    ]


def _short_id(runner_id: str | None) -> str:
    return runner_id[:8] if runner_id else "-"


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
