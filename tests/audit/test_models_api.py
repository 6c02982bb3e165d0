"""pynenc_postgres.models: relationships, mapped views, statement counts, runtime imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, TIMESTAMP
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, raiseload, selectinload
from sqlalchemy.pool import NullPool
from sqlalchemy.types import BigInteger, Boolean, Text, TypeEngine

import pynenc_postgres.models as api
from pynenc_postgres.db import schema, tables
from pynenc_postgres.db.models import Base
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.db.views import ViewBase
from pynenc_postgres.models import (
    Invocation,
    InvocationHistory,
    InvocationStatus,
    InvocationTimeline,
    ReadOnlyViewError,
    RunnerContext,
    RunnerStatus,
    WorkflowRun,
)
from tests.audit.conftest import APP_A, Seed

REPO = Path(__file__).resolve().parents[2]
# What an auditor's loop over invocations reads: every relationship of an invocation.
EVERYTHING = (
    selectinload(Invocation.history)
    .selectinload(InvocationHistory.runner_context)
    .selectinload(RunnerContext.parent),
    selectinload(Invocation.result),
    selectinload(Invocation.exception),
    selectinload(Invocation.parent),
    selectinload(Invocation.children),
    selectinload(Invocation.workflow).selectinload(WorkflowRun.sub_invocations),
)


def orm_engine(url: str, **options: Any) -> Engine:
    url = make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, poolclass=NullPool, **options)


@pytest.fixture
def engine(seeded_url: str) -> Iterator[Engine]:
    engine = orm_engine(seeded_url)
    yield engine
    engine.dispose()


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    """Every statement sent to the server while the block runs."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def read_everything(invocations: list[Invocation]) -> list[Any]:
    """Read every relationship an auditor's loop reads, as it would."""
    seen: list[Any] = []
    for invocation in invocations:
        seen.append((invocation.result, invocation.exception, invocation.parent))
        seen.extend(child.invocation_id for child in invocation.children)
        for change in invocation.history:
            context = change.runner_context
            seen.append((change.status, context, context.parent if context else None))
        if invocation.workflow is not None:
            seen.extend(sub.invocation_id for sub in invocation.workflow.sub_invocations)
    return seen


def test_the_public_module_exports_every_model_and_view() -> None:
    exported = {getattr(api, name) for name in api.__all__}
    missing = {mapper.class_.__name__ for mapper in Base.registry.mappers} - {
        cls.__name__ for cls in exported if isinstance(cls, type)
    }
    assert not missing, f"export these models from pynenc_postgres.models: {sorted(missing)}"
    mapped_views = {mapper.local_table.name for mapper in ViewBase.registry.mappers}
    assert mapped_views == set(tables.VIEWS), "map each view of tables.VIEWS in db/views.py"
    assert {InvocationStatus, InvocationTimeline, RunnerStatus} <= exported


_CATALOG_TYPES: dict[str, type[TypeEngine[Any]]] = {
    "text": Text,
    "boolean": Boolean,
    "bigint": BigInteger,
    "timestamp with time zone": TIMESTAMP,
    "interval": INTERVAL,
    "ARRAY": ARRAY,
}


def test_mapped_views_match_the_catalog_and_stay_out_of_autogenerate(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        for view in tables.VIEWS:
            catalog = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (view,),
            ).fetchall()
            assert catalog, f"no view {view} in the database"
            mapped = ViewBase.metadata.tables[view].columns
            assert [name for name, _ in catalog] == list(mapped.keys()), (
                f"the columns of {view} changed: map them in pynenc_postgres/db/views.py"
            )
            for name, data_type in catalog:
                assert isinstance(mapped[name].type, _CATALOG_TYPES[data_type]), (view, name)
    # The views are mapped, but not as tables of the schema.
    assert not set(tables.VIEWS) & set(Base.metadata.tables)
    assert set(ViewBase.metadata.tables) == set(tables.VIEWS)
    schema.check_autogenerate(DatabaseSettings(url=database_url))  # raises on any drift


