"""Behaviour of PostgresTrigger beyond pynenc's own suite, checked in Postgres itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.identifiers.task_id import TaskId
from pynenc.invocation.status import InvocationStatus
from pynenc.trigger.arguments import create_argument_filter
from pynenc.trigger.conditions import (
    CronCondition,
    CronContext,
    EventCondition,
    StatusCondition,
    ValidCondition,
)
from pynenc.trigger.mem_trigger import MemTrigger
from pynenc.trigger.monitoring import EventRecord, TriggerRunParticipant, TriggerRunRecord
from pynenc.trigger.trigger_builder import TriggerBuilder

from pynenc_postgres.db.models import TRIGGER_TABLES
from pynenc_postgres.trigger import PostgresTrigger, postgres_trigger
from pynenc_postgres.trigger.sql import event_markers, events_page, runs_in_timerange, statements

TICK = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def build_app(url: str, app_id: str) -> Pynenc:
    return (
        PynencBuilder()
        .memory()
        .app_id(app_id)
        .postgres_state_backend(url=url)
        .custom_config(trigger_cls="PostgresTrigger")
        .build()
    )


def trigger_of(url: str, app_id: str) -> PostgresTrigger:
    trigger = build_app(url, app_id).trigger
    assert isinstance(trigger, PostgresTrigger)
    return trigger


def rows_per_table(url: str, app_id: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                f"SELECT count(*) FROM {table} WHERE app_id = %s", (app_id,)
            ).fetchone()[0]  # type: ignore[index]
            for table in TRIGGER_TABLES
        }


def fake_task(name: str) -> Any:
    """The one attribute of a task that trigger registration reads."""
    return type("Task", (), {"task_id": TaskId("tests.trigger", name)})()


def fill_every_table(trigger: PostgresTrigger, label: str) -> None:
    """Write at least one row of the trigger's app into every trigger table."""
    task = fake_task(f"task_{label}")
    builder = TriggerBuilder().on_cron("* * * * *").on_status(task, InvocationStatus.SUCCESS)
    trigger.register_task_triggers(task, builder)
    cron = next(c for c in trigger._get_all_conditions() if isinstance(c, CronCondition))
    trigger.record_valid_condition(ValidCondition(cron, CronContext(timestamp=TICK)))
    assert trigger.store_last_cron_execution(cron.condition_id, TICK)
    assert trigger.claim_trigger_run(f"run-{label}")
    trigger.store_event(
        EventRecord(event_id=f"event-{label}", event_code="code", triggered_invocation_ids=["i"])
    )
    trigger.store_trigger_run(
        TriggerRunRecord(
            trigger_run_id=f"run-{label}",
            trigger_id="t",
            task_id_key=task.task_id.key,
            logic_value="and",
            event_ids=[f"event-{label}"],
            executed_at=datetime.now(UTC),
        )
    )


def test_purge_removes_one_app_and_leaves_the_other_untouched(database_url: str) -> None:
    app_a, app_b = build_app(database_url, "trigger-a"), build_app(database_url, "trigger-b")
    fill_every_table(app_a.trigger, "a")
    fill_every_table(app_b.trigger, "b")
    before_b = rows_per_table(database_url, "trigger-b")
    assert all(count > 0 for count in rows_per_table(database_url, "trigger-a").values())
    assert all(count > 0 for count in before_b.values())

    app_a.trigger.purge()

    assert rows_per_table(database_url, "trigger-a") == dict.fromkeys(TRIGGER_TABLES, 0)
    assert rows_per_table(database_url, "trigger-b") == before_b

    fill_every_table(app_a.trigger, "a")
    app_a.purge()  # the whole app: broker, orchestrator, state backend, trigger

    assert rows_per_table(database_url, "trigger-a") == dict.fromkeys(TRIGGER_TABLES, 0)
    assert rows_per_table(database_url, "trigger-b") == before_b


def test_the_builders_postgres_method_leaves_the_trigger_as_chosen(database_url: str) -> None:
    app = PynencBuilder().memory().postgres_state_backend(url=database_url).build()
    assert type(app.trigger) is MemTrigger


