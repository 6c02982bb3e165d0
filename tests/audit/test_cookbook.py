"""Every query of docs/audit.md, run against a database filled by real pynenc runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.audit.conftest import APP_A, APP_B, Seed
from tests.audit.cookbook import cookbook, render, variables

TASKS = "tests.audit.tasks."
CORE_TASKS = "pynenc.core_tasks.%"
Rows = list[tuple[Any, ...]]
Counts = dict[str, tuple[int, int]]


def run(conn: psycopg.Connection, name: str, values: dict[str, str]) -> Rows:
    query = cookbook()[name]
    assert variables(query) <= set(values), f"{name} needs {variables(query) - set(values)}"
    return conn.execute(render(query, values, conn)).fetchall()


def core_task_history(
    conn: psycopg.Connection, app_id: str, runner_id: str | None = None
) -> Counts:
    """status -> (history rows, invocations) written for pynenc's own core tasks.

    pynenc's runners schedule recovery tasks of their own (``pynenc.core_tasks``);
    whether and how often they ran during the seed depends on the clock, so the exact
    expectations below add exactly what the database holds for them.
    """
    orphans = conn.execute(
        "SELECT count(*) FROM pynenc_invocation_history h WHERE NOT EXISTS (SELECT 1 "
        "FROM pynenc_invocation i WHERE i.app_id = h.app_id AND i.invocation_id = h.invocation_id)"
    ).fetchone()
    assert orphans == (0,), "history rows without an invocation: the split below is not exact"
    rows = conn.execute(
        "SELECT h.status, count(*), count(DISTINCT h.invocation_id) "
        "FROM pynenc_invocation_history h JOIN pynenc_invocation i USING (app_id, invocation_id) "
        "WHERE h.app_id = %s AND h.runner_id = coalesce(%s, h.runner_id) AND i.task_id LIKE %s "
        "GROUP BY h.status",
        (app_id, runner_id, CORE_TASKS),
    ).fetchall()
    return {status: (changes, invocations) for status, changes, invocations in rows}


def plus(ours: Counts, core: Counts) -> Counts:
    total: Counts = {}
    for status in ours.keys() | core.keys():
        (a_rows, a_invocations), (b_rows, b_invocations) = (
            ours.get(status, (0, 0)),
            core.get(status, (0, 0)),
        )
        total[status] = (a_rows + b_rows, a_invocations + b_invocations)
    return total


def check_failures_last_hour(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "failures_last_hour", {"app_id": APP_A})
    assert [row[:3] for row in rows] == [
        (TASKS + "divide", "ZeroDivisionError", 2),
        (TASKS + "parse", "ValueError", 1),
    ]
    # app B's failure stays out of app A's report, and shows in its own
    rows_b = run(conn, "failures_last_hour", {"app_id": APP_B})
    assert [row[:3] for row in rows_b] == [(TASKS + "divide", "ZeroDivisionError", 1)]


def check_invocation_timeline(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "invocation_timeline", {"app_id": APP_A, "invocation_id": seed.ids["flaky"]})
    assert [(row[0], row[1]) for row in rows] == list(
        enumerate(
            ["registered", "pending", "running", "retry", "pending", "running", "success"],
            start=1,
        )
    )
    assert rows[0][3] is None
    assert all(row[3] >= timedelta(0) for row in rows[1:])
    assert rows[0][4] == "ExternalRunner"
    assert {row[4] for row in rows[1:]} == {"ThreadRunner"}
    assert {row[7] for row in rows[1:]} == {seed.runner_a}


def check_retried_invocations(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "retried_invocations", {"app_id": APP_A})
    assert [row[:4] for row in rows] == [(seed.ids["flaky"], TASKS + "flaky", 1, "success")]
    assert run(conn, "retried_invocations", {"app_id": APP_B}) == []


def check_slowest_tasks(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "slowest_tasks", {"app_id": APP_A})
    slowest = [row[3] for row in rows]
    assert slowest == sorted(slowest, reverse=True)
    by_task = {row[0]: row for row in rows}
    # slow(0.3) sleeps 0.3 s between RUNNING and SUCCESS
    assert by_task[TASKS + "slow"][1] == 1
    assert by_task[TASKS + "slow"][3] >= timedelta(seconds=0.3)
    assert by_task[TASKS + "add"][1] == 5  # two direct calls, three workflow steps
    assert by_task[TASKS + "divide"][1] == 2  # failed runs count too
    assert by_task[TASKS + "flaky"][1] == 1  # only the run that ended it
    assert TASKS + "stuck" not in by_task  # never finished


def check_stuck_running(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "stuck_running", {"app_id": APP_A, "minutes": "0"})
    by_id = {row[0]: row for row in rows}
    assert seed.ids["stuck"] in by_id
    stuck = by_id[seed.ids["stuck"]]
    assert stuck[1] == TASKS + "stuck"
    assert stuck[3] > timedelta(0)
    assert stuck[4] not in (None, seed.runner_a)  # owned by the killed worker's runner
    assert all(seed.ids[name] not in by_id for name in ("slow", "flaky", "pipeline"))
    assert run(conn, "stuck_running", {"app_id": APP_A, "minutes": "60"}) == []
    assert run(conn, "stuck_running", {"app_id": APP_B, "minutes": "0"}) == []


def check_workflow_with_sub_invocations(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(
        conn,
        "workflow_with_sub_invocations",
        {"app_id": APP_A, "workflow_id": seed.ids["pipeline"]},
    )
    assert rows[0][:4] == ("workflow", seed.ids["pipeline"], TASKS + "pipeline", "success")
    subs = rows[1:]
    assert [(row[0], row[2], row[3]) for row in subs] == [
        ("sub-invocation", TASKS + "add", "success")
    ] * 3
    children = conn.execute(
        "SELECT invocation_id FROM pynenc_invocation WHERE app_id = %s AND workflow_id = %s "
        "AND invocation_id <> workflow_id",
        (APP_A, seed.ids["pipeline"]),
    ).fetchall()
    assert {row[1] for row in subs} == {row[0] for row in children}
    assert [row[4] for row in subs] == sorted(row[4] for row in subs)


def check_runner_activity(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "runner_activity", {"app_id": APP_A, "runner_id": seed.runner_a})
    # 8 top-level invocations, 3 workflow steps, the order and the shipping it triggered
    # ran on this runner; flaky ran twice (pending and running twice, one retry); the
    # workflow registered its 3 steps.
    ours = {
        "registered": (3, 3),
        "pending": (14, 13),
        "running": (14, 13),
        "retry": (1, 1),
        "success": (10, 10),
        "failed": (3, 3),
    }
    expected = plus(ours, core_task_history(conn, APP_A, seed.runner_a))
    assert {row[0]: (row[1], row[2]) for row in rows} == expected
    assert [row[1] for row in rows] == sorted((row[1] for row in rows), reverse=True)
    assert "running" not in {
        row[0]
        for row in run(conn, "runner_activity", {"app_id": APP_B, "runner_id": seed.runner_a})
    }


def check_runners_of_app(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "runners_of_app", {"app_id": APP_A})
    classes = sorted(row[1] for row in rows)
    # the seeding process and the killed worker each had an external and a thread runner
    assert classes == ["ExternalRunner", "ExternalRunner", "ThreadRunner", "ThreadRunner"]
    by_id = {row[0]: row for row in rows}
    # 14 runs (pending, running), 10 successes, 3 failures, 1 retry, 3 workflow
    # registrations: 45 changes, plus those of pynenc's own core tasks.
    core = core_task_history(conn, APP_A, seed.runner_a)
    assert by_id[seed.runner_a][5] == 45 + sum(changes for changes, _ in core.values())
    rows_b = run(conn, "runners_of_app", {"app_id": APP_B})
    assert sorted(row[1] for row in rows_b) == ["ExternalRunner", "ThreadRunner"]
    assert seed.runner_a not in {row[0] for row in rows_b}


def check_volume_per_app_and_day(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "volume_per_app_and_day", {})
    totals: dict[str, list[int]] = {}
    for app_id, _day, registered, succeeded, failed in rows:
        total = totals.setdefault(app_id, [0, 0, 0])
        total[0] += registered
        total[1] += succeeded
        total[2] += failed
    assert set(totals) == {APP_A, APP_B}
    # app A: 9 calls, 3 workflow steps, a triggered task and the stuck task registered;
    # 5 adds, flaky, slow, the workflow, the order and the triggered shipping succeeded;
    # app B: 2 calls, 1 success, 1 failure.
    for app_id, ours in ((APP_A, (14, 10, 3)), (APP_B, (2, 1, 1))):
        core = core_task_history(conn, app_id)
        assert totals[app_id] == [
            ours[0] + core.get("registered", (0, 0))[0],
            ours[1] + core.get("success", (0, 0))[0],
            ours[2] + core.get("failed", (0, 0))[0],
        ], app_id


def check_status_counts(conn: psycopg.Connection, seed: Seed) -> None:
    counts = dict(run(conn, "status_counts", {"app_id": APP_A}))
    ours = conn.execute(
        "SELECT status, count(*) FROM pynenc_invocation_status WHERE app_id = %s "
        "AND task_id LIKE 'tests.audit.tasks.%%' GROUP BY status ORDER BY status",
        (APP_A,),
    ).fetchall()
    assert ours == [("failed", 3), ("running", 1), ("success", 10)]
    core = dict(
        conn.execute(
            "SELECT status, count(*) FROM pynenc_invocation_status WHERE app_id = %s "
            "AND task_id LIKE %s GROUP BY status",
            (APP_A, CORE_TASKS),
        ).fetchall()
    )
    assert counts == {
        status: dict(ours).get(status, 0) + core.get(status, 0)
        for status in dict(ours).keys() | core.keys()
    }


def check_call_tree(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "call_tree", {"app_id": APP_A, "invocation_id": seed.ids["pipeline"]})
    assert rows[0][:4] == (0, seed.ids["pipeline"], TASKS + "pipeline", "success")
    assert [(row[0], row[2], row[3]) for row in rows[1:]] == [(1, TASKS + "add", "success")] * 3
    leaf = run(conn, "call_tree", {"app_id": APP_A, "invocation_id": seed.ids["divide_zero"]})
    assert leaf == [(0, seed.ids["divide_zero"], TASKS + "divide", "failed", "ZeroDivisionError")]


def check_recent_trigger_runs(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "recent_trigger_runs", {"app_id": APP_A})
    shipped = [row for row in rows if row[1] == TASKS + "ship_order"]
    assert len(shipped) == 1, rows
    (
        _executed_at,
        _task,
        invocation_id,
        status,
        cause,
        event_code,
        event_id,
        event_at,
        emitted_by_task,
        emitted_by_invocation,
        payload,
        source_invocation,
    ) = shipped[0]
    assert (invocation_id, status, cause) == (seed.ids["ship_order"], "success", "EventContext")
    assert (event_code, event_id) == ("order.placed", seed.ids["order_event"])
    assert (emitted_by_task, emitted_by_invocation) == (
        TASKS + "place_order",
        seed.ids["place_order"],
    )
    assert event_at is not None and source_invocation is None
    assert "A-1" in json.dumps(payload)
    # The event nobody listened to caused no run; the triggered call got the order id.
    assert seed.ids["ping_event"] not in {row[6] for row in rows}
    arguments = conn.execute(
        "SELECT serialized_arguments FROM pynenc_invocation "
        "WHERE app_id = %s AND invocation_id = %s",
        (APP_A, invocation_id),
    ).fetchone()
    assert arguments is not None and "A-1" in arguments[0]
    assert all(
        row[1] != TASKS + "ship_order"
        for row in run(conn, "recent_trigger_runs", {"app_id": APP_B})
    )


def check_orchestrator_status_counts(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "orchestrator_status_counts", {"app_id": APP_A})
    counts = {row[0]: row[1] for row in rows}
    assert counts["failed"] == 3
    assert counts["running"] == 1  # the killed worker's task
    assert counts["success"] >= 8
    assert all(row[2] >= timedelta(0) for row in rows)
    # The status the orchestrator enforces is the one the history ends with.
    disagreeing = conn.execute(
        "SELECT o.invocation_id, o.status, s.status FROM pynenc_orchestrator_invocation o "
        "JOIN pynenc_invocation_status s USING (app_id, invocation_id) "
        "WHERE o.app_id = %s AND o.status <> s.status",
        (APP_A,),
    ).fetchall()
    assert disagreeing == []
    # app B: one failure and its successes (pynenc's own tasks may add other statuses)
    counts_b = {
        row[0]: row[1] for row in run(conn, "orchestrator_status_counts", {"app_id": APP_B})
    }
    assert counts_b["failed"] == 1 and counts_b["success"] >= 1 and "running" not in counts_b


def _killed_worker_runner(conn: psycopg.Connection, seed: Seed) -> str:
    """The runner of the killed worker: the owner of ``stuck``, left RUNNING."""
    row = conn.execute(
        "SELECT status_owner_id FROM pynenc_orchestrator_invocation "
        "WHERE app_id = %s AND invocation_id = %s",
        (APP_A, seed.ids["stuck"]),
    ).fetchone()
    assert row is not None and row[0] not in (None, seed.runner_a)
    return str(row[0])


def check_live_runners(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "live_runners", {"app_id": APP_A, "minutes": "10"})
    by_id = {row[0]: row for row in rows}
    killed = _killed_worker_runner(conn, seed)
    assert {seed.runner_a, killed} <= set(by_id)
    assert all(row[4] for row in rows)  # seeded minutes ago: alive by pynenc's default
    assert by_id[seed.runner_a][5:7] == (0, 0)
    assert [row[0] for row in rows if row[7]] == [killed]  # the one holder
    assert [(row[0], row[6]) for row in rows if row[6]] == [(killed, 1)]  # the stuck task
    assert not any(row[4] for row in run(conn, "live_runners", {"app_id": APP_A, "minutes": "0"}))
    assert killed not in {
        row[0] for row in run(conn, "live_runners", {"app_id": APP_B, "minutes": "10"})
    }


def check_atomic_service_holder(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "atomic_service_holder", {"app_id": APP_A})
    assert len(rows) == 1
    runner_id, run_id, _start, held_for, heartbeat_age = rows[0]
    assert runner_id == _killed_worker_runner(conn, seed)
    assert run_id and held_for > timedelta(0) and heartbeat_age > timedelta(0)
    assert run(conn, "atomic_service_holder", {"app_id": APP_B}) == []


def check_recoverable_running(conn: psycopg.Connection, seed: Seed) -> None:
    rows = run(conn, "recoverable_running", {"app_id": APP_A, "minutes": "0"})
    assert [row[:2] for row in rows] == [(seed.ids["stuck"], TASKS + "stuck")]
    assert rows[0][3] > timedelta(0) and rows[0][4] > timedelta(0)
    # Its worker was seen alive minutes ago: not recoverable yet by pynenc's default.
    assert run(conn, "recoverable_running", {"app_id": APP_A, "minutes": "10"}) == []
    assert run(conn, "recoverable_running", {"app_id": APP_B, "minutes": "0"}) == []


CHECKS: dict[str, Callable[[psycopg.Connection, Seed], None]] = {
    "failures_last_hour": check_failures_last_hour,
    "invocation_timeline": check_invocation_timeline,
    "retried_invocations": check_retried_invocations,
    "slowest_tasks": check_slowest_tasks,
    "stuck_running": check_stuck_running,
    "workflow_with_sub_invocations": check_workflow_with_sub_invocations,
    "runner_activity": check_runner_activity,
    "runners_of_app": check_runners_of_app,
    "volume_per_app_and_day": check_volume_per_app_and_day,
    "status_counts": check_status_counts,
    "call_tree": check_call_tree,
    "recent_trigger_runs": check_recent_trigger_runs,
    "orchestrator_status_counts": check_orchestrator_status_counts,
    "live_runners": check_live_runners,
    "atomic_service_holder": check_atomic_service_holder,
    "recoverable_running": check_recoverable_running,
}


def test_every_documented_query_has_a_check() -> None:
    assert list(cookbook()) == list(CHECKS)


@pytest.mark.parametrize("name", list(CHECKS))
def test_cookbook_query(name: str, audit_seed: Seed, seeded_url: str) -> None:
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        CHECKS[name](conn, audit_seed)