def test_relationships_read_the_seeded_runs_like_sql(audit_seed: Seed, engine: Engine) -> None:
    ids = audit_seed.ids
    with psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(False)) as conn:
        history_sql = conn.execute(
            "SELECT invocation_id, status, recorded_at, runner_id FROM pynenc_invocation_history "
            "WHERE app_id = %s ORDER BY invocation_id, recorded_at, status",
            (APP_A,),
        ).fetchall()
        steps_sql = conn.execute(
            "SELECT sub_invocation_id FROM pynenc_workflow_sub_invocation "
            "WHERE app_id = %s AND workflow_id = %s",
            (APP_A, ids["pipeline"]),
        ).fetchall()
    with Session(engine) as session:
        invocations = session.scalars(
            select(Invocation)
            .where(Invocation.app_id == APP_A)
            .order_by(Invocation.invocation_id)
            .options(*EVERYTHING)
        ).all()
        by_id = {invocation.invocation_id: invocation for invocation in invocations}
        history_orm = [
            (change.invocation_id, change.status, change.recorded_at, change.runner_id)
            for invocation in invocations
            for change in invocation.history
        ]
        assert history_orm == [row for row in history_sql if row[0] in by_id]

        flaky = by_id[ids["flaky"]]
        assert [change.status for change in flaky.history] == [
            "registered", "pending", "running", "retry", "pending", "running", "success",
        ]  # fmt: skip
        assert (
            flaky.result is not None and "seed after 2 attempts" in flaky.result.serialized_result
        )
        assert flaky.exception is None
        failed = by_id[ids["divide_zero"]]
        assert failed.result is None
        assert failed.exception is not None and failed.exception.error_name == "ZeroDivisionError"
        assert failed.history[-1].runner_context is not None
        assert failed.history[-1].runner_context.runner_id == audit_seed.runner_a
        assert failed.history[-1].runner_context.runner_cls == "ThreadRunner"
        assert failed.history[0].invocation is failed

        pipeline = by_id[ids["pipeline"]]
        steps = pipeline.children
        assert len(steps) == 3 and {step.task_id for step in steps} == {"tests.audit.tasks.add"}
        assert all(step.parent is pipeline for step in steps)
        assert pipeline.parent is None
        assert pipeline.workflow is not None and pipeline.workflow.invocation is pipeline
        assert (
            {sub.invocation_id for sub in pipeline.workflow.sub_invocations}
            == {row[0] for row in steps_sql}
            == {step.invocation_id for step in steps}
        )
        assert [item.data_key for item in pipeline.workflow.data] == ["steps"]
        assert all(step.workflow is pipeline.workflow for step in steps)


def test_n_invocations_load_in_a_fixed_number_of_statements(
    audit_seed: Seed, engine: Engine
) -> None:
    def load(only_one: bool, *options: Any) -> tuple[int, int, int]:
        query = select(Invocation).where(Invocation.app_id == APP_A).options(*options)
        if only_one:  # a workflow step: it has a parent, a workflow, history and a result
            query = query.where(Invocation.parent_invocation_id.is_not(None)).limit(1)
        with Session(engine) as session, counted(engine) as statements:
            invocations = list(session.scalars(query))
            loaded = len(statements)
            read_everything(invocations)
            return len(invocations), loaded, len(statements)

    few, loaded_few, total_few = load(True, *EVERYTHING)
    many, loaded_many, total_many = load(False, *EVERYTHING)
    assert few == 1 and many >= 12  # 8 calls, 3 workflow steps, the stuck task
    # One statement for the invocations and at most one per relationship loaded, whatever
    # N is; reading them afterwards sends nothing.
    assert loaded_few == total_few == loaded_many == total_many
    assert total_many <= 1 + 8
    # The same loop with nothing loaded up front sends statements for each invocation.
    _, loaded_lazy, total_lazy = load(False)
    assert loaded_lazy == 1
    assert total_lazy - loaded_lazy >= 3 * many

    # raiseload("*") turns a relationship the query forgot into an error, not a query.
    with Session(engine) as session:
        invocation = session.scalars(
            select(Invocation)
            .where(Invocation.invocation_id == audit_seed.ids["add"])
            .options(selectinload(Invocation.history), raiseload("*"))
        ).one()
        assert invocation.history
        with pytest.raises(Exception, match="raise"):
            _ = invocation.result


