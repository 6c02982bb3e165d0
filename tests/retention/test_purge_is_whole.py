"""Every way of purging removes an invocation from every table, and nothing else.

The seeded app ran workflows, concurrency-controlled tasks, client-data arguments and
results, a failure and a trigger; two invocations stay queued, one of them sharing a
stored value with a finished one. Everything is then made two days old, and each way of
purging (the command, the scheduled run, ``app.purge()``) must leave no row pointing at
a removed invocation, keep every row of the unfinished ones, and leave the other app
alone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest

from pynenc_postgres.cli import main
from pynenc_postgres.db import tables as t
from pynenc_postgres.db.models import Base
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import KEPT_TABLES, PURGED_TABLES, purge_invocations
from pynenc_postgres.retention.sql import INVOCATION_ROWS
from tests.retention.conftest import APP, OTHER_APP, Seed, age, build
from tests.retention.orphans import (
    KEPT_REFERENCES,
    count_rows,
    dangling_runner_contexts,
    invocation_ids,
    orphans,
    reference_columns,
    rows_of,
    unreferenced_client_data,
)


def test_every_table_is_either_purged_or_kept_on_purpose() -> None:
    """A new table must be classified: retention removes its rows, or keeps them."""
    assert set(PURGED_TABLES) | set(KEPT_TABLES) == set(Base.metadata.tables)
    assert not set(PURGED_TABLES) & set(KEPT_TABLES)


def test_the_orphan_check_reads_every_invocation_reference_from_the_models() -> None:
    columns = set(reference_columns())
    # Each table keyed by invocation rows is checked on its key...
    for table, _ in INVOCATION_ROWS:
        assert any(c[0] == table for c in columns), table
    assert (t.ORCHESTRATOR_WAITING, "waited_invocation_id") in columns
    assert (t.WORKFLOW_SUB_INVOCATION, "sub_invocation_id") in columns
    # ...and a kept reference is one the models really have.
    assert set(KEPT_REFERENCES) <= columns


def purge_by_command(url: str) -> None:
    assert main(["purge", "--url", url, "--app-id", APP, "--older-than", "1d"]) == 0


def purge_by_schedule(url: str) -> None:
    app = build(url, retention="1d", retention_interval="1h")
    app.orchestrator.register_runner_heartbeats(["retention-test-runner"], True)
    app.orchestrator.retention.wait(60)
    report = app.orchestrator.retention.last_report
    assert report is not None and report.outcome == "completed"


def purge_by_auto_purge(url: str) -> None:
    """pynenc's auto_purge(): what was set up for it (on reaching a final status)."""
    app = build(url, config={"auto_final_invocation_purge_hours": 24.0})
    app.orchestrator.auto_purge()


WAYS: dict[str, Callable[[str], None]] = {
    "command": purge_by_command,
    "scheduled": purge_by_schedule,
    "auto_purge": purge_by_auto_purge,
}


