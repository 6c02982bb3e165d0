"""An invocation's history sorts in the order it was written, whatever the writers' clocks.

pynenc stamps each history row with the writer's clock and orders the history by those
stamps (its own suites check every consecutive pair is an allowed transition). A worker
on a host whose clock is behind the registering host's, or a claim stamped just before
a registration that committed first, must still record PENDING after REGISTERED.
"""

from __future__ import annotations

import datetime as real_datetime
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.invocation.status import InvocationStatus, validate_transition

from pynenc_postgres.db.notify import stop_all_listeners
from pynenc_postgres.orchestrator import lifecycle
from tests.orchestrator.apps import register, runner_context

BEHIND = real_datetime.timedelta(minutes=10)


class _ClockBehind(real_datetime.datetime):
    """``datetime`` as read on a host whose clock is ten minutes behind."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
        return real_datetime.datetime.now(tz) - BEHIND


@pytest.fixture
def app(database_url: str) -> Iterator[Pynenc]:
    yield (
        PynencBuilder().postgres(url=database_url).app_id(f"stamps-{uuid.uuid4().hex[:8]}").build()
    )
    stop_all_listeners()


def test_a_worker_whose_clock_is_behind_records_its_statuses_after_the_registration(
    app: Pynenc, monkeypatch: pytest.MonkeyPatch
) -> None:
    invocation_id = register(app, "late clock")
    monkeypatch.setattr(lifecycle, "datetime", _ClockBehind)
    ctx = runner_context("behind")
    taken = [str(i.invocation_id) for i in app.orchestrator.get_invocations_to_run(1, ctx)]
    assert taken == [invocation_id]
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.RUNNING, ctx)  # type: ignore[arg-type]

    history = app.state_backend.get_history(invocation_id)  # type: ignore[arg-type]
    by_stamp = [h.status_record.status for h in sorted(history, key=lambda h: h.timestamp)]
    assert by_stamp == [
        InvocationStatus.REGISTERED,
        InvocationStatus.PENDING,
        InvocationStatus.RUNNING,
    ]
    for before, after in itertools.pairwise(by_stamp):
        validate_transition(before, after)