def test_the_recipe_for_failures_loads_in_a_fixed_number_of_statements(
    audit_seed: Seed, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.audit.cookbook import recipe

    print_failures = recipe("failed_invocations")["print_failures"]
    with Session(engine) as session, counted(engine) as statements:
        print_failures(session, APP_A)
    out = capsys.readouterr().out
    for name in ("divide_zero", "divide_zero_2", "parse_bad"):
        assert audit_seed.ids[name] in out
    assert "ZeroDivisionError" in out and "ThreadRunner" in out
    # Three failures: the invocations, then history, runner contexts and exceptions
    # (parents are absent, so they cost nothing).
    assert len(statements) == 4, statements


def test_views_are_read_only_through_a_session(audit_seed: Seed, engine: Engine) -> None:
    with Session(engine) as session, counted(engine) as statements:
        row = session.get(InvocationStatus, (APP_A, audit_seed.ids["add"]))
        assert row is not None and row.status == "success" and row.has_result
        step = session.get(InvocationTimeline, (APP_A, audit_seed.ids["add"], 1))
        assert step is not None and step.status == "registered" and step.previous_status is None

        row.status = "failed"
        with pytest.raises(ReadOnlyViewError, match=r"pynenc_invocation_status.*cannot be written"):
            session.flush()
        session.rollback()
        session.delete(step)
        with pytest.raises(ReadOnlyViewError, match="pynenc_invocation_timeline"):
            session.flush()
        session.rollback()
        session.add(InvocationStatus(app_id="x", invocation_id="y", task_id="t", has_result=False))
        with pytest.raises(ReadOnlyViewError):
            session.flush()
        session.rollback()
    assert all(statement.lstrip().startswith("SELECT") for statement in statements)


def test_a_read_only_engine_refuses_writes_with_a_role_that_could_write(
    audit_seed: Seed, seeded_url: str
) -> None:
    """The documented engine option for auditing with a role that has write privileges."""
    engine = orm_engine(seeded_url, execution_options={"postgresql_readonly": True})
    with Session(engine) as session:
        invocation = session.get(Invocation, (APP_A, audit_seed.ids["add"]))
        assert invocation is not None
        invocation.task_id = "rewritten"
        with pytest.raises(sqlalchemy.exc.InternalError) as refused:
            session.flush()
        assert isinstance(refused.value.orig, psycopg.errors.ReadOnlySqlTransaction)
    engine.dispose()


def _insert(conn: psycopg.Connection, table: str, **row: Any) -> None:
    columns = ", ".join(row)
    values = ", ".join(["%s"] * len(row))
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({values})", list(row.values()))


def _twin_apps(conn: psycopg.Connection, schema_name: str = "public") -> None:
    """Two apps that use the same ids, with different rows, and history before its row."""
    t0 = "2026-01-01 00:00:00+00"
    for app in ("x", "y"):
        for inv, parent in (("wf", None), ("child", "wf")):
            _insert(
                conn, f"{schema_name}.pynenc_invocation", app_id=app, invocation_id=inv,
                task_id=f"{app}.{inv}", call_id="c", arguments_id="a", serialized_arguments="{}",
                parent_invocation_id=parent, workflow_id="wf",
            )  # fmt: skip
        _insert(
            conn, f"{schema_name}.pynenc_workflow_run", app_id=app, workflow_id="wf",
            workflow_type_key=f"{app}.wf",
        )  # fmt: skip
        _insert(
            conn, f"{schema_name}.pynenc_workflow_sub_invocation", app_id=app, workflow_id="wf",
            sub_invocation_id="child",
        )  # fmt: skip
    _insert(
        conn, f"{schema_name}.pynenc_invocation", app_id="y", invocation_id="child2",
        task_id="y.child2", call_id="c", arguments_id="a", serialized_arguments="{}",
        parent_invocation_id="wf", workflow_id="wf",
    )  # fmt: skip
    _insert(
        conn, f"{schema_name}.pynenc_workflow_sub_invocation", app_id="y", workflow_id="wf",
        sub_invocation_id="child2",
    )  # fmt: skip
    # x: thread -> process -> runner; y: the same runner id, without parents.
    for runner_id, parent in (("r-thread", "r-proc"), ("r-proc", "r-runner"), ("r-runner", None)):
        _insert(
            conn, f"{schema_name}.pynenc_runner_context", app_id="x", runner_id=runner_id,
            runner_cls=runner_id, parent_runner_id=parent, pid=1, hostname="h", thread_id=1,
        )  # fmt: skip
    _insert(
        conn, f"{schema_name}.pynenc_runner_context", app_id="y", runner_id="r-thread",
        runner_cls="OtherRunner", parent_runner_id=None, pid=2, hostname="h", thread_id=2,
    )  # fmt: skip
    # Two of x's changes share their recorded_at to the microsecond.
    for app, invocation_id, offset, status in (
        ("x", "child", "0", "registered"),
        ("x", "child", "1", "running"),
        ("x", "child", "1", "pending"),
        ("x", "child", "2", "success"),
        ("y", "child", "0", "registered"),
        ("y", "child", "3", "failed"),
        ("x", "ghost", "0", "registered"),  # history written before its invocation row
    ):
        conn.execute(
            f"INSERT INTO {schema_name}.pynenc_invocation_history (app_id, invocation_id, "
            "recorded_at, status, status_set_at, runner_id) "
            "VALUES (%s, %s, %s::timestamptz + make_interval(secs => %s::int), %s, now(), %s)",
            (app, invocation_id, t0, offset, status, "r-thread"),
        )
    _insert(
        conn, f"{schema_name}.pynenc_invocation_result", app_id="x", invocation_id="child",
        serialized_result="3",
    )  # fmt: skip
    _insert(
        conn, f"{schema_name}.pynenc_invocation_exception", app_id="y", invocation_id="child",
        error_name="ValueError", is_pynenc_error=False, serialized_exception="{}",
    )  # fmt: skip
    for key in ("k2", "k1"):
        _insert(
            conn, f"{schema_name}.pynenc_workflow_data", app_id="x", workflow_id="wf",
            data_key=key, serialized_value="1",
        )  # fmt: skip


def test_relationships_stay_within_one_app_and_need_no_row_on_the_other_side(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _twin_apps(conn)
    engine = orm_engine(database_url)
    with Session(engine) as session:
        x = session.get(Invocation, ("x", "child"))
        y = session.get(Invocation, ("y", "child"))
        assert x is not None and y is not None
        # running and pending share their recorded_at: the one inserted first comes first.
        assert [c.status for c in x.history] == ["registered", "running", "pending", "success"]
        assert [c.status for c in y.history] == ["registered", "failed"]
        assert x.result is not None and x.result.serialized_result == "3" and x.exception is None
        assert y.result is None and y.exception is not None and y.exception.app_id == "y"
        assert x.parent is not None and x.parent.task_id == "x.wf"
        assert y.parent is not None and y.parent.task_id == "y.wf"
        assert [c.task_id for c in x.parent.children] == ["x.child"]
        assert [c.task_id for c in y.parent.children] == ["y.child", "y.child2"]
        assert x.workflow is not None and x.workflow.workflow_type_key == "x.wf"
        assert [s.task_id for s in x.workflow.sub_invocations] == ["x.child"]
        assert y.workflow is not None
        assert [s.task_id for s in y.workflow.sub_invocations] == ["y.child", "y.child2"]
        assert [d.data_key for d in x.workflow.data] == ["k1", "k2"] and y.workflow.data == []

        chain = []
        context = x.history[0].runner_context
        while context is not None:
            chain.append(context.runner_cls)
            context = context.parent
        assert chain == ["r-thread", "r-proc", "r-runner"]
        y_context = y.history[0].runner_context
        assert y_context is not None and y_context.runner_cls == "OtherRunner"
        assert y_context.parent is None

        ghost = session.scalars(
            select(InvocationHistory).where(InvocationHistory.invocation_id == "ghost")
        ).one()
        assert ghost.invocation is None
    engine.dispose()


def test_the_models_read_a_configured_schema(empty_database_url: str) -> None:
    schema.upgrade(DatabaseSettings(url=empty_database_url, schema="audit_space"))
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        _twin_apps(conn, "audit_space")
    engine = orm_engine(
        empty_database_url, execution_options={"schema_translate_map": {None: "audit_space"}}
    )
    with Session(engine) as session:
        invocation = session.scalars(
            select(Invocation)
            .where(Invocation.app_id == "x", Invocation.invocation_id == "child")
            .options(selectinload(Invocation.history), selectinload(Invocation.workflow))
        ).one()
        assert [c.status for c in invocation.history][-1] == "success"
        assert invocation.workflow is not None
        status = session.get(InvocationStatus, ("x", "child"))
        assert status is not None and (status.status, status.has_result) == ("success", True)
        timeline = session.scalars(
            select(InvocationTimeline.step).where(InvocationTimeline.invocation_id == "ghost")
        ).all()
        assert timeline == [1]
    engine.dispose()


def test_the_runtime_imports_neither_sqlalchemy_nor_the_audit_api(
    database_url: str, tmp_path: Path
) -> None:
    child = subprocess.run(
        [sys.executable, "-m", "tests.audit.runtime_imports", database_url, str(tmp_path / "db")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.split() == []