def test_a_fresh_process_resolves_the_trigger_by_name_through_the_entry_point(
    database_url: str,
) -> None:
    """Spawned runners build the app from env vars alone and never import us by hand."""
    code = textwrap.dedent(
        """
        from pynenc import Pynenc
        trigger = Pynenc().trigger
        print(type(trigger).__module__, type(trigger).__name__, trigger.list_event_codes())
        """
    )
    env = {
        **os.environ,
        "PYNENC__TRIGGER_CLS": "PostgresTrigger",
        "PYNENC__POSTGRES_URL": database_url,
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout

    assert out.split() == ["pynenc_postgres.trigger.postgres_trigger", "PostgresTrigger", "[]"]


def test_cron_compare_and_set(database_url: str) -> None:
    trigger = trigger_of(database_url, "cron")
    later = TICK + timedelta(minutes=1)

    assert trigger.get_last_cron_execution("c") is None
    assert trigger.store_last_cron_execution("c", TICK, expected_last_execution=later) is False
    assert trigger.get_last_cron_execution("c") is None
    assert trigger.store_last_cron_execution("c", TICK) is True
    # None expects no execution at all: a second first tick loses.
    assert trigger.store_last_cron_execution("c", later) is False
    assert trigger.store_last_cron_execution("c", later, expected_last_execution=later) is False
    assert trigger.store_last_cron_execution("c", later, expected_last_execution=TICK) is True
    assert trigger.get_last_cron_execution("c") == later
    # Naive times are UTC, whatever the session's time zone.
    naive = (later + timedelta(minutes=1)).replace(tzinfo=None)
    assert trigger.store_last_cron_execution("c", naive, expected_last_execution=later)
    assert trigger.get_last_cron_execution("c") == naive.replace(tzinfo=UTC)


def test_a_resent_winning_statement_still_reports_the_win(database_url: str) -> None:
    """The retry loop resends a statement whose commit happened but whose answer was lost."""
    trigger = trigger_of(database_url, "resend")
    sql, app_id = trigger.sql, trigger.app_id
    with psycopg.connect(database_url, autocommit=True) as conn:
        first = (app_id, "c", TICK, "token-1")
        assert conn.execute(sql.first_cron_execution, first).fetchone() == (1,)
        assert conn.execute(sql.first_cron_execution, first).fetchone() == (1,)
        assert (
            conn.execute(sql.first_cron_execution, (app_id, "c", TICK, "other")).fetchone() is None
        )

        later = TICK + timedelta(minutes=1)
        following = (later, "token-2", app_id, "c", TICK, "token-2", later)
        assert conn.execute(sql.next_cron_execution, following).fetchone() == (1,)
        assert conn.execute(sql.next_cron_execution, following).fetchone() == (1,)
        other = (later, "other", app_id, "c", TICK, "other", later)
        assert conn.execute(sql.next_cron_execution, other).fetchone() is None

        claim = (app_id, "run", "token-3", 60)
        assert conn.execute(sql.claim_trigger_run, claim).fetchone() == (1,)
        assert conn.execute(sql.claim_trigger_run, claim).fetchone() == (1,)
        assert conn.execute(sql.claim_trigger_run, (app_id, "run", "other", 60)).fetchone() is None


def test_claim_expiry_is_measured_with_the_server_clock(database_url: str) -> None:
    trigger = trigger_of(database_url, "expiry")
    assert trigger.claim_trigger_run("run", expiration_seconds=2)
    assert not trigger.claim_trigger_run("run")
    with psycopg.connect(database_url, autocommit=True) as conn:
        claimed_at, expires_at = conn.execute(
            "SELECT claimed_at, expires_at FROM pynenc_trigger_run_claim WHERE app_id = 'expiry'"
        ).fetchone()  # type: ignore[misc]
        assert expires_at - claimed_at == timedelta(seconds=2)
        deadline = time.monotonic() + 60
        while conn.execute("SELECT clock_timestamp() < %s", (expires_at,)).fetchone() == (True,):
            assert time.monotonic() < deadline, "the server clock did not reach the expiry"
            assert not trigger.claim_trigger_run("run")
            time.sleep(0.05)
    assert trigger.claim_trigger_run("run")
    assert not trigger.claim_trigger_run("run")


def test_retention_deletes_every_old_row_in_batches(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_trigger, "PURGE_BATCH", 3)
    trigger = trigger_of(database_url, "retention")
    old = datetime.now(UTC) - timedelta(days=30)
    for i in range(10):
        trigger.store_event(EventRecord(event_id=f"old-{i}", event_code="x", timestamp=old))
        trigger.store_trigger_run(
            TriggerRunRecord(
                trigger_run_id=f"old-run-{i}",
                trigger_id="t",
                task_id_key="m.t",
                logic_value="and",
                executed_at=old,
            )
        )
        trigger.store_trigger_run(
            TriggerRunRecord(
                trigger_run_id=f"cascaded-{i}",
                trigger_id="t",
                task_id_key="m.t",
                logic_value="and",
                executed_at=datetime.now(UTC),
                event_ids=[f"old-{i}"],
            )
        )
    trigger.store_event(EventRecord(event_id="new", event_code="x"))

    deleted = trigger.auto_purge_events()

    assert deleted == 30  # ten events, ten old runs, ten runs caused by the old events
    assert [e.event_id for e in trigger.get_events(limit=100)] == ["new"]
    assert trigger.get_trigger_runs_in_timerange(old - timedelta(days=1), datetime.now(UTC)) == []


def test_trigger_runs_keep_their_causes_queryable(database_url: str) -> None:
    trigger = trigger_of(database_url, "causes")
    now = datetime.now(UTC)
    participants = [
        TriggerRunParticipant("EventContext", "c1", "vc1", event_id="e1"),
        TriggerRunParticipant("StatusContext", "c2", "vc2", source_invocation_id="src"),
    ]
    run = TriggerRunRecord(
        trigger_run_id="r",
        trigger_id="t",
        task_id_key="m.t",
        logic_value="and",
        valid_condition_ids=["vc1", "vc2"],
        event_ids=["e1"],
        source_invocation_ids=["src"],
        triggered_invocation_id="made",
        claimed_at=now,
        executed_at=now,
        participants=participants,
        atomic_service_run_id="service-1",
    )
    trigger.store_event(EventRecord(event_id="e1", event_code="code"))
    trigger.store_trigger_run(run)
    trigger.store_trigger_run(run)  # storing again replaces, never duplicates

    for found in (
        trigger.get_trigger_runs_for_event("e1"),
        trigger.get_trigger_runs_sourced_by_invocation("src"),
        trigger.get_trigger_runs_for_valid_condition("vc2"),
        trigger.get_trigger_runs_for_invocation("made"),
        trigger.get_trigger_runs_in_timerange(
            now - timedelta(seconds=1), now, event_code="code", task_id_key="m.t", limit=5
        ),
    ):
        assert [r.to_json() for r in found] == [run.to_json()]
    assert trigger.get_trigger_runs_in_timerange(now, now, event_code="other") == []
    assert trigger.get_referenced_atomic_service_run_ids() == {"service-1"}

    shorter = TriggerRunRecord(**{**run.__dict__, "participants": participants[:1]})
    trigger.store_trigger_run(shorter)
    assert trigger.get_trigger_runs_sourced_by_invocation("src") == []


def test_task_conditions_and_triggers_round_trip(database_url: str) -> None:
    trigger = trigger_of(database_url, "definitions")
    task, target = fake_task("watched"), fake_task("target")
    status = StatusCondition(task.task_id, [InvocationStatus.SUCCESS], create_argument_filter(None))
    event = EventCondition("code", create_argument_filter(None))
    builder = TriggerBuilder().on_status(task, InvocationStatus.SUCCESS).on_event("code")
    trigger.register_task_triggers(target, builder)

    assert [c.condition_id for c in trigger.get_conditions_sourced_from_task(task.task_id)] == [
        status.condition_id
    ]
    (definition,) = trigger.get_triggers_for_condition(event.condition_id)
    assert definition.condition_ids == [c.condition_id for c in builder.conditions]
    assert trigger.get_triggers_for_condition(status.condition_id) == [definition]

    trigger.register_task_triggers(target, TriggerBuilder().on_event("code"))  # replaces
    assert trigger.get_triggers_for_condition(status.condition_id) == []
    (replaced,) = trigger.get_triggers_for_condition(event.condition_id)
    assert replaced.condition_ids == [event.condition_id]


def plan_nodes(conn: psycopg.Connection[Any], query: str) -> list[dict[str, Any]]:
    row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}").fetchone()
    assert row is not None
    document = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(document[0]["Plan"])
    return nodes


