"""Read-only terminal views of invocations, built on the audit views.

Every query runs in a ``READ ONLY`` transaction, so ``pynenc-postgres inspect`` can
use the same credentials as an auditor and can never change a row.

pynenc keeps a serialized argument, result or exception above ``min_size_to_cache``
characters in its client data store and stores only a reference key in its place. An
invocation's detail resolves those keys through ``pynenc_client_data`` (the table of
``PostgresClientDataStore``), so it shows the values themselves; a key whose row is not
there (deleted, or kept by another client data store) is shown as such.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from pynenc.serializer.constants import ReservedKeys

from pynenc_postgres.db import models as m
from pynenc_postgres.db.engine import Database, get_database
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.db.sql import quote_ident
from pynenc_postgres.retention import parse_statuses

T = TypeVar("T")

STATUS_VIEW = "pynenc_invocation_status"
TIMELINE_VIEW = "pynenc_invocation_timeline"

CLIENT_DATA_PREFIX = ReservedKeys.CLIENT_DATA.value
"""How pynenc's client data store references begin."""

MAX_CHARS = 1000
"""Characters of a value from the client data store shown by default."""


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
class StoredValue:
    """A serialized value, inline or resolved through the client data store.

    :param text: the value as pynenc's serializer wrote it; only its beginning when
        ``complete`` is False; None when it is a reference whose row is not in
        ``pynenc_client_data`` (deleted, or kept by another client data store).
    :param reference: the client data store key the invocation holds, for a value kept
        there; None for a value stored inline.
    :param size: bytes of the whole value as stored (UTF-8), 0 when it is missing.
    :param complete: False when ``text`` is only the beginning of the value.
    """

    text: str | None
    reference: str | None = None
    size: int = 0
    complete: bool = True

    @property
    def missing(self) -> bool:
        """True for a reference whose row is not in ``pynenc_client_data``."""
        return self.text is None


@dataclass(frozen=True)
class InvocationDetail:
    """An invocation with its timeline, arguments, and result or exception.

    The ``serialized_*`` fields hold what the invocation's rows hold, references
    included; ``arguments``, ``result`` and ``exception_data`` have those references
    resolved.
    """

    summary: InvocationSummary
    serialized_arguments: str
    parent_invocation_id: str | None
    workflow_id: str | None
    timeline: list[TimelineStep]
    serialized_result: str | None
    serialized_exception: str | None
    arguments: dict[str, StoredValue] = field(default_factory=dict)
    """Each argument by name."""
    result: StoredValue | None = None
    exception_data: StoredValue | None = None
    """The ``error_data`` of the serialized exception (pynenc keeps it in the store too)."""


def _read_only_database(settings: DatabaseSettings) -> Database:
    # Inspecting must never migrate, whatever postgres_auto_migrate says.
    return get_database(settings.without_schema_changes())


