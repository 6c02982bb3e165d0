"""Awkward app ids and payloads: stored losslessly, or refused before anything is written."""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg
import pytest
from pynenc import PynencBuilder
from pynenc.exceptions import InvocationNotFoundError
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from pynenc_postgres.db.errors import PostgresStatementTimeoutError, PostgresValueError
from pynenc_postgres.state_backend import PostgresStateBackend
from tests.reliability.conftest import build_app
from tests.reliability.tasks import new_invocation, record
from tests.waiting import DEFAULT_TIMEOUT

APP_IDS = [
    'it\'s a "quoted" app',
    "100%_done",
    "100X_done",  # what '100%_done' would match as a LIKE pattern
    "%",
    "_",
    "back\\slash\\\\",
    "back\\\\slash",
    "emoji 🐍🚀 app",
    "x" * 1000,
    "x" * 999,
]


def count_rows(database_url: str, table: str, app_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE app_id = %s", (app_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_awkward_app_ids_stay_isolated_and_purge_only_themselves(database_url: str) -> None:
    apps = {app_id: build_app(database_url, app_id=app_id) for app_id in APP_IDS}
    stored = {}
    for app_id, app in apps.items():
        ctx = RunnerContext(runner_cls="Tester", runner_id=f"runner of {app_id}")
        invocation = new_invocation(app, app_id)
        record(app, invocation, InvocationStatus.REGISTERED, ctx)
        app.state_backend.set_result(invocation.invocation_id, app_id)
        stored[app_id] = invocation
    for app_id, app in apps.items():
        backend = app.state_backend
        assert backend.get_app_info().app_id == app_id
        assert list(backend.get_invocation_ids_by_workflow()) == [stored[app_id].invocation_id]
        assert backend.get_result(stored[app_id].invocation_id) == app_id
        for other, invocation in stored.items():
            if other != app_id:
                with pytest.raises(InvocationNotFoundError):
                    backend.get_invocation(invocation.invocation_id)
        matches = [c.runner_id for c in backend.get_matching_runner_contexts(app_id[:40])]
        assert matches == [f"runner of {app_id}"]

    remaining = list(APP_IDS)
    for app_id in APP_IDS:
        apps[app_id].state_backend.purge()
        remaining.remove(app_id)
        assert count_rows(database_url, "pynenc_invocation", app_id) == 0
        assert count_rows(database_url, "pynenc_invocation_history", app_id) == 0
        for other in remaining:
            backend = apps[other].state_backend
            assert backend.get_invocation(stored[other].invocation_id) == stored[other]
            assert len(backend.get_history(stored[other].invocation_id)) == 1


SERIALIZERS = ["serializer_json", "serializer_json_pickle", "serializer_pickle"]
AWKWARD = {"nul": "a\x00b\x00", "surrogate": "lone \ud800 and \udfff", "emoji": "🐍\u2028\u0085"}


def serializer_app(database_url: str, serializer: str) -> Any:
    builder = getattr(PynencBuilder().memory(), serializer)()
    # Inline payloads: everything this test writes goes to Postgres, not a side store.
    builder = builder.custom_config(disable_client_data_store=True)
    return builder.postgres_state_backend(url=database_url).build()


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_nul_and_surrogates_round_trip_with_each_serializer(
    database_url: str, serializer: str
) -> None:
    app = serializer_app(database_url, serializer)
    backend = app.state_backend
    invocation = new_invocation(app, AWKWARD)  # arguments go through upsert_invocations
    assert backend.get_invocation(invocation.invocation_id).call.arguments.kwargs == {
        "value": AWKWARD
    }
    backend.set_result(invocation.invocation_id, AWKWARD)
    assert backend.get_result(invocation.invocation_id) == AWKWARD
    assert backend._get_result(invocation.invocation_id) == app.serializer.serialize(AWKWARD)
    backend.set_exception(
        invocation.invocation_id, ValueError(AWKWARD["nul"], AWKWARD["surrogate"])
    )
    assert backend.get_exception(invocation.invocation_id).args == (
        AWKWARD["nul"],
        AWKWARD["surrogate"],
    )


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_50_mb_result_round_trips_byte_for_byte(database_url: str, serializer: str) -> None:
    app = serializer_app(database_url, serializer)
    backend = app.state_backend
    invocation = new_invocation(app, "big")
    payload = "\x00\ud800🐍" + os.urandom(25 * 1024 * 1024).hex()
    serialized = app.serializer.serialize(payload)
    assert len(serialized) >= 50 * 1024 * 1024
    backend.set_result(invocation.invocation_id, payload)
    assert backend._get_result(invocation.invocation_id) == serialized
    assert backend.get_result(invocation.invocation_id) == payload


@pytest.mark.parametrize(("kind", "raw"), [("nul", "raw\x00text"), ("surrogate", "raw\ud800")])
def test_unstorable_serialized_text_is_refused_before_writing(
    database_url: str, kind: str, raw: str
) -> None:
    """A custom serializer that emits NUL or lone surrogates gets a clear error; no row."""
    app = build_app(database_url)
    backend = app.state_backend
    assert isinstance(backend, PostgresStateBackend)
    invocation = new_invocation(app, "custom serializer")
    with pytest.raises(PostgresValueError, match="Nothing was written") as info:
        backend._set_result(invocation.invocation_id, raw)
    assert ("NUL" if kind == "nul" else "surrogate") in str(info.value)
    with pytest.raises(PostgresValueError):
        backend._set_exception(invocation.invocation_id, raw)
    assert count_rows(database_url, "pynenc_invocation_result", app.app_id) == 0
    assert count_rows(database_url, "pynenc_invocation_exception", app.app_id) == 0
    # The connection that refused the value still works.
    backend._set_result(invocation.invocation_id, "fine")
    assert backend._get_result(invocation.invocation_id) == "fine"


def test_unknown_invocation_result_and_exception_raise_what_pynenc_expects(
    database_url: str,
) -> None:
    backend = build_app(database_url).state_backend
    with pytest.raises(InvocationNotFoundError):
        backend.get_invocation("no-such-invocation")
    with pytest.raises(KeyError):
        backend.get_result("no-such-invocation")
    with pytest.raises(KeyError):
        backend.get_exception("no-such-invocation")
    assert backend.get_history("no-such-invocation") == []


@pytest.mark.parametrize("apply_settings", ["startup", "transaction"])
def test_statement_timeout_is_a_clear_error_and_the_connection_survives(
    database_url: str, apply_settings: str
) -> None:
    app = build_app(
        database_url,
        statement_timeout_ms=300,
        pool_size=1,
        max_overflow=0,
        apply_settings=apply_settings,
    )
    backend = app.state_backend
    assert isinstance(backend, PostgresStateBackend)
    invocation = new_invocation(app, "timeout")
    ctx = RunnerContext(runner_cls="Tester", runner_id="timeout-runner")
    record(app, invocation, InvocationStatus.REGISTERED, ctx)

    def pid(conn: psycopg.Connection[Any]) -> Any:
        return conn.execute("SELECT pg_backend_pid()").fetchone()

    before = backend.db.run(pid)
    locked = threading.Event()
    done = threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(database_url) as conn:
            conn.execute("LOCK TABLE pynenc_invocation_history IN ACCESS EXCLUSIVE MODE")
            locked.set()
            done.wait(DEFAULT_TIMEOUT)

    blocker = threading.Thread(target=hold_lock)
    blocker.start()
    try:
        assert locked.wait(DEFAULT_TIMEOUT), "the other session never locked the table"
        with pytest.raises(PostgresStatementTimeoutError, match="postgres_statement_timeout_ms"):
            record(app, invocation, InvocationStatus.PENDING, ctx)
    finally:
        done.set()
        blocker.join(DEFAULT_TIMEOUT)
    # Same session afterwards (not replaced), and it works.
    assert backend.db.run(pid) == before
    record(app, invocation, InvocationStatus.PENDING, ctx)
    statuses = [h.status_record.status for h in backend.get_history(invocation.invocation_id)]
    assert statuses == [InvocationStatus.REGISTERED, InvocationStatus.PENDING]
