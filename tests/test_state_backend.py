"""Behaviour of PostgresStateBackend beyond pynenc's own suites, checked in Postgres itself."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.app_info import AppInfo
from pynenc.call import Call
from pynenc.identifiers.invocation_id import InvocationId
from pynenc.identifiers.task_id import TaskId
from pynenc.invocation import DistributedInvocation, InvocationStatus, InvocationStatusRecord
from pynenc.runner.runner_context import RunnerContext
from pynenc.state_backend.base_state_backend import InvocationHistory
from pynenc.workflow.workflow_identity import WorkflowIdentity
from pynenc_tests.conftest import MockPynenc
from sqlalchemy.engine import make_url

from pynenc_postgres.db.models import STATE_TABLES
from pynenc_postgres.state_backend import PostgresStateBackend
from tests.conftest import PostgresServer

mock_app = MockPynenc()


@mock_app.task
def add(a: int, b: int) -> int:
    return a + b


def build_app(url: str, app_id: str) -> Pynenc:
    return PynencBuilder().memory().app_id(app_id).postgres_state_backend(url=url).build()


def rows_per_table(url: str, app_id: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(
                f"SELECT count(*) FROM {table} WHERE app_id = %s", (app_id,)
            ).fetchone()[0]  # type: ignore[index]
            for table in STATE_TABLES
        }


def fill_every_table(app: Pynenc, label: str) -> None:
    """Write at least one row of ``app`` into every table, through the public API."""
    backend = app.state_backend
    add.app = app
    workflow = WorkflowIdentity(InvocationId(f"wf-{label}"), TaskId("mod", "flow"))
    invocation = DistributedInvocation.isolated(Call(add, arguments=None))
    backend.upsert_invocations([invocation])
    ctx = RunnerContext(runner_cls="TestRunner", runner_id=f"runner-{label}")
    backend.add_history(
        invocation.invocation_id, InvocationStatusRecord(InvocationStatus.REGISTERED), ctx
    )
    # A final status also adds to the app's history totals (pynenc_history_counter).
    backend.add_history(
        invocation.invocation_id, InvocationStatusRecord(InvocationStatus.SUCCESS), ctx
    )
    backend.set_result(invocation.invocation_id, 3)
    backend.set_exception(invocation.invocation_id, ValueError(label))
    backend.store_workflow_run(workflow)
    backend.set_workflow_data(workflow, "key", {"label": label})
    backend.store_workflow_sub_invocation(workflow.workflow_id, invocation.invocation_id)
    backend.store_app_info(AppInfo.from_app(app))


def test_purge_removes_one_app_and_leaves_the_other_untouched(database_url: str) -> None:
    app_a = build_app(database_url, "purge-a")
    app_b = build_app(database_url, "purge-b")
    fill_every_table(app_a, "a")
    fill_every_table(app_b, "b")
    before_b = rows_per_table(database_url, "purge-b")
    assert all(count > 0 for count in rows_per_table(database_url, "purge-a").values())
    assert all(count > 0 for count in before_b.values())

    app_a.state_backend.purge()

    assert rows_per_table(database_url, "purge-a") == dict.fromkeys(STATE_TABLES, 0)
    assert rows_per_table(database_url, "purge-b") == before_b


def test_app_info_never_stores_the_password(
    database_url: str, postgres_server: PostgresServer
) -> None:
    if postgres_server.password:  # the server requires it: the URL already carries it
        secret, with_password = quote(postgres_server.password, safe=""), database_url
    else:
        secret = "s3cr3t-Pa55"
        url = make_url(database_url).set(password=secret)
        with_password = url.render_as_string(hide_password=False)
    assert f":{secret}@" in with_password
    app = build_app(with_password, "no-password")
    app.state_backend.store_app_info(AppInfo.from_app(app))
    with psycopg.connect(database_url) as conn:
        dumped = conn.execute("SELECT * FROM pynenc_app_info").fetchall()
    assert dumped, "app info was not stored"
    assert secret not in repr(dumped)
    assert unquote(secret) not in repr(dumped)
    stored = json.loads(dumped[0][2])
    assert stored["config_values"]["postgres_url"].startswith("postgresql://postgres@")


DISCOVER_CHILD = """
import sys
from pynenc import PynencBuilder
app = PynencBuilder().memory().app_id(sys.argv[2]).postgres_state_backend(url=sys.argv[1]).build()
app.state_backend  # registering the app stores its info
"""


def test_discover_app_infos_finds_apps_written_by_other_processes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for app_id in ("discovered-one", "discovered-two"):
        subprocess.run(
            [sys.executable, "-c", DISCOVER_CHILD, database_url, app_id],
            check=True,
            env={k: v for k, v in os.environ.items() if k != "PYNENC__POSTGRES_URL"},
        )
    monkeypatch.setenv("PYNENC__POSTGRES_URL", database_url)

    discovered = PostgresStateBackend.discover_app_infos()

    assert {"discovered-one", "discovered-two"} <= set(discovered)
    assert discovered["discovered-one"].app_id == "discovered-one"


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        ("50%", {"runner_50%_done"}),
        ("_x_", {"a_x_b"}),
        ("%", {"runner_50%_done"}),
        ("_", {"runner_50%_done", "runner_5000_done", "a_x_b"}),
        ("a_b", set()),
        ("\\", {"back\\slash"}),
        ("axb", {"axb"}),
    ],
)
def test_runner_context_matching_treats_wildcards_literally(
    database_url: str, partial: str, expected: set[str]
) -> None:
    backend = build_app(database_url, "matching").state_backend
    for runner_id in ("runner_50%_done", "runner_5000_done", "a_x_b", "axb", "back\\slash"):
        backend.store_runner_context(RunnerContext(runner_cls="R", runner_id=runner_id))
    backend._runner_context_cache.clear()

    found = {ctx.runner_id for ctx in backend.get_matching_runner_contexts(partial)}

    assert found == expected


def test_runner_contexts_come_back_with_their_parent_chain(database_url: str) -> None:
    backend = build_app(database_url, "chains").state_backend
    root = RunnerContext(runner_cls="ProcessRunner", runner_id="root")
    child = RunnerContext(runner_cls="Worker", runner_id="child", parent_ctx=root)
    backend.store_runner_context(child)
    backend._runner_context_cache.clear()

    (found,) = backend.get_matching_runner_contexts("chil")

    assert found.parent_ctx is not None
    assert found.parent_ctx.runner_id == "root"
    assert found.parent_ctx.runner_cls == "ProcessRunner"


@pytest.fixture
def history_in_many_batches(database_url: str) -> Iterator[tuple[PostgresStateBackend, datetime]]:
    backend = build_app(database_url, "timerange").state_backend
    base = datetime(2026, 3, 1, tzinfo=UTC)
    statuses = [InvocationStatus.REGISTERED, InvocationStatus.RUNNING, InvocationStatus.SUCCESS]
    for i in range(250):
        for j, status in enumerate(statuses):
            history = InvocationHistory(
                invocation_id=f"inv-{i:04d}",
                status_record=InvocationStatusRecord(status),
                runner_context_id="r",
            )
            # Many rows share a timestamp, so ordering must not rely on time alone.
            history._timestamp = base + timedelta(seconds=i // 10, microseconds=j)
            backend._add_histories([InvocationId(f"inv-{i:04d}")], history)
    yield backend, base


def test_iter_history_in_timerange_returns_every_row_once_in_order(
    history_in_many_batches: tuple[PostgresStateBackend, datetime],
) -> None:
    backend, base = history_in_many_batches
    batches = list(backend.iter_history_in_timerange(base, base + timedelta(hours=1), 7))
    rows = [(h.timestamp, h.invocation_id, h.status_record.status) for b in batches for h in b]

    assert len(batches) == -(-750 // 7)
    assert all(len(batch) == 7 for batch in batches[:-1])
    assert len(rows) == 750
    assert len(set(rows)) == 750
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


def test_iter_history_in_timerange_excludes_rows_outside_the_range(
    history_in_many_batches: tuple[PostgresStateBackend, datetime],
) -> None:
    backend, base = history_in_many_batches
    start, end = base + timedelta(seconds=5), base + timedelta(seconds=9)
    rows = [h for batch in backend.iter_history_in_timerange(start, end, 11) for h in batch]

    assert rows
    assert all(start <= h.timestamp <= end for h in rows)
    # seconds 5..9 inclusive hold invocations 50..99 (the row at 9s + 0 µs is the last one)
    assert {h.invocation_id for h in rows} == {f"inv-{i:04d}" for i in range(50, 100)}


def test_iter_invocations_in_timerange_returns_each_id_once(
    history_in_many_batches: tuple[PostgresStateBackend, datetime],
) -> None:
    backend, base = history_in_many_batches
    batches = list(backend.iter_invocations_in_timerange(base, base + timedelta(hours=1), 13))
    ids = [inv_id for batch in batches for inv_id in batch]

    assert len(ids) == 250
    assert ids == sorted(set(ids))
    assert all(len(batch) == 13 for batch in batches[:-1])


def test_naive_datetimes_are_treated_as_utc(database_url: str) -> None:
    backend = build_app(database_url, "naive").state_backend
    history = InvocationHistory(
        invocation_id="naive-inv",
        status_record=InvocationStatusRecord(InvocationStatus.RUNNING),
        runner_context_id="r",
    )
    history._timestamp = datetime(2026, 5, 1, 12, 0, 0, 123456)
    backend._add_histories([InvocationId("naive-inv")], history)

    (stored,) = backend.get_history(InvocationId("naive-inv"))
    (found,) = next(
        backend.iter_history_in_timerange(
            datetime(2026, 5, 1, 12, 0, 0, 123456), datetime(2026, 5, 1, 12, 0, 0, 123456)
        )
    )

    assert stored.timestamp == datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert found.invocation_id == "naive-inv"


def test_resent_history_row_is_a_no_op(database_url: str) -> None:
    backend = build_app(database_url, "resend").state_backend
    history = InvocationHistory(
        invocation_id="resent",
        status_record=InvocationStatusRecord(InvocationStatus.RUNNING),
        runner_context_id="r",
    )
    backend._add_histories([InvocationId("resent")], history)
    backend._add_histories([InvocationId("resent")], history)

    assert len(backend.get_history(InvocationId("resent"))) == 1


def test_upsert_keeps_the_last_version_of_an_invocation_in_one_batch(database_url: str) -> None:
    app = build_app(database_url, "last-wins")
    add.app = app
    invocation = DistributedInvocation.isolated(Call(add))
    parent_id = InvocationId("the-parent")
    first = (invocation.to_dto(), invocation.call.to_dto())
    later = (dataclasses.replace(first[0], parent_invocation_id=parent_id), first[1])

    app.state_backend._upsert_invocations([first, later])

    assert list(app.state_backend.get_child_invocations(parent_id)) == [invocation.invocation_id]
