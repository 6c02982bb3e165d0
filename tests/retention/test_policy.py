"""The retention settings: what each form means, and every bad one refused with its name."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.retention import RetentionPolicy
from tests.retention.conftest import build

FINAL = ("concurrency_controlled_final", "failed", "success")


def test_the_default_keeps_everything() -> None:
    policy = RetentionPolicy.parse("", "", "1h")
    assert not policy.enabled
    assert policy.describe() == "keep everything"
    assert policy.interval == timedelta(hours=1)


def test_one_window_for_every_final_status() -> None:
    policy = RetentionPolicy.parse("14d", "", "30m")
    assert policy.groups() == [(timedelta(days=14), FINAL)]
    assert policy.describe() == ("concurrency_controlled_final=2w, failed=2w, success=2w")


def test_per_status_windows_replace_the_default_and_keep_keeps() -> None:
    policy = RetentionPolicy.parse("14d", "FAILED=30d, success=6h", "1h")
    assert policy.groups() == [
        (timedelta(hours=6), ("success",)),
        (timedelta(days=14), ("concurrency_controlled_final",)),
        (timedelta(days=30), ("failed",)),
    ]
    kept = RetentionPolicy.parse("7d", "failed=keep", "1h")
    assert kept.groups() == [(timedelta(days=7), ("concurrency_controlled_final", "success"))]


def test_a_status_named_alone_is_purged_without_a_default() -> None:
    policy = RetentionPolicy.parse("", "success=30s", "1h")
    assert policy.groups() == [(timedelta(seconds=30), ("success",))]


@pytest.mark.parametrize(
    ("retention", "by_status", "interval", "message"),
    [
        ("14 days", "", "1h", "postgres_retention: Cannot read the duration '14 days'"),
        ("", "failed", "1h", "postgres_retention_by_status: cannot read 'failed'"),
        ("", "failed=", "1h", "cannot read 'failed='"),
        ("", "done=1d", "1h", "'done' is not a pynenc invocation status"),
        ("", "running=1d", "1h", "'running', which is not a final status"),
        ("", "failed=1y", "1h", "postgres_retention_by_status (failed): Cannot read"),
        ("1d", "", "soon", "postgres_retention_interval: Cannot read the duration 'soon'"),
        ("1d", "", "0s", "postgres_retention_interval is '0s'; use at least 1s"),
    ],
)
def test_bad_settings_name_the_setting_and_the_form(
    retention: str, by_status: str, interval: str, message: str
) -> None:
    with pytest.raises(PostgresConfigError, match=re.escape(message)):
        RetentionPolicy.parse(retention, by_status, interval)


def test_a_runner_with_a_bad_setting_stops_at_its_first_heartbeat(database_url: str) -> None:
    app = build(database_url, retention="two weeks")
    with pytest.raises(PostgresConfigError, match="postgres_retention: Cannot read"):
        app.orchestrator.register_runner_heartbeats(["r1"], True)
