"""A real pynenc runner (SQLite broker and orchestrator, our state backend) leaves its
whole trace in Postgres."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.runner import ThreadRunner
from pynenc_tests.conftest import MockPynenc

from tests.task_failures import expected_task_failures

mock_app = MockPynenc()


@mock_app.task
def multiply(a: int, b: int) -> int:
    return a * b


@mock_app.task
def explode(message: str) -> None:
    raise ValueError(message)


@pytest.fixture
def running_app(database_url: str, temp_sqlite_db_path: str) -> Iterator[Pynenc]:
    app = (
        PynencBuilder()
        .sqlite(sqlite_db_path=temp_sqlite_db_path)
        .postgres_state_backend(url=database_url)
        .app_id("real-runner")
        .build()
    )
    app.runner = ThreadRunner(app)
    multiply.app = app
    explode.app = app
    thread = threading.Thread(target=app.runner.run, daemon=True)
    thread.start()
    yield app
    app.runner.stop_runner_loop()
    thread.join(timeout=10)


def statuses(url: str, invocation_id: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status FROM pynenc_invocation_history WHERE app_id = 'real-runner' "
            "AND invocation_id = %s ORDER BY recorded_at",
            (invocation_id,),
        ).fetchall()
    return [row[0] for row in rows]


def test_success_leaves_invocation_history_and_result(
    running_app: Pynenc, database_url: str
) -> None:
    invocation = multiply(6, 7)

    assert invocation.result == 42

    history = statuses(database_url, invocation.invocation_id)
    assert history[0] == "registered"
    assert "running" in history
    assert history[-1] == "success"
    with psycopg.connect(database_url) as conn:
        task_id, arguments = conn.execute(
            "SELECT task_id, serialized_arguments FROM pynenc_invocation "
            "WHERE app_id = 'real-runner' AND invocation_id = %s",
            (invocation.invocation_id,),
        ).fetchone()  # type: ignore[misc]
        (serialized_result,) = conn.execute(
            "SELECT serialized_result FROM pynenc_invocation_result "
            "WHERE app_id = 'real-runner' AND invocation_id = %s",
            (invocation.invocation_id,),
        ).fetchone()  # type: ignore[misc]
        runner_rows = conn.execute(
            "SELECT DISTINCT c.runner_cls FROM pynenc_invocation_history h "
            "JOIN pynenc_runner_context c USING (app_id, runner_id) "
            "WHERE h.app_id = 'real-runner' AND h.invocation_id = %s",
            (invocation.invocation_id,),
        ).fetchall()
    assert task_id.endswith("multiply")
    assert set(running_app.serializer.deserialize(v) for v in _arguments(arguments)) == {6, 7}
    assert running_app.serializer.deserialize(serialized_result) == 42
    assert "ThreadRunner" in {row[0] for row in runner_rows}


def test_failure_leaves_history_and_exception_with_its_name(
    running_app: Pynenc, database_url: str
) -> None:
    with expected_task_failures({(explode, ValueError): 1}):
        invocation = explode("boom from the task")
        with pytest.raises(ValueError, match="boom from the task"):
            _ = invocation.result

    assert statuses(database_url, invocation.invocation_id)[-1] == "failed"
    with psycopg.connect(database_url) as conn:
        error_name, is_pynenc_error, serialized = conn.execute(
            "SELECT error_name, is_pynenc_error, serialized_exception "
            "FROM pynenc_invocation_exception WHERE app_id = 'real-runner' "
            "AND invocation_id = %s",
            (invocation.invocation_id,),
        ).fetchone()  # type: ignore[misc]
    assert error_name == "ValueError"
    assert is_pynenc_error is False
    restored = running_app.state_backend.deserialize_exception(serialized)
    assert isinstance(restored, ValueError)
    assert str(restored) == "boom from the task"


def _arguments(document: str) -> list[str]:
    import json

    return list(json.loads(document).values())
