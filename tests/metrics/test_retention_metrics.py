"""The retention metrics against runs and schedules the test arranged, through a real scrape."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import psycopg

from tests.metrics.conftest import Exporter, series, value

# (app, run, started seconds ago, finished seconds ago or None, outcome, rows removed)
RUNS = [
    ("shop", "s-1", 7200, 7190, "completed", {"pynenc_invocation": 5}),
    ("shop", "s-2", 3600, 3580, "blocked", {"pynenc_invocation": 7, "pynenc_client_data": 2}),
    ("mail", "m-1", 60, None, "running", {"pynenc_invocation": 1}),
]
# (app, due in seconds: negative when overdue)
SCHEDULES = [("shop", -900), ("mail", 1800)]


def arrange(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for app, run, started, finished, outcome, rows in RUNS:
            conn.execute(
                "INSERT INTO pynenc_retention_run (app_id, run_id, kind, policy, started_at, "
                "finished_at, outcome, rows_removed) VALUES (%s, %s, 'scheduled', 'p', "
                "now() - make_interval(secs => %s), "
                "now() - make_interval(secs => %s::float8), %s, %s)",
                (app, run, started, finished, outcome, json.dumps(rows)),
            )
        for app, due in SCHEDULES:
            conn.execute(
                "INSERT INTO pynenc_retention_schedule (app_id, due_at, last_claimed_at) "
                "VALUES (%s, now() + make_interval(secs => %s), now())",
                (app, due),
            )


def test_the_latest_run_its_rows_and_how_far_behind_the_schedule_is(
    database_url: str, start_exporter: Callable[..., Exporter]
) -> None:
    arrange(database_url)
    exporter = start_exporter(database_url)
    before = time.time()
    samples = exporter.scrape()
    after = time.time() + 1

    last = series(samples, "pynenc_retention_last_run_timestamp_seconds")
    assert set(last) == {
        (("app_id", "shop"), ("outcome", "blocked")),
        (("app_id", "mail"), ("outcome", "running")),
    }
    shop = value(
        samples, "pynenc_retention_last_run_timestamp_seconds", app_id="shop", outcome="blocked"
    )
    assert before - 3580 - 5 <= shop <= after - 3580
    mail = value(
        samples, "pynenc_retention_last_run_timestamp_seconds", app_id="mail", outcome="running"
    )
    assert before - 60 - 5 <= mail <= after - 60  # still running: when it started

    assert series(samples, "pynenc_retention_rows_removed") == {
        (("app_id", "shop"), ("table", "pynenc_client_data")): 2,
        (("app_id", "shop"), ("table", "pynenc_invocation")): 7,
        (("app_id", "mail"), ("table", "pynenc_invocation")): 1,
    }
    behind = value(samples, "pynenc_retention_behind_seconds", app_id="shop")
    assert 900 <= behind < 900 + (after - before) + 5
    assert value(samples, "pynenc_retention_behind_seconds", app_id="mail") == 0
