"""Retention's arguments: every duration unit, and each bad argument refused before any work.

The checks run before the database is touched: the settings below point at a port
where nothing listens, so a missing check would show as a connection error instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from pynenc_postgres.cli import main
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import parse_duration, purge_invocations

NOWHERE = DatabaseSettings(url="postgresql://nobody@127.0.0.1:1/none", retry_attempts=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("0s", timedelta(0)),
        ("12H", timedelta(hours=12)),
        (" 7 d ", timedelta(days=7)),
    ],
)
def test_every_duration_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30 days", "3y", "", "d", "-5d", "1.5h", "5", "5dd", "h5"])
def test_unreadable_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(PostgresConfigError, match=r"45s, 90m, 12h, 30d or 2w") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"batch_size": -10}, "batch_size must be at least 1"),
        ({"app_id": ""}, "needs the app id"),
        ({"statuses": []}, "needs at least one status"),
        ({"statuses": ["done"]}, "'done' is not a pynenc invocation status"),
        ({"statuses": ["failed", " "]}, "' ' is not a pynenc invocation status"),
        ({"older_than": timedelta(seconds=-1)}, "older_than must not be negative"),
    ],
)
def test_bad_arguments_are_refused_before_connecting(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(PostgresConfigError, match=message):
        purge_invocations(NOWHERE, **{"app_id": "orders", **arguments})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (["--batch-size", "-5"], "--batch-size must be at least 1, not -5"),
        (["--older-than", "3y"], "Cannot read the duration '3y'"),
        (["--status", ","], "needs at least one status"),
        (["--status", "done"], "'done' is not a pynenc invocation status"),
    ],
)
def test_cli_refuses_bad_arguments_with_exit_code_2(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["purge", "--url", NOWHERE.url, "--app-id", "orders", *arguments])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert message in err


def server_now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


@pytest.mark.parametrize("text", ["45s", "90m", "12h", "30d", "2w"])
def test_older_than_puts_the_cutoff_that_far_back_on_the_server_clock(
    database_url: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    delta = parse_duration(text)
    before = server_now(database_url)
    report = purge_invocations(
        DatabaseSettings(url=database_url), "orders", older_than=delta, dry_run=True
    )
    after = server_now(database_url)
    assert report.cutoff is not None
    assert before - delta <= report.cutoff <= after - delta

    code = main(["purge", "--url", database_url, "--app-id", "orders", "--older-than", text])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("app orders: deleted 0 invocations with status ")
    printed = datetime.fromisoformat(out.split(" older than ")[1].split(" in ")[0])
    assert before - delta <= printed <= server_now(database_url) - delta
