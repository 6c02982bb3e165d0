"""The Python forms of docs/audit.md: same rows as their SQL, typed, async, read-only.

Each form runs next to its SQL in one transaction (so ``now()`` is the same instant
for both) against a database filled by real pynenc runs.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, create_engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from pynenc_postgres.models import AppInfo, Invocation
from tests.audit.conftest import APP_A, APP_B, Seed, all_rows
from tests.audit.cookbook import (
    cookbook,
    python_blocks,
    python_query,
    python_values,
    recipe,
    render,
    variables,
)
from tests.audit.test_roles import Roles, roles  # noqa: F401 - the auditor role fixture

Rows = list[tuple[Any, ...]]
REPO = Path(__file__).resolve().parents[2]
# Recipe blocks of the page that are not cookbook forms, and what each must define.
RECIPES = {
    "failed_invocations": ("failed_invocations", "print_failures"),
    "async_session": ("failed_invocations_async",),
    "export_csv": ("export_csv",),
    "export_pandas": ("to_dataframe",),
}


def cases(seed: Seed) -> dict[str, list[dict[str, str]]]:
    """Values each cookbook question is asked with (at least one case returns rows)."""
    a, b = {"app_id": APP_A}, {"app_id": APP_B}
    return {
        "failures_last_hour": [a, b],
        "invocation_timeline": [
            {**a, "invocation_id": seed.ids[name]} for name in ("flaky", "divide_zero", "stuck")
        ],
        "retried_invocations": [a, b],
        "slowest_tasks": [a, b],
        "stuck_running": [{**a, "minutes": "0"}, {**a, "minutes": "60"}],
        "workflow_with_sub_invocations": [{**a, "workflow_id": seed.ids["pipeline"]}],
        "runner_activity": [{**a, "runner_id": seed.runner_a}, {**b, "runner_id": seed.runner_a}],
        "runners_of_app": [a, b],
        "volume_per_app_and_day": [{}],
        "status_counts": [a, b],
        "call_tree": [
            {**a, "invocation_id": seed.ids["pipeline"]},
            {**a, "invocation_id": seed.ids["divide_zero"]},
        ],
        "recent_trigger_runs": [a, b],
        "orchestrator_status_counts": [a, b],
        "live_runners": [{**a, "minutes": "10"}, {**a, "minutes": "0"}, {**b, "minutes": "10"}],
        "atomic_service_holder": [a, b],
        "recoverable_running": [
            {**a, "minutes": "0"},
            {**a, "minutes": "10"},
            {**b, "minutes": "0"},
        ],
    }


# Columns computed from now(), by question: they differ between two transactions.
MOVES_WITH_NOW: dict[str, tuple[int, ...]] = {
    "stuck_running": (3,),  # running_for
    "orchestrator_status_counts": (2,),  # longest_in_status
    "live_runners": (3,),  # heartbeat_age
    "atomic_service_holder": (3, 4),  # held_for, holder_heartbeat_age
    "recoverable_running": (3, 4),  # running_for, owner_silent_for
}


def steady(name: str, row: Any) -> list[Any]:
    """The values of a row that do not move with now()."""
    moving = MOVES_WITH_NOW.get(name, ())
    return [value for index, value in enumerate(row) if index not in moving]


def sqlalchemy_url(url: str, driver: str = "postgresql+psycopg") -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@pytest.fixture
def engine(seeded_url: str) -> Iterator[Engine]:
    engine = create_engine(sqlalchemy_url(seeded_url), poolclass=NullPool)
    yield engine
    engine.dispose()


def both_forms(engine: Engine, name: str, values: dict[str, str]) -> tuple[Rows, Rows]:
    """Rows of the SQL and of the Python form of one question, in one transaction."""
    sql = cookbook()[name]
    assert variables(sql) <= set(values), f"{name} needs {variables(sql) - set(values)}"
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        cur = driver.execute(render(sql, values, driver))
        assert cur.description is not None
        sql_names = [column.name for column in cur.description]
        sql_rows = cur.fetchall()
        with Session(bind=conn) as session:
            result = session.execute(python_query(name, values))
            assert list(result.keys()) == sql_names, f"{name}: column names differ"
            python_rows = [tuple(row) for row in result]
    return sql_rows, python_rows


def test_every_cookbook_question_has_a_python_form(audit_seed: Seed) -> None:
    forms = set(python_blocks()) - {"imports"} - set(RECIPES)
    missing = set(cookbook()) - forms
    assert not missing, f"add a ```python block named like each SQL block: {sorted(missing)}"
    assert forms == set(cookbook()), f"Python blocks without SQL: {sorted(forms - set(cookbook()))}"
    assert set(cases(audit_seed)) == set(cookbook())
    assert set(RECIPES) <= set(python_blocks())


@pytest.mark.parametrize("name", list(cookbook()))
def test_python_form_returns_the_rows_of_the_sql(
    name: str, audit_seed: Seed, engine: Engine
) -> None:
    returned_rows = False
    for values in cases(audit_seed)[name]:
        sql_rows, python_rows = both_forms(engine, name, values)
        assert python_rows == sql_rows, (name, values)
        returned_rows = returned_rows or bool(sql_rows)
    assert returned_rows, f"no case of {name} returned rows: the comparison proves nothing"


@pytest.mark.asyncio
async def test_python_forms_and_recipe_run_on_async_session(
    audit_seed: Seed, seeded_url: str, engine: Engine
) -> None:
    async_engine = create_async_engine(sqlalchemy_url(seeded_url), poolclass=NullPool)
    try:
        async with AsyncSession(async_engine) as session:
            for name, all_values in cases(audit_seed).items():
                for values in all_values:
                    query = python_query(name, values)
                    async_rows = [tuple(row) for row in (await session.execute(query)).all()]
                    with Session(engine) as sync_session:
                        sync_rows = [tuple(row) for row in sync_session.execute(query).all()]
                    assert [steady(name, row) for row in async_rows] == [
                        steady(name, row) for row in sync_rows
                    ], (name, values)
        failed = await recipe("async_session")["failed_invocations_async"](async_engine, APP_A)
    finally:
        await async_engine.dispose()
    # Loaded with the query: reading them after the session closed needs no I/O.
    assert {inv.invocation_id for inv in failed} == {
        audit_seed.ids[name] for name in ("divide_zero", "divide_zero_2", "parse_bad")
    }
    for invocation in failed:
        assert invocation.exception is not None
        assert [row.status for row in invocation.history][-2:] == ["running", "failed"]
        assert all(row.runner_context is not None for row in invocation.history)


def test_python_forms_run_as_the_auditor_and_writes_are_refused(
    roles: Roles,  # noqa: F811 - the fixture imported above
    audit_seed: Seed,
    seeded_url: str,
) -> None:
    before = all_rows(seeded_url)
    auditor = create_engine(sqlalchemy_url(roles.auditor_url), poolclass=NullPool)
    # One connection for the whole test, so that a SET outlives the session's commits.
    with auditor.connect() as conn, Session(bind=conn) as session:
        for name, all_values in cases(audit_seed).items():
            for values in all_values:
                session.execute(python_query(name, values)).all()
        failed = recipe("failed_invocations")["failed_invocations"](session, APP_A)
        assert len(failed) == 3

        # The role's sessions are read-only: the server refuses the flush.
        session.add(AppInfo(app_id="x", module="m", app_info_json="{}"))
        with pytest.raises(sqlalchemy.exc.InternalError) as refused:
            session.flush()
        assert isinstance(refused.value.orig, psycopg.errors.ReadOnlySqlTransaction)
        session.rollback()

        # With read-only sessions switched off, the privileges refuse every write.
        session.execute(text("SET default_transaction_read_only = off"))
        session.commit()
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"
        invocation = session.get(Invocation, (APP_A, audit_seed.ids["add"]))
        assert invocation is not None
        invocation.task_id = "rewritten"
        with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"):
            session.flush()
        session.rollback()
        with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"):
            session.execute(update(Invocation).values(task_id="rewritten"))
        session.rollback()
        session.delete(session.get(Invocation, (APP_A, audit_seed.ids["add"])))
        with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"):
            session.flush()
        session.rollback()
    auditor.dispose()
    assert all_rows(seeded_url) == before


def test_export_to_csv(audit_seed: Seed, engine: Engine, tmp_path: Path) -> None:
    export_csv = recipe("export_csv")["export_csv"]
    for name, all_values in cases(audit_seed).items():
        for index, values in enumerate(all_values):
            path = tmp_path / f"{name}-{index}.csv"
            query = python_query(name, values)
            with Session(engine) as session:
                result = session.execute(query)
                header = list(result.keys())
                expected = [
                    ["" if value is None else str(value) for value in row] for row in result
                ]
            count = export_csv(engine, query, path)
            with path.open(newline="", encoding="utf-8") as exported:
                written = list(csv.reader(exported))
            assert written[0] == header
            assert [steady(name, row) for row in written[1:]] == [
                steady(name, row) for row in expected
            ], (name, values)
            assert count == len(expected)


def test_export_to_pandas(audit_seed: Seed, engine: Engine) -> None:
    pandas = pytest.importorskip(
        "pandas", reason="pandas is an optional extra, not installed here (pip install pandas)"
    )
    to_dataframe = recipe("export_pandas")["to_dataframe"]
    values = {"app_id": APP_A, "invocation_id": audit_seed.ids["flaky"]}
    query = python_query("invocation_timeline", values)
    frame = to_dataframe(engine, query)
    assert isinstance(frame, pandas.DataFrame)
    with Session(engine) as session:
        result = session.execute(query)
        keys, rows = list(result.keys()), result.all()
    assert list(frame.columns) == keys
    assert len(frame) == len(rows) == 7
    assert list(frame["status"]) == [row.status for row in rows]
    assert list(frame["step"]) == [row.step for row in rows]
    assert frame["recorded_at"].iloc[-1] == pandas.Timestamp(rows[-1].recorded_at)


def typed_module() -> str:
    """The page's imports, forms and recipes as one module, each form in a function."""
    blocks = python_blocks()
    names = set().union(*(variables(sql) for sql in cookbook().values()))
    declared = [
        f"{name}: {type(value).__name__} = {value!r}"
        for name, value in sorted(python_values(dict.fromkeys(names, "0")).items())
    ]
    forms = [
        f"def form_{name}() -> None:\n" + textwrap.indent(blocks[name], "    ")
        for name in cookbook()
    ]
    # pandas ships no type information without pandas-stubs; its recipe is run, not checked.
    recipes = [blocks[name] for name in RECIPES if name != "export_pandas"]
    return "\n\n".join([blocks["imports"], "\n".join(declared), *forms, *recipes]) + "\n"


def mypy_strict(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    # Run outside the repository, so only --strict applies, not the project's mypy table.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache")]
        + [str(file) for file in files],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )


def test_documented_python_and_a_user_script_pass_mypy_strict(tmp_path: Path) -> None:
    documented = tmp_path / "documented_recipes.py"
    documented.write_text(typed_module())
    user_script = REPO / "tests" / "audit" / "typed_usage.py"
    checked = mypy_strict(tmp_path, documented, user_script)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The types are real: a misuse of a column or relationship is reported.
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        "from pynenc_postgres.models import Invocation, InvocationStatus\n"
        "def f(invocation: Invocation, status: InvocationStatus) -> None:\n"
        "    task: int = invocation.task_id\n"
        "    first: str = invocation.history[0].recorded_at\n"
        "    name: str = invocation.exception.error_name\n"
        "    flag: str = status.has_result\n"
    )
    refused = mypy_strict(tmp_path, misuse)
    assert refused.returncode == 1, refused.stdout
    for line in (3, 4, 5, 6):
        assert f"misuse.py:{line}: error" in refused.stdout, refused.stdout
