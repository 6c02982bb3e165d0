"""The server restarts while a writer is busy: calls retry, nothing is lost or duplicated.

The server is this module's own, so ``pg_ctl stop``/``start`` never touches the server
that the rest of the suite (or CI's external Postgres) runs on.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import defaultdict

import pytest
from pynenc.invocation.status import InvocationStatus
from pynenc.runner.runner_context import RunnerContext

from pynenc_postgres.db.errors import PostgresUnavailableError
from tests.reliability.conftest import APP_PASSWORD, Dedicated, build_app
from tests.reliability.tasks import new_invocation, record
from tests.waiting import wait_until

STATUSES = [
    InvocationStatus.REGISTERED,
    InvocationStatus.PENDING,
    InvocationStatus.RUNNING,
    InvocationStatus.SUCCESS,
]
RETRY_LOG = "Transient Postgres error"


def test_restart_mid_workload_retries_and_loses_nothing(
    dedicated: Dedicated, caplog: pytest.LogCaptureFixture
) -> None:
    database = dedicated.new_database()
    # A retry budget (about 5 s at least) longer than the restart below.
    app = build_app(
        dedicated.app_url(database),
        connect_timeout=2,
        retry_attempts=40,
        retry_initial_delay=0.05,
        retry_max_delay=0.3,
    )
    backend = app.state_backend
    ctx = RunnerContext(runner_cls="RestartWriter", runner_id=f"writer-{uuid.uuid4().hex}")
    sent: dict[str, list[InvocationStatus]] = defaultdict(list)
    results: dict[str, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            number = 0
            while not stop.is_set():
                invocation = new_invocation(app, number)
                backend.upsert_invocations([invocation])
                for status in STATUSES:
                    record(app, invocation, status, ctx)
                    sent[invocation.invocation_id].append(status)
                backend.set_result(invocation.invocation_id, number)
                results[invocation.invocation_id] = number
                number += 1
        except BaseException as exc:
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="pynenc_postgres")
    thread = threading.Thread(target=writer, name="restart-writer")
    thread.start()

    def retried() -> int:
        return sum(RETRY_LOG in record.getMessage() for record in caplog.records)

    try:
        wait_until(lambda: len(results) >= 20 or errors, "20 writes before the restart")
        before = len(results)
        dedicated.server.stop("fast")  # terminates every session, like a restart
        # The server stays down until the writer has met the outage and backs off.
        wait_until(lambda: retried() or errors, "a retried call while the server is down")
        dedicated.server.start()
        wait_until(
            lambda: len(results) >= before + 20 or errors,
            lambda: f"20 writes after the restart (got {len(results) - before})",
        )
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    retries = retried()
    assert retries >= 1, "no call was made during the outage"
    assert APP_PASSWORD not in caplog.text

    # Every invocation has exactly the history rows that were sent: none lost, none twice.
    assert len(sent) == len(results) >= 40
    for invocation_id, statuses in sent.items():
        stored = [h.status_record.status for h in backend.get_history(invocation_id)]
        assert stored == statuses == STATUSES, invocation_id
        assert backend.get_result(invocation_id) == results[invocation_id]
    counted = dedicated.server.execute(
        "SELECT count(*), count(DISTINCT invocation_id) FROM pynenc_invocation_history "
        "WHERE app_id = %s",
        (app.app_id,),
        database,
    )
    assert counted == [(len(sent) * len(STATUSES), len(sent))]


def test_outage_beyond_retry_budget_raises_once_then_recovers(
    dedicated: Dedicated, caplog: pytest.LogCaptureFixture
) -> None:
    database = dedicated.new_database()
    app = build_app(
        dedicated.app_url(database),
        connect_timeout=2,
        retry_attempts=3,
        retry_initial_delay=0.05,
        retry_max_delay=0.1,
    )
    backend = app.state_backend
    first = new_invocation(app, "before")
    second = new_invocation(app, "during")  # building one writes its workflow run
    backend.upsert_invocations([first])  # the pool now holds a live connection
    caplog.set_level(logging.WARNING, logger="pynenc_postgres")
    dedicated.server.stop("fast")
    try:
        with pytest.raises(PostgresUnavailableError) as info:
            backend.upsert_invocations([second])
    finally:
        dedicated.server.start()
    message = str(info.value)
    assert f"postgresql://pynenc_app:***@127.0.0.1:{dedicated.server.port}/{database}" in message
    assert "gave up after 3 attempts" in message
    assert "postgres_retry_attempts" in message
    assert APP_PASSWORD not in message + repr(info.value) + caplog.text
    assert caplog.text.count(RETRY_LOG) == 2

    # The same backend object works again once the server is back: no restart needed.
    backend.upsert_invocations([second])
    assert backend.get_invocation(second.invocation_id) == second
    assert backend.get_invocation(first.invocation_id) == first
