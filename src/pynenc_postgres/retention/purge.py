"""The one purge: remove invocations from every component's tables, in short batches.

Every way of purging goes through this module: ``pynenc-postgres purge``, the scheduled
run of the retention policy (:mod:`.scheduled`) and pynenc's ``app.purge()`` (each
component's ``purge()`` calls :func:`purge_app` with its own tables).

An invocation is in scope when it belongs to the app, its current status is one of the
requested statuses (by default pynenc's final statuses) and that status was recorded
before the cutoff (``now() - older_than`` on the server's clock). Candidates come from
the history, in keyset order of its ``(app_id, recorded_at, invocation_id, status)``
index, then from the orchestrator's ``(app_id, status, status_set_at)`` index, which
finds the invocations the history does not know (another state backend, or rows an
older purge left behind).

Each batch (:func:`purge_batch`) is one transaction under ``SET LOCAL lock_timeout``
that removes its invocations from every table that holds a row because of them
(:data:`~.sql.INVOCATION_ROWS`: history, result, exception, workflow rows, invocation,
orchestrator status and arguments, waiting edges, queue messages), then the client data
that those rows referred to and nothing left refers to. A batch that waits longer than
the lock timeout for a row lock is rolled back whole and left for the next run.

After the batches, two short transactions: heartbeats of runners dead for longer than
the window go, then runner contexts that no remaining row names.

Kept: trigger events, trigger runs and atomic-service executions (pynenc's own
retention settings govern them), app info, and ``pynenc_history_counter``, whose totals
retention never lowers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.engine import Database, get_database
from pynenc_postgres.db.errors import PostgresConfigError, driver_error
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.db.sql import qualified
from pynenc_postgres.retention import sql as retention_sql
from pynenc_postgres.retention.policy import final_statuses, parse_statuses, render_duration
from pynenc_postgres.retention.sql import RetentionSql

PURGED_TABLES: tuple[str, ...] = (
    *(table for table, _ in retention_sql.INVOCATION_ROWS),
    t.CLIENT_DATA,
    t.RUNNER_HEARTBEAT,
    t.RUNNER_CONTEXT,
)
"""Tables a purge deletes from, in the order the counts are reported."""

KEPT_TABLES: tuple[str, ...] = (
    t.APP_INFO,
    t.HISTORY_COUNTER,
    *t.TRIGGER_TABLES,
    t.ATOMIC_SERVICE_EXECUTION,
    *t.RETENTION_TABLES,
)
"""Tables a purge of invocations never deletes from (see the module's docstring)."""

RUN_RECORDS_KEPT = 1000
"""Records of ``pynenc_retention_run`` an app keeps: its latest runs (about six weeks of
hourly runs); older ones go when a run ends."""

DEFAULT_LOCK_TIMEOUT_MS = 2000
"""Longest a batch waits for a row lock before it is rolled back and left for later."""

DEFAULT_PAUSE_RATIO = 0.0
"""After each batch the purge waits this many times the batch's own time (candidates,
deletes, commit) before the next, so that it keeps one server backend busy only
``1 / (1 + ratio)`` of the time. 0 by default: on a 2-core machine
(``benchmarks.retention_volume``, 200,000 invocations, batches of 1,000) the runners'
hot-path calls stayed within 1.4x to 1.6x their idle p95 with no pause, and a pause cost
throughput in proportion (1.0 halved it) without lowering that p95 measurably. A server
already near its limits can be given room with ``pause_ratio`` (``pynenc-postgres purge
--pause-ratio``)."""

DEFAULT_RUNNER_DEAD_AFTER = timedelta(minutes=10)
"""pynenc's default ``runner_considered_dead_after_minutes``."""

CLIENT_DATA_REFRESH = timedelta(minutes=1)
"""The client data store moves ``stored_at`` forward when a value older than this is
stored again: a value stored after ``cutoff - CLIENT_DATA_REFRESH`` may be in use."""

_START = datetime(1, 1, 1, tzinfo=UTC)
LOCK_NOT_AVAILABLE = "55P03"

Conn = psycopg.Connection[Any]


@dataclass
class PurgeReport:
    """What a purge deleted (or, in a dry run, would delete).

    :param app_id: the app purged.
    :param cutoff: statuses recorded before this moment were in scope (None: any age);
        with several windows, the cutoff of the shortest.
    :param statuses: the current statuses in scope.
    :param dry_run: True when nothing was deleted.
    :param policy: the scope as one line (``failed=30d, success=7d``).
    :param run_id: the record of the run in ``pynenc_retention_run`` (None in a dry run).
    :param invocations: invocations in scope.
    :param batches: transactions committed (rolled back, in a dry run).
    :param batches_blocked: batches rolled back after waiting for a lock too long.
    :param errors: what blocked those batches.
    :param rows: rows per table.
    """

    app_id: str
    cutoff: datetime | None
    statuses: tuple[str, ...]
    dry_run: bool
    policy: str = ""
    run_id: str | None = None
    invocations: int = 0
    batches: int = 0
    batches_blocked: int = 0
    errors: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PURGED_TABLES, 0))

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def outcome(self) -> str:
        """``completed``, or ``blocked`` when some batches were left for the next run."""
        return "blocked" if self.batches_blocked else "completed"

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
        if self.batches_blocked:
            lines.append(
                f"{self.batches_blocked} batches waited longer than the lock timeout for rows "
                f"another transaction holds and were rolled back ({self.errors[0]}); their "
                "invocations stay for the next run."
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Scope:
    """One pass of a purge: statuses that share a window.

    :param statuses: current statuses in scope.
    :param older_than: their status was recorded at least this long ago (None: any age).
    :param marked: see the attribute.
    """

    statuses: tuple[str, ...]
    older_than: timedelta | None
    marked: bool = False
    """Instead of statuses: the invocations set up for pynenc's auto purge
    (``purgeable_since``) at least ``older_than`` ago, whatever their status."""


def _is_lock_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        err = driver_error(seen)
        if err is not None and err.sqlstate == LOCK_NOT_AVAILABLE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def purge_batch(
    conn: Conn,
    sql: RetentionSql,
    app_id: str,
    ids: Sequence[str],
    keep_client_data_after: datetime,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    memberships: bool = True,
) -> tuple[dict[str, int], set[tuple[str, str]], set[str]]:
    """Remove the invocations ``ids`` of ``app_id`` from every table, on ``conn``.

    Run it inside one transaction (the caller's): all of it commits or none of it. It
    is the unit a benchmark times. Two statements: the batch's rows of every table
    (:attr:`~.sql.RetentionSql.purge_batch`, which also answers with the client-data
    keys those rows named), then the stored values among those keys that nothing left
    names.

    :param conn: a connection inside a transaction.
    :param sql: the statements of the schema.
    :param ids: invocation ids.
    :param keep_client_data_after: client data stored after this moment stays, even if
        nothing refers to it any more (it may be about to be used).
    :param lock_timeout_ms: ``lock_timeout`` of the transaction; 0 waits as long as it
        takes.
    :param memberships: return the workflow memberships removed (a dry run needs them;
        an empty set otherwise).
    :return: rows per table, the workflow memberships removed and the client data keys
        removed (so a dry run can count rows that two batches share once).
    :raises psycopg.errors.LockNotAvailable: a row lock was not granted in time.
    """
    params: dict[str, Any] = {"app_id": app_id, "ids": list(ids), "memberships": memberships}
    conn.execute(sql.lock_timeout, {"lock_timeout": f"{max(lock_timeout_ms, 0)}ms"})
    row = conn.execute(sql.purge_batch, params).fetchone()
    assert row is not None
    tables = len(retention_sql.INVOCATION_ROWS)
    counts = dict.fromkeys(PURGED_TABLES, 0)
    for (table, _), count in zip(retention_sql.INVOCATION_ROWS, row[:tables], strict=True):
        counts[table] = int(count)
    keys: list[str] = row[tables]
    removed: set[tuple[str, str]] = {(pair[0], pair[1]) for pair in row[tables + 1] or ()}
    removed_keys: set[str] = set()
    if keys:
        removed_keys = {
            found[0]
            for found in conn.execute(
                sql.client_data,
                {"app_id": app_id, "keys": keys, "keep_after": keep_client_data_after},
            ).fetchall()
        }
        counts[t.CLIENT_DATA] = len(removed_keys)
    return counts, removed, removed_keys


def _validate(
    app_id: str, batch_size: int, scopes: Sequence[Scope], pause_ratio: float = 0.0
) -> None:
    if not pause_ratio >= 0:  # also refuses NaN
        raise PostgresConfigError(
            f"pause_ratio must be 0 or more (got {pause_ratio}): it is how many times a "
            "batch's own time the purge waits after it."
        )
    if batch_size < 1:
        raise PostgresConfigError(
            f"batch_size must be at least 1 (got {batch_size}): it is the number of "
            "invocations each transaction removes."
        )
    if not app_id:
        raise PostgresConfigError("A purge needs the app id whose invocations it deletes.")
    for scope in scopes:
        if scope.older_than is not None and scope.older_than < timedelta(0):
            # A cutoff in the future would put every invocation in scope, however recent.
            raise PostgresConfigError(f"older_than must not be negative (got {scope.older_than}).")
        if not scope.statuses and not scope.marked:
            raise PostgresConfigError("A purge needs at least one status.")


def purge_invocations(
    settings: DatabaseSettings,
    app_id: str,
    older_than: timedelta | None = None,
    statuses: Iterable[str] | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    on_batch: Callable[[PurgeReport], None] | None = None,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    runner_dead_after: timedelta = DEFAULT_RUNNER_DEAD_AFTER,
    pause_ratio: float = DEFAULT_PAUSE_RATIO,
) -> PurgeReport:
    """Delete one app's invocations by current status and age, in batches, and record it.

    :param settings: the database. Its schema must be at head: a purge never creates
        or migrates it, even with ``auto_migrate``.
    :param app_id: the app whose invocations are purged; no other app is touched.
    :param older_than: only invocations whose current status was recorded at least this
        long ago (server clock). None: any age.
    :param statuses: current statuses in scope, any case. None: pynenc's final statuses
        (success, failed, concurrency_controlled_final). Naming a non-final status
        such as ``running`` also deletes invocations a runner may still be working on.
    :param batch_size: invocations per transaction.
    :param dry_run: count what would be deleted, delete nothing (each batch runs and is
        rolled back), and record nothing.
    :param on_batch: called with the running report after each batch.
    :param lock_timeout_ms: longest a batch waits for a row lock before it is rolled back.
    :param runner_dead_after: the cluster's ``runner_considered_dead_after_minutes``:
        heartbeats of runners dead for longer than ``older_than`` after that go.
    :param pause_ratio: after each batch, wait this many times the batch's time
        (:data:`DEFAULT_PAUSE_RATIO`); 0 runs the batches back to back.
    :return: the counts per table; the run is recorded in ``pynenc_retention_run``.
    """
    scope = parse_statuses(statuses) if statuses is not None else final_statuses()
    scopes = [Scope(scope, older_than)]
    _validate(app_id, batch_size, scopes, pause_ratio)
    age = f" older than {render_duration(older_than)}" if older_than is not None else ""
    policy = f"command: {', '.join(scope)}{age}"
    return run_purge(
        settings,
        app_id,
        scopes,
        policy=policy,
        batch_size=batch_size,
        dry_run=dry_run,
        on_batch=on_batch,
        lock_timeout_ms=lock_timeout_ms,
        runner_dead_after=runner_dead_after,
        pause_ratio=pause_ratio,
    )


def run_purge(
    settings: DatabaseSettings,
    app_id: str,
    scopes: Sequence[Scope],
    *,
    policy: str,
    batch_size: int = 1000,
    dry_run: bool = False,
    on_batch: Callable[[PurgeReport], None] | None = None,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    runner_dead_after: timedelta = DEFAULT_RUNNER_DEAD_AFTER,
    run_id: str | None = None,
    pause_ratio: float = DEFAULT_PAUSE_RATIO,
) -> PurgeReport:
    """Purge every scope in turn, then the heartbeats and runner contexts left unused.

    :param scopes: the passes (statuses and their window).
    :param policy: how the record describes the run.
    :param run_id: a run already recorded (a scheduled run, claimed with its record);
        None records a new ``command`` run (nothing is recorded in a dry run).
    :param pause_ratio: after each batch, wait this many times the batch's time.
    :return: the report; the record has its counts and outcome.
    """
    _validate(app_id, batch_size, scopes, pause_ratio)
    database = get_database(settings.without_schema_changes())
    sql = retention_sql.statements(settings.schema)
    now = _server_now(database, sql)
    shortest = min((s.older_than if s.older_than is not None else timedelta(0)) for s in scopes)
    report = PurgeReport(
        app_id=app_id,
        cutoff=now - shortest if any(s.older_than is not None for s in scopes) else None,
        statuses=tuple(dict.fromkeys(status for s in scopes for status in s.statuses)),
        dry_run=dry_run,
        policy=policy,
    )
    if not dry_run:
        if run_id is None:
            run_id = uuid.uuid4().hex
            database.run(
                lambda conn: conn.execute(
                    sql.record_command, {"app_id": app_id, "run_id": run_id, "policy": policy}
                )
            )
        report.run_id = run_id
    try:
        _purge_scopes(
            database, sql, report, scopes, now, batch_size, lock_timeout_ms, on_batch, pause_ratio
        )
        _sweep(database, sql, report, now - shortest, runner_dead_after, shortest)
    except Exception as exc:
        _record(database, sql, report, outcome="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    _record(
        database,
        sql,
        report,
        outcome=report.outcome,
        error="; ".join(report.errors[:3]) or None,
    )
    return report


def mark_failed(settings: DatabaseSettings, app_id: str, run_id: str, error: str) -> None:
    """Record a run that stopped before it could record its own end (best effort)."""
    sql = retention_sql.statements(settings.schema)
    params = {"app_id": app_id, "run_id": run_id, "error": error}
    database = get_database(settings.without_schema_changes())
    database.run(lambda conn: conn.execute(sql.record_failure, params))


def _server_now(database: Database, sql: RetentionSql) -> datetime:
    def op(conn: Conn) -> datetime:
        row = conn.execute(sql.server_now).fetchone()
        assert row is not None
        moment: datetime = row[0]
        return moment

    return database.run(op)


def _record_params(report: PurgeReport) -> dict[str, Any]:
    return {
        "app_id": report.app_id,
        "run_id": report.run_id,
        "invocations": report.invocations,
        "batches": report.batches,
        "batches_blocked": report.batches_blocked,
        "rows_removed": json.dumps(report.rows),
    }


def _record(
    database: Database, sql: RetentionSql, report: PurgeReport, outcome: str, error: str | None
) -> None:
    if report.run_id is None:
        return
    params = {**_record_params(report), "outcome": outcome, "error": error}
    trim = {"app_id": report.app_id, "keep": RUN_RECORDS_KEPT - 1}

    def op(conn: Conn) -> None:
        conn.execute(sql.record_end, params)
        conn.execute(sql.trim_records, trim)

    database.run(op, transaction=True)


def _purge_scopes(
    database: Database,
    sql: RetentionSql,
    report: PurgeReport,
    scopes: Sequence[Scope],
    now: datetime,
    batch_size: int,
    lock_timeout_ms: int,
    on_batch: Callable[[PurgeReport], None] | None,
    pause_ratio: float = 0.0,
) -> None:
    seen_memberships: set[tuple[str, str]] = set()
    seen_keys: set[str] = set()
    # In a dry run nothing goes, so the orchestrator's pass would find the history
    # pass's invocations again: each is counted once. Blocked ones are not retried.
    seen_ids: set[str] = set()

    def delete(conn: Conn, ids: list[str], cutoff: datetime) -> dict[str, int]:
        # Savepoint: a dry run rolls the batch back and keeps the counts.
        with conn.transaction():
            counts, memberships, keys = purge_batch(
                conn,
                sql,
                report.app_id,
                ids,
                cutoff - CLIENT_DATA_REFRESH,
                lock_timeout_ms,
                memberships=report.dry_run,
            )
            if report.dry_run:
                # A membership row or a stored value can fall in two batches (rolled
                # back in the first): count each once.
                counts[t.WORKFLOW_SUB_INVOCATION] = len(memberships - seen_memberships)
                counts[t.CLIENT_DATA] = len(keys - seen_keys)
                seen_memberships.update(memberships)
                seen_keys.update(keys)
                raise psycopg.Rollback()
            if report.run_id is not None:
                progress = _record_params(report)
                progress["invocations"] += len(ids)
                progress["batches"] += 1
                merged = {k: report.rows[k] + counts.get(k, 0) for k in report.rows}
                progress["rows_removed"] = json.dumps(merged)
                conn.execute(sql.record_progress, progress)
        return counts

    def batch(ids: list[str], cutoff: datetime) -> Callable[[Conn], dict[str, int]]:
        return lambda conn: delete(conn, ids, cutoff)

    # The time of a batch runs from the end of the last pause: its candidates, its
    # deletes and its commit.
    busy_since = time.monotonic()

    def pause() -> None:
        nonlocal busy_since
        if pause_ratio > 0:
            time.sleep(pause_ratio * (time.monotonic() - busy_since))
        busy_since = time.monotonic()

    for scope in scopes:
        cutoff = now - (scope.older_than or timedelta(0))
        sources = (
            (_marked_candidates,)
            if scope.marked
            else (_history_candidates, _orchestrator_candidates)
        )
        for candidates in sources:
            for found in candidates(database, sql, report.app_id, scope, cutoff, batch_size):
                ids = [i for i in found if i not in seen_ids]
                if not ids:
                    continue
                if report.dry_run:
                    seen_ids.update(ids)
                try:
                    counts = database.run(batch(ids, cutoff), transaction=True)
                except Exception as exc:
                    if not _is_lock_timeout(exc):
                        raise
                    # Not tried again in this run (the orchestrator's pass would find
                    # them again); the next run does.
                    seen_ids.update(ids)
                    report.batches_blocked += 1
                    report.errors.append(
                        f"lock timeout after {lock_timeout_ms} ms on a batch of {len(ids)} "
                        "invocations"
                    )
                    pause()
                    continue
                # Counted once committed, so a retried batch is not counted twice.
                report.batches += 1
                report.invocations += len(ids)
                for table, count in counts.items():
                    report.rows[table] += count
                if on_batch is not None:
                    on_batch(report)
                pause()


def _history_candidates(
    database: Database,
    sql: RetentionSql,
    app_id: str,
    scope: Scope,
    cutoff: datetime,
    batch_size: int,
) -> Iterable[list[str]]:
    """Batches of invocations whose latest history row is in scope, in keyset order."""
    cursor: tuple[datetime, str, str] = (_START, "", "")
    while True:
        params: dict[str, Any] = {
            "app_id": app_id,
            "cutoff": cutoff,
            "statuses": list(scope.statuses),
            "after_at": cursor[0],
            "after_id": cursor[1],
            "after_status": cursor[2],
            "limit": batch_size,
        }
        rows = database.fetchall(sql.history_candidates, params)
        if not rows:
            return
        last = rows[-1]
        cursor = (last[0], last[1], last[2])
        yield [row[1] for row in rows if row[3]]


def _orchestrator_candidates(
    database: Database,
    sql: RetentionSql,
    app_id: str,
    scope: Scope,
    cutoff: datetime,
    batch_size: int,
) -> Iterable[list[str]]:
    """Batches of invocations the orchestrator holds in a status in scope, by age."""
    for status in scope.statuses:
        params = {"app_id": app_id, "status": status, "cutoff": cutoff}
        yield from _by_age(database, sql.orchestrator_candidates, params, batch_size)


def _marked_candidates(
    database: Database,
    sql: RetentionSql,
    app_id: str,
    scope: Scope,
    cutoff: datetime,
    batch_size: int,
) -> Iterable[list[str]]:
    """Batches of invocations set up for auto purge before the cutoff."""
    params = {"app_id": app_id, "cutoff": cutoff}
    yield from _by_age(database, sql.marked_candidates, params, batch_size)


def _by_age(
    database: Database, statement: str, params: dict[str, Any], batch_size: int
) -> Iterable[list[str]]:
    """Ids in batches from ``statement``, which reads ``(time, invocation_id)`` in that
    order after the keyset ``(after_at, after_id)``: each batch starts where the last
    stopped."""
    cursor: tuple[datetime, str] = (_START, "")
    while True:
        page = {**params, "after_at": cursor[0], "after_id": cursor[1], "limit": batch_size}
        rows = database.fetchall(statement, page)
        if not rows:
            return
        cursor = (rows[-1][0], rows[-1][1])
        yield [row[1] for row in rows]


def _sweep(
    database: Database,
    sql: RetentionSql,
    report: PurgeReport,
    cutoff: datetime,
    runner_dead_after: timedelta,
    window: timedelta,
) -> None:
    """Heartbeats of runners dead for longer than the window, then unused contexts."""
    dead_seconds = (runner_dead_after + window).total_seconds()
    # A context younger than the runners' dead-after time may be about to be named by
    # the first history row of its runner.
    context_cutoff = min(cutoff, cutoff + window - runner_dead_after)

    def op(conn: Conn) -> tuple[int, int]:
        with conn.transaction():
            beats = conn.execute(
                sql.dead_heartbeats, {"app_id": report.app_id, "seconds": dead_seconds}
            ).rowcount
            contexts = conn.execute(
                sql.runner_contexts, {"app_id": report.app_id, "cutoff": context_cutoff}
            ).rowcount
            if report.dry_run:
                raise psycopg.Rollback()
        return beats, contexts

    beats, contexts = database.run(op, transaction=True)
    report.rows[t.RUNNER_HEARTBEAT] += beats
    report.rows[t.RUNNER_CONTEXT] += contexts


def purge_app(database: Database, schema: str, app_id: str, tables: Sequence[str]) -> None:
    """Delete every row of ``app_id`` in ``tables``, and nothing else, in one transaction.

    ``app.purge()`` calls each component's ``purge()``, and each passes its own tables,
    so that the app leaves nothing behind in any of them.
    """
    statements = [f"DELETE FROM {qualified(schema, table)} WHERE app_id = %s" for table in tables]

    def op(conn: Conn) -> None:
        for statement in statements:
            conn.execute(statement, (app_id,))

    database.run(op, transaction=True)
