"""Retention deletes exactly the requested scope, in committed batches, and reports it."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pynenc_postgres.cli import main
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.models import STATE_TABLES
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import (
    PURGED_TABLES,
    PurgeReport,
    parse_duration,
    purge_invocations,
)
from tests.audit.conftest import APP_A, APP_B, Seed, all_rows

FINAL = {"success", "failed", "concurrency_controlled_final"}
Rows = dict[str, set[tuple[Any, ...]]]


def current_statuses(rows: Rows, app_id: str) -> dict[str, tuple[Any, str]]:
    """invocation id -> (recorded_at, status) of its latest history row, computed in Python.

    Latest in write order: by recorded_at, then write_order (the table's last column),
    then status, as the views and retention order them.
    """
    latest: dict[str, tuple[Any, int, str]] = {}
    for row in rows["pynenc_invocation_history"]:
        app, invocation_id, recorded_at, status = row[:4]
        key = (recorded_at, row[-1], status)
        if app == app_id and (invocation_id not in latest or key > latest[invocation_id]):
            latest[invocation_id] = key
    return {i: (at, status) for i, (at, _order, status) in latest.items()}


def rows_of(rows: Rows, app_id: str, ids: set[str]) -> Rows:
    """The rows a purge of ``ids`` must delete, by the documented rules."""
    keyed_by_invocation = (
        "pynenc_invocation",
        "pynenc_invocation_history",
        "pynenc_invocation_result",
        "pynenc_invocation_exception",
    )
    expected: Rows = {table: set() for table in rows}
    for table in keyed_by_invocation:
        expected[table] = {r for r in rows[table] if r[0] == app_id and r[1] in ids}
    expected["pynenc_workflow_sub_invocation"] = {
        r
        for r in rows["pynenc_workflow_sub_invocation"]
        if r[0] == app_id and (r[1] in ids or r[2] in ids)
    }
    for table in ("pynenc_workflow_run", "pynenc_workflow_data"):
        expected[table] = {r for r in rows[table] if r[0] == app_id and r[1] in ids}
    return expected


def assert_deleted_exactly(before: Rows, after: Rows, expected: Rows) -> None:
    for table in before:
        assert after[table] == before[table] - expected[table], table


def counts(expected: Rows) -> dict[str, int]:
    """Rows per state-backend table (the tables this module's comparisons cover)."""
    return {table: len(expected[table]) for table in PURGED_TABLES if table in expected}


def state_rows(report: PurgeReport) -> dict[str, int]:
    return {table: count for table, count in report.rows.items() if table in STATE_TABLES}


def test_default_scope_is_final_invocations_of_one_app(seeded_url: str, audit_seed: Seed) -> None:
    settings = DatabaseSettings(url=seeded_url)
    before = all_rows(seeded_url)
    latest = current_statuses(before, APP_A)
    in_scope = {i for i, (_, status) in latest.items() if status in FINAL}
    assert audit_seed.ids["stuck"] not in in_scope
    assert {audit_seed.ids[n] for n in ("add", "divide_zero", "flaky", "pipeline")} <= in_scope
    expected = rows_of(before, APP_A, in_scope)

    dry = purge_invocations(settings, APP_A, dry_run=True)
    assert all_rows(seeded_url) == before  # a dry run deletes nothing
    assert dry.invocations == len(in_scope)
    assert state_rows(dry) == counts(expected)

    report = purge_invocations(settings, APP_A)
    after = all_rows(seeded_url)
    assert_deleted_exactly(before, after, expected)
    assert report.invocations == len(in_scope)
    assert state_rows(report) == counts(expected) == state_rows(dry)
    assert report.rows["pynenc_workflow_run"] == 1
    assert report.rows["pynenc_workflow_data"] == 1
    assert report.rows["pynenc_workflow_sub_invocation"] == 3
    # Untouched: app B, app A's unfinished invocations, runner contexts and app info.
    assert {r for r in after["pynenc_invocation"] if r[0] == APP_B} == {
        r for r in before["pynenc_invocation"] if r[0] == APP_B
    }
    assert audit_seed.ids["stuck"] in {r[1] for r in after["pynenc_invocation"]}
    assert after["pynenc_runner_context"] == before["pynenc_runner_context"]
    assert after["pynenc_app_info"] == before["pynenc_app_info"]

    again = purge_invocations(settings, APP_A)
    assert (again.invocations, again.batches, again.total_rows) == (0, 0, 0)


def test_status_filter_and_batches_each_commit(seeded_url: str, audit_seed: Seed) -> None:
    settings = DatabaseSettings(url=seeded_url)
    before = all_rows(seeded_url)
    failed = {i for i, (_, s) in current_statuses(before, APP_A).items() if s == "failed"}
    assert len(failed) == 3
    committed: list[int] = []

    def remaining_failed() -> int:
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pynenc_invocation WHERE app_id = %s "
                "AND invocation_id = ANY(%s)",
                (APP_A, list(failed)),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def on_batch(report: PurgeReport) -> None:
        # Seen from another connection: the batch is already committed.
        committed.append(remaining_failed())

    report = purge_invocations(
        settings, APP_A, statuses=["FAILED"], batch_size=2, on_batch=on_batch
    )
    assert report.batches == math.ceil(3 / 2)
    assert committed == [1, 0]
    assert report.statuses == ("failed",)
    assert_deleted_exactly(before, all_rows(seeded_url), rows_of(before, APP_A, failed))


def test_pause_ratio_waits_after_each_batch(seeded_url: str, audit_seed: Seed) -> None:
    settings = DatabaseSettings(url=seeded_url)
    seen: list[float] = []
    held = 0.2

    def on_batch(report: PurgeReport) -> None:
        seen.append(time.monotonic())
        # Counted in the batch's own time: the pause after it is at least twice this.
        time.sleep(held)

    report = purge_invocations(
        settings, APP_A, statuses=["failed"], batch_size=2, on_batch=on_batch, pause_ratio=2.0
    )
    assert report.batches == 2
    assert seen[1] - seen[0] >= held * (1 + 2.0)
    with pytest.raises(PostgresConfigError, match="pause_ratio must be 0 or more"):
        purge_invocations(settings, APP_A, pause_ratio=-1.0)


def test_older_than_uses_the_age_of_the_final_status(seeded_url: str, audit_seed: Seed) -> None:
    settings = DatabaseSettings(url=seeded_url)
    aged = {audit_seed.ids[n] for n in ("add", "divide_zero", "pipeline")}
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        # Make three finished invocations 40 days old, as if they ran back then.
        conn.execute(
            "UPDATE pynenc_invocation_history SET recorded_at = recorded_at - interval '40 days' "
            "WHERE app_id = %s AND invocation_id = ANY(%s)",
            (APP_A, list(aged)),
        )
    before = all_rows(seeded_url)
    assert purge_invocations(settings, APP_A, older_than=timedelta(days=41)).invocations == 0
    report = purge_invocations(settings, APP_A, older_than=timedelta(days=30), batch_size=1)
    assert (report.invocations, report.batches) == (3, 3)
    assert report.cutoff is not None
    expected = rows_of(before, APP_A, aged)
    assert_deleted_exactly(before, all_rows(seeded_url), expected)
    # The workflow went with its run, data and membership list; its steps (recent) stay.
    assert report.rows["pynenc_workflow_run"] == 1
    assert report.rows["pynenc_workflow_sub_invocation"] == 3
    steps = {r[1] for r in before["pynenc_invocation"] if r[6] == audit_seed.ids["pipeline"]}
    assert len(steps - aged) == 3
    assert steps - aged <= {r[1] for r in all_rows(seeded_url)["pynenc_invocation"]}


def test_an_invocation_whose_status_moved_on_is_not_in_scope(
    seeded_url: str, audit_seed: Seed
) -> None:
    # flaky passed through RETRY (and RUNNING twice) before it succeeded; only its
    # current status counts. Which other invocations sit in retry or pending at the end
    # of the real runs depends on timing, so the expectation is read from the history.
    settings = DatabaseSettings(url=seeded_url)
    latest = current_statuses(all_rows(seeded_url), APP_A)
    flaky = audit_seed.ids["flaky"]
    flaky_history = {
        row[3] for row in all_rows(seeded_url)["pynenc_invocation_history"] if row[1] == flaky
    }
    assert "retry" in flaky_history and latest[flaky][1] == "success"
    in_retry_or_pending = {i for i, (_, status) in latest.items() if status in ("retry", "pending")}
    report = purge_invocations(settings, APP_A, statuses=["retry", "pending"], dry_run=True)
    assert report.invocations == len(in_retry_or_pending)
    running = {i for i, (_, status) in latest.items() if status == "running"}
    assert audit_seed.ids["stuck"] in running
    stuck = purge_invocations(settings, APP_A, statuses=["running"])
    assert stuck.invocations == len(running)
    remaining = {r[1] for r in all_rows(seeded_url)["pynenc_invocation"]}
    assert audit_seed.ids["stuck"] not in remaining
    assert audit_seed.ids["flaky"] in remaining


def test_cli_reports_counts_and_dry_run(
    seeded_url: str, audit_seed: Seed, capsys: pytest.CaptureFixture[str]
) -> None:
    before = all_rows(seeded_url)
    args = [
        "purge",
        "--url",
        seeded_url,
        "--app-id",
        APP_A,
        "--status",
        "failed",
        "--batch-size",
        "2",
    ]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "app audit-a: would delete 3 invocations with status failed in 2 batches" in out
    assert "pynenc_invocation_exception" in out
    lines = {
        line.split()[0]: line.split()[-1] for line in out.splitlines()[1:] if line.startswith("  ")
    }
    assert lines["pynenc_invocation"] == "3"
    assert lines["pynenc_invocation_exception"] == "3"
    assert lines["pynenc_invocation_history"] == "12"
    assert lines["pynenc_invocation_result"] == "0"
    assert out.rstrip().endswith("dry run: nothing was deleted")
    assert all_rows(seeded_url) == before

    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("app audit-a: deleted 3 invocations with status failed in 2 batches")
    assert "total rows" in out and "dry run" not in out

    assert main([*args, "--status", "SUCCESS", "--older-than", "30d"]) == 0
    assert "deleted 0 invocations with status failed, success older than" in capsys.readouterr().out

    assert main(["purge", "--url", seeded_url, "--app-id", APP_A, "--older-than", "3y"]) == 2
    assert "Cannot read the duration '3y'" in capsys.readouterr().err
    assert main(["purge", "--url", seeded_url, "--app-id", APP_A, "--pause-ratio", "-1"]) == 2
    assert "pause_ratio must be 0 or more" in capsys.readouterr().err
    assert main(["purge", "--url", seeded_url, "--app-id", APP_A, "--status", "done"]) == 2
    assert "'done' is not a pynenc invocation status" in capsys.readouterr().err


def test_parse_duration() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12H") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    with pytest.raises(PostgresConfigError):
        parse_duration("30 days")
