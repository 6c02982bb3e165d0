"""DatabaseSettings refuses every unusable value with an error naming the setting and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from pynenc import PynencBuilder

from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.settings import MISSING_URL_HELP, DatabaseSettings

URL = "postgresql://pynenc@db-host:5432/app"

BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"url": ""}, MISSING_URL_HELP),
    ({"url": "   "}, MISSING_URL_HELP),
    (
        {"url": "postgresql://pynenc@db-host:port/app"},
        "postgres_url has a port that is not a number",
    ),
    ({"url": "postgresql://pynenc@db-host:70000/app"}, "postgres_url"),
    ({"url": "mysql://pynenc@db-host/app"}, "postgres_url uses the scheme 'mysql'"),
    ({"url": "db-host:5432/app"}, "postgres_url"),
    ({"schema": ""}, "postgres_schema must name a Postgres schema"),
    ({"schema": "  "}, "postgres_schema must name a Postgres schema"),
    ({"pool_size": 0}, "postgres_pool_size must be at least 1"),
    ({"max_overflow": -1}, "postgres_max_overflow is -1; it must not be negative"),
    ({"pool_timeout": -0.5}, "postgres_pool_timeout and postgres_connect_timeout"),
    ({"connect_timeout": -1}, "postgres_pool_timeout and postgres_connect_timeout"),
    ({"statement_timeout_ms": -1}, "postgres_statement_timeout_ms is -1"),
    ({"migration_lock_timeout_ms": -5}, "postgres_migration_lock_timeout_ms is -5"),
    ({"synchronous_commit": "maybe"}, "postgres_synchronous_commit is 'maybe'"),
    ({"apply_settings": "session"}, "postgres_apply_settings is 'session'"),
    ({"retry_attempts": 0}, "postgres_retry_attempts must be at least 1"),
    ({"retry_initial_delay": -0.1}, "postgres_retry_initial_delay and postgres_retry_max_delay"),
    ({"retry_max_delay": -1.0}, "postgres_retry_initial_delay and postgres_retry_max_delay"),
]


@pytest.mark.parametrize(
    ("values", "message"), BAD_VALUES, ids=[next(iter(v.items())).__repr__() for v, _ in BAD_VALUES]
)
def test_each_bad_value_has_its_own_clear_error(values: dict[str, Any], message: str) -> None:
    with pytest.raises(PostgresConfigError) as info:
        DatabaseSettings(**{"url": URL, **values})
    assert message in str(info.value)


def test_documented_values_are_accepted() -> None:
    DatabaseSettings(url=URL)  # the defaults
    for value in ("", "on", "off", "local", "remote_write", "remote_apply", "OFF", "false"):
        assert DatabaseSettings(url=URL, synchronous_commit=value).synchronous_commit == value
    for mode in ("startup", "transaction"):
        DatabaseSettings(url=URL, apply_settings=mode)
    # Zero has a meaning for each of these: no overflow, no timeout, fail at once.
    DatabaseSettings(
        url=URL,
        max_overflow=0,
        statement_timeout_ms=0,
        migration_lock_timeout_ms=0,
        pool_timeout=0,
        retry_initial_delay=0,
        retry_max_delay=0,
        prepare_threshold=-1,
    )


def test_a_bad_value_from_config_fails_the_first_call_as_a_config_error(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not as an unreachable server: the server would refuse the value at connect time."""
    monkeypatch.setenv("PYNENC__POSTGRES_SYNCHRONOUS_COMMIT", "sometimes")
    app = (
        PynencBuilder().memory().postgres_state_backend(url=database_url, retry_attempts=1).build()
    )
    with pytest.raises(PostgresConfigError, match="postgres_synchronous_commit is 'sometimes'"):
        app.state_backend.get_history("anything")