@pytest.mark.parametrize("way", list(WAYS))
def test_purge_leaves_no_row_pointing_at_a_removed_invocation(
    seeded: str, retention_seed: Seed, way: str
) -> None:
    age(seeded, timedelta(days=2))
    with psycopg.connect(seeded, autocommit=True) as conn:
        # A context whose runner wrote nothing that is left: it goes.
        conn.execute(
            "INSERT INTO pynenc_runner_context (app_id, runner_id, runner_cls, pid, hostname, "
            "thread_id, created_at) VALUES (%s, 'long-gone', 'ThreadRunner', 1, 'h', 1, "
            "now() - interval '3 days')",
            (APP,),
        )
    before = rows_of(seeded, APP)
    other_before = rows_of(seeded, OTHER_APP)
    assert before[t.CLIENT_DATA] and before[t.ORCHESTRATOR_ARGUMENT]
    assert before[t.WORKFLOW_DATA] and before[t.BROKER_MESSAGE]

    dry = purge_invocations(
        DatabaseSettings(url=seeded), APP, older_than=timedelta(days=1), dry_run=True
    )
    assert rows_of(seeded, APP) == before  # a dry run removes nothing, anywhere

    WAYS[way](seeded)

    removed = invocation_ids_of(before) - invocation_ids(seeded, APP)
    assert removed == retention_seed.finished
    assert orphans(seeded, APP, removed) == {}
    after = rows_of(seeded, APP)
    # The unfinished invocations keep every row they had.
    for table, _ in INVOCATION_ROWS:
        kept = {row for row in before[table] if set(row) & retention_seed.unfinished}
        assert kept <= after[table], table
    # Client data: the value a queued invocation shares stays; nothing unnamed is left.
    assert after[t.CLIENT_DATA] and len(after[t.CLIENT_DATA]) < len(before[t.CLIENT_DATA])
    assert unreferenced_client_data(seeded, APP) == set()
    # Runner contexts: none that a row still names went (the runner's stays: its
    # atomic-service executions name it); heartbeats (dead for 2 days) went.
    assert dangling_runner_contexts(seeded, APP) == []
    contexts = {row[1] for row in after[t.RUNNER_CONTEXT]}
    assert contexts == {row[1] for row in before[t.RUNNER_CONTEXT]} - {"long-gone"}
    assert {row[1] for row in after[t.RUNNER_HEARTBEAT]} <= {"retention-test-runner"}
    # Kept on purpose: app info, the counters, trigger history.
    for table in (t.APP_INFO, t.HISTORY_COUNTER, t.TRIGGER_EVENT, t.TRIGGER_RUN):
        assert after[table] == before[table], table
    assert rows_of(seeded, OTHER_APP) == other_before

    # The orchestrator lists only what exists, and the state backend has each of them.
    app = build(seeded)
    listed = set(app.orchestrator.get_invocation_ids_paginated(limit=1000))
    assert listed == retention_seed.unfinished
    for invocation_id in listed:
        assert app.state_backend.get_invocation(invocation_id).invocation_id == invocation_id
    assert app.orchestrator.count_invocations() == len(retention_seed.unfinished)

    # The run is recorded with what it removed.
    with psycopg.connect(seeded, autocommit=True) as conn:
        row = conn.execute(
            "SELECT kind, outcome, invocations, rows_removed FROM pynenc_retention_run "
            "WHERE app_id = %s",
            (APP,),
        ).fetchone()
    assert row is not None
    kind, outcome, invocations, rows_removed = row
    assert (kind, outcome, invocations) == (
        "scheduled" if way == "scheduled" else "command",
        "completed",
        len(removed),
    )
    assert rows_removed[t.INVOCATION] == len(removed)
    assert rows_removed[t.ORCHESTRATOR_INVOCATION] == len(removed)
    # The dry run counted what the run removed, table by table.
    assert dry.invocations == len(removed)
    assert dry.rows == rows_removed


def invocation_ids_of(rows: dict[str, set[tuple[object, ...]]]) -> set[str]:
    return {str(row[1]) for row in rows[t.INVOCATION] | rows[t.ORCHESTRATOR_INVOCATION]}


def test_app_purge_removes_every_row_of_the_app_and_nothing_else(seeded: str) -> None:
    other_before = rows_of(seeded, OTHER_APP)
    app = build(seeded)
    app.orchestrator.register_runner_heartbeats(["retention-test-runner"], True)
    with psycopg.connect(seeded, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pynenc_retention_run (app_id, run_id, kind, policy, outcome) "
            "VALUES (%s, 'r1', 'command', 'test', 'completed')",
            (APP,),
        )

    app.purge()

    assert {table: n for table, n in count_rows(seeded, APP).items() if n} == {}
    assert rows_of(seeded, OTHER_APP) == other_before


def test_a_recent_finished_invocation_stays(seeded: str, retention_seed: Seed) -> None:
    before = invocation_ids(seeded, APP)
    assert main(["purge", "--url", seeded, "--app-id", APP, "--older-than", "1h"]) == 0
    assert invocation_ids(seeded, APP) == before
