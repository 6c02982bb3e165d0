"""History order is write order, even for statuses recorded in the same microsecond.

pynenc stamps each history row with the client's clock at microsecond precision, and
two status changes of one invocation can share that stamp. Every reader (the backend's
``get_history`` and time-range iteration, the audit views, retention and inspect) must
then follow the order the rows were written in, not the alphabetical order of the
statuses: ``pending`` sorts before ``registered``, yet an invocation registered and
then made pending is pending.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pynenc.call import Call
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation import DistributedInvocation, InvocationStatus, InvocationStatusRecord
from pynenc.state_backend.base_state_backend import InvocationHistory

from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.inspect import invocation_detail, list_invocations
from pynenc_postgres.retention import purge_invocations
from pynenc_postgres.state_backend import PostgresStateBackend
from tests.test_state_backend import add, build_app

APP_ID = "write-order"
TIE = datetime(2026, 4, 1, 9, 30, 0, 123456, tzinfo=UTC)
REGISTERED, PENDING = InvocationStatus.REGISTERED, InvocationStatus.PENDING


def write(
    backend: PostgresStateBackend, invocation_id: str, status: InvocationStatus, at: datetime
) -> None:
    """One history row through the backend's write path, stamped ``at``."""
    history = InvocationHistory(
        invocation_id=invocation_id,
        status_record=InvocationStatusRecord(status),
        runner_context_id="runner-1",
    )
    history._timestamp = at
    backend._add_histories([InvocationId(invocation_id)], history)


@dataclass
class Tied:
    """Two invocations with two history rows each, all four stamped with one microsecond.

    :param registered_last: written PENDING then REGISTERED; its current status is
        ``registered``, which sorts after ``pending``.
    :param pending_last: written REGISTERED then PENDING; its current status is
        ``pending``, which sorts before ``registered``: ordering by status gets it wrong.
    """

    url: str
    backend: PostgresStateBackend
    registered_last: str
    pending_last: str


@pytest.fixture
def tied(database_url: str) -> Iterator[Tied]:
    app = build_app(database_url, APP_ID)
    add.app = app
    backend = app.state_backend
    assert isinstance(backend, PostgresStateBackend)
    first = DistributedInvocation.isolated(Call(add))
    second = DistributedInvocation.isolated(Call(add))
    backend.upsert_invocations([first, second])
    pending_last, registered_last = first.invocation_id, second.invocation_id
    write(backend, pending_last, REGISTERED, TIE)
    write(backend, pending_last, PENDING, TIE)
    write(backend, registered_last, PENDING, TIE)
    write(backend, registered_last, REGISTERED, TIE)
    yield Tied(database_url, backend, registered_last, pending_last)


def statuses(history: list[InvocationHistory]) -> list[str]:
    return [h.status_record.status.value for h in history]


def test_get_history_returns_rows_in_write_order(tied: Tied) -> None:
    backend = tied.backend
    assert statuses(backend.get_history(InvocationId(tied.pending_last))) == [
        "registered",
        "pending",
    ]
    assert statuses(backend.get_history(InvocationId(tied.registered_last))) == [
        "pending",
        "registered",
    ]


def test_a_resent_row_keeps_its_place(tied: Tied) -> None:
    """Resending the first row (a retry after a lost reply) is a no-op: it does not
    become the latest row."""
    write(tied.backend, tied.pending_last, REGISTERED, TIE)
    assert statuses(tied.backend.get_history(InvocationId(tied.pending_last))) == [
        "registered",
        "pending",
    ]
    with psycopg.connect(tied.url) as conn:
        row = conn.execute(
            "SELECT status FROM pynenc_invocation_status WHERE app_id = %s AND invocation_id = %s",
            (APP_ID, tied.pending_last),
        ).fetchone()
    assert row == ("pending",)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 100])
def test_time_range_iteration_follows_write_order_across_batches(
    tied: Tied, batch_size: int
) -> None:
    write(
        tied.backend, tied.pending_last, InvocationStatus.RUNNING, TIE + timedelta(microseconds=1)
    )
    batches = list(
        tied.backend.iter_history_in_timerange(
            TIE - timedelta(seconds=1), TIE + timedelta(seconds=1), batch_size
        )
    )
    rows = [(h.invocation_id, h.status_record.status.value) for b in batches for h in b]
    assert len(rows) == 5, "every row once, none skipped or repeated at a batch boundary"
    assert len(set(rows)) == 5
    per_invocation: dict[str, list[str]] = {}
    for invocation_id, status in rows:
        per_invocation.setdefault(invocation_id, []).append(status)
    assert per_invocation == {
        tied.pending_last: ["registered", "pending", "running"],
        tied.registered_last: ["pending", "registered"],
    }
    assert rows[-1] == (tied.pending_last, "running")


def test_status_view_and_timeline_take_the_last_written_row(tied: Tied) -> None:
    with psycopg.connect(tied.url) as conn:
        current = dict(
            conn.execute(
                "SELECT invocation_id, status FROM pynenc_invocation_status WHERE app_id = %s",
                (APP_ID,),
            ).fetchall()
        )
        timeline = conn.execute(
            "SELECT invocation_id, step, status, previous_status FROM pynenc_invocation_timeline "
            "WHERE app_id = %s ORDER BY invocation_id, step",
            (APP_ID,),
        ).fetchall()
    assert current == {tied.pending_last: "pending", tied.registered_last: "registered"}
    assert sorted(timeline) == sorted(
        [
            (tied.pending_last, 1, "registered", None),
            (tied.pending_last, 2, "pending", "registered"),
            (tied.registered_last, 1, "pending", None),
            (tied.registered_last, 2, "registered", "pending"),
        ]
    )


def test_retention_takes_the_last_written_row_as_current(tied: Tied) -> None:
    settings = DatabaseSettings(url=tied.url)
    pending = purge_invocations(settings, APP_ID, statuses=["pending"], dry_run=True)
    registered = purge_invocations(settings, APP_ID, statuses=["registered"], dry_run=True)
    assert (pending.invocations, registered.invocations) == (1, 1)

    purge_invocations(settings, APP_ID, statuses=["pending"])
    with psycopg.connect(tied.url) as conn:
        left = {
            row[0]
            for row in conn.execute(
                "SELECT invocation_id FROM pynenc_invocation WHERE app_id = %s", (APP_ID,)
            ).fetchall()
        }
    assert left == {tied.registered_last}


def test_inspect_agrees_with_the_write_order(tied: Tied) -> None:
    settings = DatabaseSettings(url=tied.url)
    listed = {s.invocation_id: s.status for s in list_invocations(settings, app_id=APP_ID)}
    assert listed == {tied.pending_last: "pending", tied.registered_last: "registered"}
    assert [s.invocation_id for s in list_invocations(settings, statuses=["pending"])] == [
        tied.pending_last
    ]
    (detail,) = invocation_detail(settings, tied.pending_last, app_id=APP_ID)
    assert detail.summary.status == "pending"
    assert [step.status for step in detail.timeline] == ["registered", "pending"]
    (detail,) = invocation_detail(settings, tied.registered_last, app_id=APP_ID)
    assert detail.summary.status == "registered"
    assert [step.status for step in detail.timeline] == ["pending", "registered"]
