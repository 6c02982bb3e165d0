"""Fork, spawn and pickling: no process ever uses another process's connection.

pynenc's ProcessRunner forks workers from a parent that has already used the backend;
PersistentProcessRunner spawns workers that rebuild the app from its configuration.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import uuid
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc

from pynenc_postgres.state_backend import PostgresStateBackend
from tests.reliability.children import rebuild_from_environment
from tests.reliability.conftest import build_app
from tests.reliability.tasks import new_invocation
from tests.waiting import DEFAULT_TIMEOUT, wait_until


def backend_pid(app: Pynenc) -> int:
    def op(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])

    backend = app.state_backend
    assert isinstance(backend, PostgresStateBackend)
    return backend.db.run(op)


def sessions(database_url: str, application_name: str) -> set[int]:
    """Backend pids of the open sessions that carry ``application_name``."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchall()
    return {int(row[0]) for row in rows}


def test_forked_children_never_share_the_parents_connection(database_url: str) -> None:
    name = f"fork-{uuid.uuid4().hex[:8]}"
    app = build_app(database_url, application_name=name, pool_size=1, max_overflow=0)
    parent_invocation = new_invocation(app, "parent")
    parent_pid = backend_pid(app)
    assert sessions(database_url, name) == {parent_pid}

    ctx = multiprocessing.get_context("fork")
    reports: Any = ctx.Queue()
    release = ctx.Event()

    def child(number: int) -> None:
        try:
            invocation = new_invocation(app, f"child {number}")
            app.state_backend.set_result(invocation.invocation_id, number)
            seen = app.state_backend.get_invocation(parent_invocation.invocation_id)
            reports.put((os.getpid(), backend_pid(app), seen == parent_invocation, None))
        except BaseException as exc:
            reports.put((os.getpid(), None, False, repr(exc)))
            raise
        # Keep the session open while the parent looks at pg_stat_activity.
        release.wait(DEFAULT_TIMEOUT)

    children = [ctx.Process(target=child, args=(n,)) for n in range(3)]
    for process in children:
        process.start()
    found = [reports.get(timeout=DEFAULT_TIMEOUT) for _ in children]
    try:
        assert [error for *_, error in found] == [None, None, None]
        assert all(seen for _, _, seen, _ in found)
        child_pids = [pid for _, pid, _, _ in found]
        # Each process talks to Postgres through a session of its own.
        assert len(set(child_pids)) == 3
        assert parent_pid not in child_pids
        assert sessions(database_url, name) == {parent_pid, *child_pids}
    finally:
        release.set()
        for process in children:
            process.join(DEFAULT_TIMEOUT)
    assert [process.exitcode for process in children] == [0, 0, 0]
    # Children exiting closed their own sessions only; the parent's still serves it. The
    # server ends a closed session's backend on its own time, so the count is polled.
    assert backend_pid(app) == parent_pid
    wait_until(
        lambda: sessions(database_url, name) == {parent_pid},
        lambda: f"only the parent's session {parent_pid} left: {sessions(database_url, name)}",
    )


def test_spawned_child_rebuilds_from_environment_alone(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(database_url)
    invocation = new_invocation(app, "written by the parent")
    name = f"spawned-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PYNENC__APP_ID", app.app_id)
    monkeypatch.setenv("PYNENC__STATE_BACKEND_CLS", "PostgresStateBackend")
    monkeypatch.setenv("PYNENC__POSTGRES_URL", database_url)
    monkeypatch.setenv("PYNENC__POSTGRES_APPLICATION_NAME", name)
    ctx = multiprocessing.get_context("spawn")
    results: Any = ctx.Queue()
    release = ctx.Event()
    process = ctx.Process(
        target=rebuild_from_environment, args=(invocation.invocation_id, results, release)
    )
    process.start()
    try:
        report = results.get(timeout=DEFAULT_TIMEOUT)
        assert "error" not in report, report
        # While the child holds it, its session is the one carrying the application name
        # it read from the environment: it connected with its own configuration.
        assert sessions(database_url, name) == {report["backend_pid"]}
    finally:
        release.set()
        process.join(DEFAULT_TIMEOUT)
    assert process.exitcode == 0
    assert report["imported_before"] is False  # the class was resolved by its name
    assert report["backend_cls"] == "pynenc_postgres.state_backend.postgres_state_backend." + (
        "PostgresStateBackend"
    )
    assert report["app_id"] == app.app_id
    assert report["value"] == "written by the parent"
    assert app.state_backend.get_result(invocation.invocation_id) == {"from": "spawned child"}


def test_pickled_app_and_backend_carry_no_engine(database_url: str) -> None:
    app = build_app(database_url)
    invocation = new_invocation(app, "pickled")
    backend = app.state_backend
    assert isinstance(backend, PostgresStateBackend)
    assert backend.db._pool is not None  # in use: the connection pool exists

    for obj in (app, backend, backend.db):
        data = pickle.dumps(obj)
        for marker in (b"sqlalchemy", b"ConnectionPool", b"psycopg", b"Engine", b"_thread"):
            assert marker not in data, (type(obj).__name__, marker)
    state = backend.__getstate__()
    assert not any("engine" in key or key in ("conf", "settings", "sql") for key in state)

    # Unpickled in the same process, they reuse this process's engine; and they work.
    copy = pickle.loads(pickle.dumps(backend))
    assert copy.db is backend.db
    assert copy.get_invocation(invocation.invocation_id) == invocation
    app_copy = pickle.loads(pickle.dumps(app))
    assert app_copy.state_backend.get_invocation(invocation.invocation_id) == invocation