def _read(
    settings: DatabaseSettings, query: str, params: dict[str, Any], *, binary: bool = False
) -> list[tuple[Any, ...]]:
    def op(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        conn.execute("SET TRANSACTION READ ONLY")
        with conn.cursor(binary=binary) as cursor:
            return cursor.execute(query, params).fetchall()

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
    settings: DatabaseSettings,
    invocation_id: str,
    app_id: str | None = None,
    max_chars: int | None = MAX_CHARS,
) -> list[InvocationDetail]:
    """One invocation's timeline with its arguments, and its result or exception.

    :param settings: the database.
    :param invocation_id: the invocation.
    :param app_id: its app; without it every app holding that id is shown (a scan).
    :param max_chars: characters read of each value kept in the client data store
        (pynenc keeps values there because they are large); None reads them whole.
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
        arguments = _arguments(row[9])
        error_data = _error_data(row[13])
        resolved = _client_data(
            settings,
            summary.app_id,
            [*arguments.values(), row[12], error_data],
            max_chars,
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
                arguments={name: _stored(value, resolved) for name, value in arguments.items()},
                result=None if row[12] is None else _stored(row[12], resolved),
                exception_data=None if error_data is None else _stored(error_data, resolved),
            )
        )
    return details


def _arguments(serialized: str) -> dict[str, str]:
    """Argument name to serialized value (or reference), as pynenc stores them."""
    try:
        document = json.loads(serialized)
    except ValueError:
        return {}
    if not isinstance(document, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in document.items()}


def _error_data(serialized_exception: str | None) -> str | None:
    if serialized_exception is None:
        return None
    try:
        document = json.loads(serialized_exception)
    except ValueError:
        return None
    data = document.get("error_data") if isinstance(document, dict) else None
    return data if isinstance(data, str) else None


def _is_reference(value: str | None) -> bool:
    return value is not None and value.startswith(CLIENT_DATA_PREFIX)


def _client_data(
    settings: DatabaseSettings,
    app_id: str,
    values: Iterable[str | None],
    max_chars: int | None,
) -> dict[str, StoredValue]:
    """The referenced values found in ``pynenc_client_data``, by key (missing ones absent).

    Only the first ``max_chars`` characters are read (at most 4 bytes each in UTF-8):
    a value kept in the store may be many megabytes.
    """
    keys = sorted({value for value in values if value is not None and _is_reference(value)})
    if not keys:
        return {}
    table = f"{quote_ident(settings.schema)}.{m.ClientData.__tablename__}"
    value_sql = "data_value" if max_chars is None else "substring(data_value FROM 1 FOR %(bytes)s)"
    rows = _read(
        settings,
        f"""SELECT data_key, octet_length(data_value), {value_sql} FROM {table}
            WHERE app_id = %(app_id)s AND data_key = ANY(%(keys)s)""",
        {"app_id": app_id, "keys": keys, "bytes": 4 * (max_chars or 0)},
        binary=True,
    )
    found = {}
    for key, size, data in rows:
        data = bytes(data)
        whole = len(data) == size
        # The client data store writes UTF-8 with lone surrogates passed through; a cut
        # through a character's bytes leaves them out.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogatepass")
        text = decoder.decode(data, final=whole)
        if max_chars is not None and len(text) > max_chars:
            text, whole = text[:max_chars], False
        found[key] = StoredValue(text=text, reference=key, size=size, complete=whole)
    return found


def _stored(value: str, resolved: dict[str, StoredValue]) -> StoredValue:
    if not _is_reference(value):
        return StoredValue(text=value, size=len(value.encode("utf-8", "surrogatepass")))
    return resolved.get(value, StoredValue(text=None, reference=value))


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


def shown(value: StoredValue) -> str:
    """A stored value for the terminal, saying where it was kept when that matters."""
    if value.text is None:
        return (
            f"(kept in the client data store as {value.reference}, but pynenc_client_data "
            "has no such row: it was deleted, or another client data store keeps it)"
        )
    if value.complete:
        return value.text
    return (
        f"{value.text}... (the first {len(value.text):,} characters of {value.size:,} bytes "
        "kept in the client data store; --full shows all)"
    )


def _argument_lines(detail: InvocationDetail) -> list[str]:
    if not detail.arguments:
        if detail.serialized_arguments and detail.serialized_arguments not in ("{}", "null"):
            return [f"  arguments  {detail.serialized_arguments}"]  # not a JSON object
        return ["  arguments  -"]
    lines: list[str] = []
    for name, value in detail.arguments.items():
        label = "  arguments  " if not lines else " " * 13
        lines.append(f"{label}{name}={shown(value)}")
    return lines


def _exception_text(detail: InvocationDetail) -> str:
    """The serialized exception, pretty-printed, with its ``error_data`` resolved."""
    assert detail.serialized_exception is not None
    data = detail.exception_data
    if data is None or data.reference is None:
        return _pretty(detail.serialized_exception)
    document = json.loads(detail.serialized_exception)
    document["error_data"] = shown(data)
    return json.dumps(document, indent=2, ensure_ascii=False)


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
        *_argument_lines(detail),
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
    if detail.result is not None:
        lines += ["", "Result", "  " + shown(detail.result)]
    elif detail.serialized_result is not None:
        lines += ["", "Result", "  " + detail.serialized_result]
    if detail.serialized_exception is not None:
        lines += ["", f"Exception {inv.exception_name}"]
        lines += ["  " + line for line in _exception_text(detail).splitlines()]
    if detail.serialized_result is None and detail.serialized_exception is None:
        lines += ["", "No result or exception stored yet."]
    return "\n".join(lines)
