"""The exporter keeps answering while the database is down, and recovers by itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.metrics import MetricsOptions
from tests.metrics.conftest import Exporter, value
from tests.reliability.server import DedicatedPostgres


@pytest.fixture
def server() -> Iterator[DedicatedPostgres]:
    dedicated = DedicatedPostgres()
    try:
        dedicated.start()
        schema.upgrade(DatabaseSettings(url=dedicated.url()))
        yield dedicated
    finally:
        dedicated.destroy()


def test_up_is_0_while_the_server_is_down_and_1_again_without_a_restart(
    server: DedicatedPostgres,
    start_exporter: Callable[..., Exporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id) "
            "VALUES ('app', 'q', 0, 'i-1')"
        )
    exporter = start_exporter(server.url(), MetricsOptions(timeout=2))
    samples = exporter.scrape()
    assert value(samples, "pynenc_postgres_up") == 1
    assert value(samples, "pynenc_queue_depth", app_id="app", queue="q") == 1

    server.stop()
    for _ in range(2):  # the pooled connection is found dead, then no new one can open
        down = exporter.scrape()
        assert value(down, "pynenc_postgres_up") == 0
        assert not any(name == "pynenc_queue_depth" for name, _ in down)
    assert "cannot read" in caplog.text

    server.start()
    samples = exporter.scrape()
    assert value(samples, "pynenc_postgres_up") == 1
    assert value(samples, "pynenc_queue_depth", app_id="app", queue="q") == 1