FILL = [
    """INSERT INTO pynenc_trigger_condition (app_id, condition_id, condition_type, condition_json)
       SELECT 'app-' || (g % 5), 'c' || g, 'CronCondition', '{}'
       FROM generate_series(1, 20000) g""",
    """INSERT INTO pynenc_trigger_source_task_condition (app_id, task_id, condition_id)
       SELECT 'app-' || (g % 5), 'm.t' || (g % 500), 'c' || g FROM generate_series(1, 20000) g""",
    """INSERT INTO pynenc_trigger_definition (app_id, trigger_id, task_id, logic)
       SELECT 'app-' || (g % 5), 't' || g, 'm.t' || (g % 500), 'and'
       FROM generate_series(1, 20000) g""",
    """INSERT INTO pynenc_trigger_definition_condition (app_id, condition_id, trigger_id, position)
       SELECT 'app-' || (g % 5), 'c' || g, 't' || g, 1 FROM generate_series(1, 20000) g""",
    """INSERT INTO pynenc_trigger_valid_condition (app_id, valid_condition_id, condition_id,
           valid_condition_json)
       SELECT 'app-' || (g % 50), 'vc' || g, 'c' || g, '{}' FROM generate_series(1, 20000) g""",
    """INSERT INTO pynenc_trigger_cron_execution (app_id, condition_id, last_execution,
           claim_token)
       SELECT 'app-' || (g % 5), 'c' || g, now(), 't' FROM generate_series(1, 20000) g""",
    """INSERT INTO pynenc_trigger_run_claim (app_id, trigger_run_id, claim_token, claimed_at,
           expires_at)
       SELECT 'app-' || (g % 5), 'r' || g, 't', now(), now() - make_interval(mins => g)
       FROM generate_series(1, 50000) g""",
    """INSERT INTO pynenc_trigger_event (app_id, event_id, event_code, occurred_at,
           matched_condition_count, emitted_by_invocation_id, event_json)
       SELECT 'app-' || (g % 5), 'e' || g, 'code' || (g % 50), now() - make_interval(mins => g),
              g % 2, CASE WHEN g % 10 = 0 THEN 'i' || g END, '{}'
       FROM generate_series(1, 50000) g""",
    """INSERT INTO pynenc_trigger_event_invocation (app_id, event_id, invocation_id, linked_at)
       SELECT 'app-' || (g % 5), 'e' || g, 'i' || g, now() FROM generate_series(1, 50000, 3) g""",
    """INSERT INTO pynenc_trigger_run (app_id, trigger_run_id, trigger_id, task_id, logic,
           triggered_invocation_id, atomic_service_run_id, executed_at, trigger_run_json)
       SELECT 'app-' || (g % 5), 'r' || g, 't' || (g % 100), 'm.t' || (g % 500), 'and', 'i' || g,
              CASE WHEN g % 100 = 0 THEN 's' || g END, now() - make_interval(mins => g), '{}'
       FROM generate_series(1, 50000) g""",
    """INSERT INTO pynenc_trigger_run_participant (app_id, trigger_run_id, position, context_type,
           condition_id, valid_condition_id, event_id, source_invocation_id)
       SELECT 'app-' || (g % 5), 'r' || g, 1, 'EventContext', 'c' || g, 'vc' || g,
              CASE WHEN g % 2 = 0 THEN 'e' || g END, CASE WHEN g % 2 = 1 THEN 'i' || g END
       FROM generate_series(1, 50000) g""",
]


