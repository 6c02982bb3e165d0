"""The in-process OpenTelemetry instruments, read with the SDK's in-memory reader."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pynenc import PynencBuilder

from pynenc_postgres.db import telemetry
from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.set_meter_provider(provider)
    yield reader
    telemetry._instruments = None
    provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found.append((dict(point.attributes or {}), point))
    return found


def test_statements_are_counted_by_component(
    database_url: str, reader: InMemoryMetricReader
) -> None:
    before = telemetry.statement_counts()
    app = (
        PynencBuilder()
        .app_id("otel-app")
        .postgres(url=database_url)
        .custom_config(queue_timeout_sec=0.05, postgres_broker_wakeup="poll")
        .build()
    )
    app.broker.route_invocation("inv-1", "default", 0.0)
    assert app.broker.retrieve_invocation() == "inv-1"
    app.state_backend.purge()
    counts = {
        attributes["component"]: point.value
        for attributes, point in points(reader, "pynenc_postgres.statements")
    }
    assert counts["broker"] - before.get("broker", 0) >= 2  # the route and the claim
    assert counts["state_backend"] - before.get("state_backend", 0) >= 1  # the purge


def test_claims_record_their_outcome_and_duration(
    database_url: str, reader: InMemoryMetricReader
) -> None:
    app = (
        PynencBuilder()
        .app_id("otel-claims")
        .postgres(url=database_url)
        .custom_config(queue_timeout_sec=0.01, postgres_broker_wakeup="poll")
        .build()
    )
    app.broker.route_invocation("inv-1", "default", 0.0)
    assert app.broker.retrieve_invocation() == "inv-1"
    assert app.broker.retrieve_invocation() is None  # empty: one or more empty claims
    claims = {a["outcome"]: p.value for a, p in points(reader, "pynenc_postgres.broker.claims")}
    assert claims["claimed"] == 1 and claims["empty"] >= 1
    durations = {
        a["outcome"]: p for a, p in points(reader, "pynenc_postgres.broker.claim.duration")
    }
    assert durations["claimed"].count == 1 and durations["claimed"].sum > 0
    assert durations["empty"].count == claims["empty"]


def test_pool_connections_in_use_and_waits(database_url: str, reader: InMemoryMetricReader) -> None:
    settings = DatabaseSettings(url=database_url, pool_size=1, max_overflow=0, pool_timeout=0.3)
    database = get_database(settings)
    holding = threading.Event()
    release = threading.Event()

    def hold(conn: psycopg.Connection[Any]) -> None:
        holding.set()
        release.wait(10)

    holder = threading.Thread(target=database.run, args=(hold,))
    holder.start()
    try:
        assert holding.wait(10)
        in_use = {
            a["db.client.connection.state"]: p.value
            for a, p in points(reader, "db.client.connection.count")
            if a["db.client.connection.pool.name"] == settings.server
        }
        assert in_use == {"used": 1, "idle": 0}
        # The only connection is busy: this call waits, then times out.
        with pytest.raises(Exception, match="pool"):
            database.fetchone("SELECT 1", ())
    finally:
        release.set()
        holder.join()
    waits = points(reader, "db.client.connection.wait_time")
    assert waits and waits[0][1].count == 1 and waits[0][1].sum >= 0.3
    assert points(reader, "db.client.connection.timeouts")[0][1].value == 1
    idle = {
        a["db.client.connection.state"]: p.value
        for a, p in points(reader, "db.client.connection.count")
        if a["db.client.connection.pool.name"] == settings.server
    }
    assert idle == {"used": 0, "idle": 1}
    database.dispose()


def test_retries_are_counted_by_error_type(database_url: str, reader: InMemoryMetricReader) -> None:
    settings = DatabaseSettings(url=database_url, retry_initial_delay=0.01)
    database = get_database(settings)
    attempts = []

    def deadlock_once(conn: psycopg.Connection[Any]) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            # A real deadlock's SQLSTATE, raised by the server.
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$")
        return len(attempts)

    assert database.run(deadlock_once) == 2
    retries = {a["error.type"]: p.value for a, p in points(reader, "pynenc_postgres.retries")}
    assert retries == {"40P01": 1}


def test_the_global_provider_set_after_the_first_call_gets_every_instrument(
    database_url: str,
) -> None:
    """The usual set-up: OpenTelemetry configured at start-up, or later, through the global
    provider; instruments made before it was set report to it once it is."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from pynenc_postgres.db.engine import get_database
        from pynenc_postgres.db.settings import DatabaseSettings

        db = get_database(DatabaseSettings(url={database_url!r}))
        db.fetchone("SELECT 1", ())  # before any provider: OpenTelemetry's proxy
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        db.fetchone("SELECT 2", ())
        names = {{
            m.name: [dict(p.attributes) for p in m.data.data_points]
            for r in reader.get_metrics_data().resource_metrics
            for s in r.scope_metrics
            for m in s.metrics
        }}
        print(sorted(names))
        print(names["db.client.connection.count"])
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names, connections = done.stdout.splitlines()
    assert "pynenc_postgres.statements" in names
    assert "db.client.connection.count" in names
    assert "'db.client.connection.state': 'idle'" in connections
