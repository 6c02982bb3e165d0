"""Each metric of the exporter against rows the test arranged, read through a real scrape."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pynenc_postgres.metrics import MetricsOptions
from tests.metrics.conftest import Exporter, series, value

DEAD_AFTER_MINUTES = 10.0

# (app, invocation, status, owner) of the orchestrator's rows.
INVOCATIONS = [
    ("shop", "s-reg-1", "registered", None),
    ("shop", "s-reg-2", "registered", None),
    ("shop", "s-pend", "pending", "r-alive"),
    ("shop", "s-run-alive", "running", "r-alive"),
    ("shop", "s-run-dead", "running", "r-dead"),
    ("shop", "s-run-gone", "running", "r-never-beat"),
    ("shop", "s-retry", "retry", None),
    ("shop", "s-ok-1", "success", None),
    ("shop", "s-ok-2", "success", None),
    ("shop", "s-fail", "failed", None),
    ("mail", "m-paused", "paused", None),
    ("mail", "m-ok", "success", None),
]
# (app, runner, seconds since its last heartbeat, queues it consumes)
HEARTBEATS = [
    ("shop", "r-alive", 5, ["default", "idle-queue"]),
    ("shop", "r-dead", 3600, ["default"]),
    ("shop", "r-old", 7200, ["forgotten"]),
    ("mail", "m-runner", 30, ["mail"]),
]
# (app, queue, priority, seconds since routed)
MESSAGES = [
    ("shop", "default", 10, 20),
    ("shop", "default", 10, 15),
    ("shop", "default", 0, 300),  # the oldest waits behind the higher priority
    ("shop", "bulk", 0, 60),
    ("mail", "mail", 5, 7),
]
# (app, status, rows): history rows, by status
HISTORY = [
    ("shop", "registered", 9),
    ("shop", "running", 8),
    ("shop", "success", 5),
    ("shop", "failed", 2),
    ("shop", "retry", 3),
    ("shop", "pending_recovery", 1),
    ("shop", "running_recovery", 4),
    ("mail", "success", 1),
]


def arrange(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for app, invocation, status, owner in INVOCATIONS:
            conn.execute(
                "INSERT INTO pynenc_orchestrator_invocation (app_id, invocation_id, task_id, "
                "call_id, status, status_owner_id, status_set_at) "
                "VALUES (%s, %s, 'tasks.t', %s, %s, %s, now())",
                (app, invocation, f"tasks.t:{invocation}", status, owner),
            )
        for app, runner, age, queues in HEARTBEATS:
            conn.execute(
                "INSERT INTO pynenc_runner_heartbeat (app_id, runner_id, can_run_atomic_service, "
                "consumed_queues, first_heartbeat_at, last_heartbeat_at) "
                "VALUES (%s, %s, true, %s, now() - interval '1 day', "
                "now() - make_interval(secs => %s))",
                (app, runner, queues, age),
            )
        for n, (app, queue, priority, age) in enumerate(MESSAGES):
            conn.execute(
                "INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id, "
                "routed_at) VALUES (%s, %s, %s, %s, now() - make_interval(secs => %s))",
                (app, queue, priority, f"q-{n}", age),
            )
        # shop's atomic service is held by r-dead: its heartbeat is an hour old.
        conn.execute(
            "INSERT INTO pynenc_atomic_service_execution (app_id, atomic_service_run_id, "
            "runner_id, status, start_time, recorded_at) VALUES "
            "('shop', 'run-old', 'r-alive', 'completed', now() - interval '2 hours', "
            " now() - interval '2 hours'), "
            "('shop', 'run-now', 'r-dead', 'running', now() - interval '2 hours', "
            " now() - interval '2 hours')"
        )
        for app, status, rows in HISTORY:
            conn.execute(
                "INSERT INTO pynenc_invocation_history (app_id, invocation_id, recorded_at, "
                "status, status_set_at, runner_id) "
                "SELECT %s, 'h-' || i, now(), %s, now(), 'r-alive' "
                "FROM generate_series(1, %s) AS i",
                (app, status, rows),
            )
        conn.execute("ANALYZE")


def expected_counts() -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for app, _, status, _ in INVOCATIONS:
        counts[app, status] = counts.get((app, status), 0) + 1
    return counts


def test_each_metric_reflects_the_rows_of_the_database(
    database_url: str, start_exporter: Callable[..., Exporter]
) -> None:
    arrange(database_url)
    exporter = start_exporter(
        database_url, MetricsOptions(runner_dead_after_minutes=DEAD_AFTER_MINUTES)
    )
    before = time.monotonic()
    samples = exporter.scrape()
    elapsed = time.monotonic() - before + 1  # the scrape's now() is at most this much later

    assert value(samples, "pynenc_postgres_up") == 1
    assert value(samples, "pynenc_postgres_scrape_duration_seconds") > 0

    # Every active status of every app, zero included; final statuses are not counted.
    counts = expected_counts()
    by_status = series(samples, "pynenc_invocations")
    from pynenc_postgres.metrics.sql import ACTIVE_STATUSES, FINAL_STATUSES

    assert set(by_status) == {
        (("app_id", app), ("status", status))
        for app in ("mail", "shop")
        for status in ACTIVE_STATUSES
    }
    for (app, status), count in counts.items():
        if status in FINAL_STATUSES:
            continue
        assert value(samples, "pynenc_invocations", app_id=app, status=status) == count
    assert value(samples, "pynenc_invocations", app_id="shop", status="killed") == 0

    # RUNNING with a dead owner: r-dead (an hour old) and r-never-beat (no heartbeat).
    assert value(samples, "pynenc_invocations_running_dead_owner", app_id="shop") == 2
    assert value(samples, "pynenc_invocations_running_dead_owner", app_id="mail") == 0

    # Queues: depth, and the age of the oldest message over every priority.
    for app, queue in {(a, q) for a, q, _, _ in MESSAGES}:
        ages = [age for a, q, _, age in MESSAGES if (a, q) == (app, queue)]
        assert value(samples, "pynenc_queue_depth", app_id=app, queue=queue) == len(ages)
        oldest = value(samples, "pynenc_queue_oldest_age_seconds", app_id=app, queue=queue)
        assert max(ages) <= oldest < max(ages) + elapsed
    # A queue a live runner consumes is there, empty; one only dead runners consumed is not.
    assert value(samples, "pynenc_queue_depth", app_id="shop", queue="idle-queue") == 0
    assert value(samples, "pynenc_queue_oldest_age_seconds", app_id="shop", queue="idle-queue") == 0
    assert not any(
        ("queue", "forgotten") in labels for labels in series(samples, "pynenc_queue_depth")
    )

    # Runners by the heartbeat rule.
    dead_after = DEAD_AFTER_MINUTES * 60
    for app in ("shop", "mail"):
        ages = [age for a, _, age, _ in HEARTBEATS if a == app]
        alive = sum(age < dead_after for age in ages)
        assert value(samples, "pynenc_runners", app_id=app, state="alive") == alive
        assert value(samples, "pynenc_runners", app_id=app, state="dead") == len(ages) - alive

    # The holder of shop's atomic service last beat an hour ago; mail has no holder.
    holder_age = value(samples, "pynenc_atomic_service_heartbeat_age_seconds", app_id="shop")
    assert 3600 <= holder_age < 3600 + elapsed
    assert series(samples, "pynenc_atomic_service_heartbeat_age_seconds").keys() == {
        (("app_id", "shop"),)
    }

    # Counters from the history's totals.
    rows = {(app, status): n for app, status, n in HISTORY}
    for app in ("shop", "mail"):
        for status in FINAL_STATUSES:
            assert value(
                samples, "pynenc_invocations_finished_total", app_id=app, status=status
            ) == rows.get((app, status), 0)
        assert value(samples, "pynenc_invocation_retries_total", app_id=app) == rows.get(
            (app, "retry"), 0
        )
        for status in ("pending_recovery", "running_recovery"):
            assert value(
                samples, "pynenc_invocation_recoveries_total", app_id=app, status=status
            ) == rows.get((app, status), 0)

    # Tables: the bytes on disk, and the server's own row estimates.
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size(relid), n_live_tup, n_dead_tup "
            "FROM pg_stat_user_tables WHERE relname = 'pynenc_orchestrator_invocation'"
        ).fetchone()
    assert row is not None
    table = {"table": "pynenc_orchestrator_invocation"}
    assert value(samples, "pynenc_table_size_bytes", **table) == row[0]
    assert value(samples, "pynenc_table_live_rows", **table) == row[1] >= len(INVOCATIONS)
    assert value(samples, "pynenc_table_dead_rows", **table) == row[2]
    from pynenc_postgres.metrics.sql import TABLES

    assert {labels for labels in series(samples, "pynenc_table_size_bytes")} == {
        (("table", table),) for table in TABLES
    }


def test_a_vacuum_is_reported_with_its_time(
    database_url: str, start_exporter: Callable[..., Exporter]
) -> None:
    exporter = start_exporter(database_url)
    assert not series(exporter.scrape(), "pynenc_table_last_vacuum_timestamp_seconds")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM pynenc_broker_message")
        row = conn.execute("SELECT extract(epoch FROM now())").fetchone()
        assert row is not None
        vacuumed_before = float(row[0])
        # The statistics of this backend reach the server's shared memory on exit at last.
        conn.execute("SELECT pg_stat_force_next_flush()")

    def vacuum_time() -> float | None:
        found = series(exporter.scrape(), "pynenc_table_last_vacuum_timestamp_seconds")
        return found.get((("table", "pynenc_broker_message"),))

    deadline = time.monotonic() + 30
    while (seen := vacuum_time()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen is not None and seen <= vacuumed_before + 1


def _readers_recording(seen: list[Any]) -> tuple[Any, ...]:
    from pynenc_postgres.metrics.collector import READERS, Reader

    def record(cur: Any, sql: Any, options: Any, schema: str) -> list[Any]:
        seen.append(
            cur.execute(
                "SELECT pg_backend_pid(), transaction_timestamp(), "
                "current_setting('transaction_read_only')"
            ).fetchone()
        )
        return []

    probe = Reader("probe", list, record)
    return (probe, *READERS, probe)


def test_a_scrape_is_one_read_only_transaction(database_url: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pynenc_postgres.db.settings import DatabaseSettings
    from pynenc_postgres.metrics import PostgresMetricsCollector

    seen: list[Any] = []
    collector = PostgresMetricsCollector(
        DatabaseSettings(url=database_url), readers=_readers_recording(seen)
    )
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        generate_latest(registry)
        generate_latest(registry)
    finally:
        collector.close()
    first, last, next_first, _ = seen
    # The probes before and after every reader saw the same transaction, read-only...
    assert first == last and first[2] == "on"
    # ...and the next scrape a new one.
    assert next_first[1] > first[1]


def test_a_reader_that_writes_fails_the_scrape(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pynenc_postgres.db.settings import DatabaseSettings
    from pynenc_postgres.metrics import PostgresMetricsCollector
    from pynenc_postgres.metrics.collector import Reader
    from tests.metrics.conftest import parse

    def write(cur: Any, sql: Any, options: Any, schema: str) -> list[Any]:
        cur.execute("DELETE FROM pynenc_broker_message")
        return []

    collector = PostgresMetricsCollector(
        DatabaseSettings(url=database_url), readers=(Reader("writer", list, write),)
    )
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        samples = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    assert value(samples, "pynenc_postgres_up") == 0
    assert "read-only transaction" in caplog.text


def test_the_auditor_role_of_the_docs_can_scrape(
    database_url: str, auditor_url: str, start_exporter: Callable[..., Exporter]
) -> None:
    arrange(database_url)
    as_owner = start_exporter(database_url).scrape()
    as_auditor = start_exporter(auditor_url).scrape()
    assert value(as_auditor, "pynenc_postgres_up") == 1

    def stable(samples: dict[Any, float]) -> dict[Any, float]:
        # Ages and durations move between two scrapes; everything else must be equal.
        return {
            key: v
            for key, v in samples.items()
            if not key[0].endswith(("_seconds", "_bytes")) and "table" not in key[0]
        }

    assert stable(as_auditor) == stable(as_owner)
    assert series(as_auditor, "pynenc_table_size_bytes") == series(
        as_owner, "pynenc_table_size_bytes"
    )


def test_a_missing_privilege_is_reported_as_down_with_its_cause(
    database_url: str, auditor_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pynenc_postgres.db.settings import DatabaseSettings
    from pynenc_postgres.metrics import PostgresMetricsCollector
    from tests.metrics.conftest import parse

    role = auditor_url.split("://", 1)[1].split(":", 1)[0]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT ON pynenc_history_counter FROM {role}")
    collector = PostgresMetricsCollector(DatabaseSettings(url=auditor_url))
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        samples = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    assert value(samples, "pynenc_postgres_up") == 0
    assert "pynenc_history_counter" in caplog.text
    assert auditor_url.rsplit("@", 1)[0].rsplit(":", 1)[1] not in caplog.text  # no password