def test_every_statement_uses_the_index_made_for_it(database_url: str) -> None:
    """On tables holding five apps' worth of rows, each lookup goes through its index."""
    sql, a, when, ids = statements("public"), "app-1", datetime.now(UTC), ["x1", "x6"]
    cases: list[tuple[str, tuple[Any, ...], str]] = [
        (sql.get_conditions, (a, ids), "pk_pynenc_trigger_condition"),
        (sql.conditions_of_source_task, (a, "m.t1"), "pk_pynenc_trigger_source_task_condition"),
        (sql.get_triggers, (a, ids), "pk_pynenc_trigger_definition"),
        (sql.triggers_for_condition, (a, "c1"), "pk_pynenc_trigger_definition_condition"),
        (sql.clean_task_triggers, (a, "m.t1", a), "ix_pynenc_trigger_definition_app_id_task_id"),
        (sql.clear_valid_conditions, (a, ids), "pk_pynenc_trigger_valid_condition"),
        (sql.last_cron_execution, (a, "c1"), "pk_pynenc_trigger_cron_execution"),
        (
            sql.next_cron_execution,
            (when, "t", a, "c1", when, "t", when),
            "pk_pynenc_trigger_cron_execution",
        ),
        (sql.get_events_by_id, (a, ids), "pk_pynenc_trigger_event"),
        (sql.get_events_by_id, (a, ids), "pk_pynenc_trigger_event_invocation"),
        (sql.invocations_of_event, (a, "e1"), "pk_pynenc_trigger_event_invocation"),
        (sql.get_trigger_runs, (a, ids), "pk_pynenc_trigger_run"),
        (sql.runs_for_event, (a, a, "e2"), "ix_pynenc_trigger_run_participant_app_id_event_id"),
        (
            sql.runs_for_invocation,
            (a, "i1"),
            "ix_pynenc_trigger_run_app_id_triggered_invocation_id",
        ),
        (
            sql.runs_sourced_by_invocation,
            (a, a, "i1"),
            "ix_pynenc_trigger_run_participant_app_id_source_invocation_id",
        ),
        (
            sql.runs_for_valid_condition,
            (a, a, "vc1"),
            "ix_pynenc_trigger_run_participant_app_id_valid_condition_id",
        ),
        (
            sql.referenced_atomic_service_runs,
            (a,),
            "ix_pynenc_trigger_run_app_id_atomic_service_run_id",
        ),
        (
            sql.age_purge_events,
            (a, when - timedelta(days=30), 100, a, a),
            "ix_pynenc_trigger_event_app_id_occurred_at",
        ),
        (sql.cap_purge_events, (a, 5000, 100, a, a), "ix_pynenc_trigger_event_app_id_occurred_at"),
        (
            sql.age_purge_trigger_runs,
            (a, when - timedelta(days=30), 100, a, a),
            "ix_pynenc_trigger_run_app_id_executed_at",
        ),
        (
            sql.cap_purge_trigger_runs,
            (a, 5000, 100, a, a),
            "ix_pynenc_trigger_run_app_id_executed_at",
        ),
        (
            sql.purge_expired_claims,
            (a, when - timedelta(days=30), 100, a),
            "ix_pynenc_trigger_run_claim_app_id_expires_at",
        ),
        (
            sql.cascade_delete_runs_for_events,
            (a, ids, a, a),
            "ix_pynenc_trigger_run_participant_app_id_event_id",
        ),
        (
            events_page(sql.schema, ("event_code",)),
            (a, "code1", 10, 0),
            "ix_pynenc_trigger_event_app_id_event_code_occurred_at",
        ),
        (
            events_page(sql.schema, ("emitted_by_invocation_id",)),
            (a, "i10", 10, 0),
            "ix_pynenc_trigger_event_app_id_emitted_by_invocation_id",
        ),
        (
            events_page(sql.schema, ("start_time", "matched", "untriggered")),
            (a, when - timedelta(hours=1), 10, 0),
            "ix_pynenc_trigger_event_app_id_occurred_at",
        ),
        (
            event_markers(sql.schema, ("triggered",)),
            (a, when - timedelta(hours=1), when, 100, 0),
            "ix_pynenc_trigger_event_app_id_occurred_at",
        ),
        (
            runs_in_timerange(sql.schema, by_task=False, by_event_code=False),
            (a, when - timedelta(hours=1), when, None),
            "ix_pynenc_trigger_run_app_id_executed_at",
        ),
        (
            runs_in_timerange(sql.schema, by_task=True, by_event_code=False),
            (a, when - timedelta(days=30), when, "m.t1", None),
            "ix_pynenc_trigger_run_app_id_task_id_executed_at",
        ),
    ]
    with psycopg.connect(
        database_url, autocommit=True, cursor_factory=psycopg.ClientCursor
    ) as conn:
        for statement in FILL:
            conn.execute(statement)
        conn.execute("ANALYZE")
        cursor = conn.cursor()
        for query, params, index in cases:
            nodes = plan_nodes(conn, cursor.mogrify(query, params))
            used = {node["Index Name"] for node in nodes if "Index Name" in node}
            seq_scans = {n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"}
            assert index in used and not seq_scans, (index, used, seq_scans, query)


def test_event_filters_and_markers_combine(database_url: str) -> None:
    trigger = trigger_of(database_url, "filters")
    base = datetime(2030, 1, 1, tzinfo=UTC)
    specs = [  # id, code, minutes after base, matched, triggered, emitted by (invocation, task)
        ("e1", "a", 1, True, True, ("inv-1", "m.emitter")),
        ("e2", "a", 2, True, False, ("inv-2", "m.other")),
        ("e3", "b", 3, False, False, (None, None)),
        ("e4", "a", 4, False, True, ("inv-1", "m.emitter")),
    ]
    for event_id, code, minutes, matched, triggered, (invocation, task) in specs:
        trigger.store_event(
            EventRecord(
                event_id=event_id,
                event_code=code,
                timestamp=base + timedelta(minutes=minutes),
                matched_condition_ids=["c"] if matched else [],
                emitted_by_invocation_id=invocation,
                emitted_by_task_id=task,
            )
        )
        if triggered:
            trigger.link_trigger_run_to_events(
                [event_id], f"made-by-{event_id}", trigger_run_id="r"
            )

    def ids(**filters: Any) -> list[str]:
        found = [e.event_id for e in trigger.get_events(**filters)]
        if "limit" not in filters:
            assert trigger.count_events(**filters) == len(found)
        return found

    assert ids() == ["e4", "e3", "e2", "e1"]
    assert ids(event_code="a", matched=True) == ["e2", "e1"]
    assert ids(event_code="a", triggered=False) == ["e2"]
    assert ids(matched=False, triggered=True) == ["e4"]
    assert ids(start_time=base + timedelta(minutes=2), end_time=base + timedelta(minutes=3)) == [
        "e3",
        "e2",
    ]
    assert ids(
        event_code="a",
        start_time=base,
        end_time=base + timedelta(minutes=10),
        matched=True,
        triggered=True,
        emitted_by_invocation_id="inv-1",
        emitted_by_task_id="m.emitter",
    ) == ["e1"]
    assert ids(emitted_by_task_id="m.emitter", limit=1, offset=1) == ["e1"]
    assert trigger.get_events_emitted_by_invocation("inv-1") == trigger.get_events(
        emitted_by_invocation_id="inv-1"
    )
    assert trigger.get_invocations_triggered_by_event("e4") == ["made-by-e4"]
    assert trigger.get_event("e4").triggered_invocation_ids == ["made-by-e4"]  # type: ignore[union-attr]

    window = (base, base + timedelta(minutes=3))
    expected = {
        "all": ["e1", "e2", "e3"],
        "matched": ["e1", "e2"],
        "unmatched": ["e3"],
        "triggered": ["e1"],
        "untriggered": ["e2", "e3"],
    }
    for state, events in expected.items():
        page = trigger.get_event_markers_in_timerange(*window, state=state)
        assert [m.event_id for m in page.markers] == events, state
        assert (page.total, page.truncated) == (len(events), False)
    page = trigger.get_event_markers_in_timerange(*window, event_code="a", limit=1, offset=1)
    assert [(m.event_id, m.matched, m.triggered) for m in page.markers] == [("e2", True, False)]
    assert (page.total, page.truncated) == (2, False)
    page = trigger.get_event_markers_in_timerange(*window, limit=1)
    assert (page.total, page.truncated) == (3, True)
    assert trigger.list_event_codes() == ["a", "b"]
