"""The GRANTs of docs/audit.md: a runtime role runs pynenc, an auditor only reads."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import psycopg.errors
import pytest
from pynenc import PynencBuilder
from sqlalchemy.engine import make_url

from pynenc_postgres.cli import main
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import purge_invocations
from tests.audit import tasks
from tests.audit.conftest import APP_A, ORCHESTRATOR_CLS, Seed, all_rows
from tests.audit.cookbook import blocks
from tests.audit.test_cookbook import CHECKS
from tests.conftest import PostgresServer
from tests.task_failures import expected_task_failures


@dataclass
class Roles:
    runtime_url: str
    auditor_url: str


def _as_role(url: str, role: str, password: str) -> str:
    return make_url(url).set(username=role, password=password).render_as_string(hide_password=False)


@pytest.fixture
def roles(postgres_server: PostgresServer, seeded_url: str) -> Iterator[Roles]:
    """Both roles, created by the documented statements with unique names."""
    suffix = secrets.token_hex(4)
    runtime, auditor = f"pynenc_runtime_{suffix}", f"pynenc_auditor_{suffix}"
    password = secrets.token_hex(12)
    database = make_url(seeded_url).database
    assert database
    script = blocks()["grants_runtime"] + blocks()["grants_auditor"]
    script = re.sub(r"\bpynenc_runtime\b", runtime, script)
    script = re.sub(r"\bpynenc_auditor\b", auditor, script)
    script = script.replace("'change-me'", f"'{password}'")
    script = script.replace("ON DATABASE app ", f'ON DATABASE "{database}" ')
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        conn.execute(script)
    try:
        yield Roles(
            runtime_url=_as_role(seeded_url, runtime, password),
            auditor_url=_as_role(seeded_url, auditor, password),
        )
    finally:
        dispose_all()
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {runtime}, {auditor}")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN (%s, %s)",
                (runtime, auditor),
            )
        with postgres_server.admin() as conn:
            conn.execute(f"DROP ROLE {runtime}")
            conn.execute(f"DROP ROLE {auditor}")


def test_runtime_role_runs_pynenc_with_only_row_privileges(
    roles: Roles, audit_seed: Seed, tmp_path: object
) -> None:
    app = (
        PynencBuilder()
        .sqlite(sqlite_db_path=f"{tmp_path}/runtime.sqlite")
        .postgres_state_backend(url=roles.runtime_url, auto_migrate=False)
        .thread_runner(min_threads=1, max_threads=4)
        .app_id("roles-app")
        .custom_config(
            orchestrator_cls=ORCHESTRATOR_CLS,
            runner_loop_sleep_time_sec=0.01,
            invocation_wait_results_sleep_time_sec=0.01,
            trigger_cls="PostgresTrigger",
        )
        .build()
    )
    for task in tasks.ALL_TASKS:
        task.app = app
    runner = threading.Thread(target=app.runner.run, daemon=True)
    # Only the failure the scenario causes; a privilege error in a runner thread fails.
    with expected_task_failures({(tasks.divide, ZeroDivisionError): 1}):
        runner.start()
        try:
            ok = tasks.pipeline(2)
            failing = tasks.divide(1, 0)
            assert ok.result == 0 + 2
            with pytest.raises(ZeroDivisionError):
                failing.result  # noqa: B018
        finally:
            app.runner.stop_runner_loop()
            runner.join()

    backend = app.state_backend
    statuses = [h.status_record.status.value for h in backend.get_history(ok.invocation_id)]
    assert statuses[0] == "registered" and statuses[-1] == "success"
    assert backend.get_result(ok.invocation_id) == 2
    assert list(backend.get_workflow_sub_invocations(ok.invocation_id))

    runtime = DatabaseSettings(url=roles.runtime_url)
    report = purge_invocations(runtime, "roles-app", statuses=["failed"])
    assert report.invocations == 1 and report.rows["pynenc_invocation_exception"] == 1

    # The trigger's rows too: events, claims, the valid-condition queue, its purge.
    event_id = app.trigger.emit_event("roles.event", {"k": "v"})
    assert app.trigger.get_event(event_id) is not None
    assert app.trigger.claim_trigger_run("roles-run")
    assert app.trigger.get_conditions_sourced_from_task(tasks.add.task_id) == []
    app.trigger._purge()
    assert app.trigger.get_event(event_id) is None

    backend.purge()
    with psycopg.connect(roles.runtime_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pynenc_invocation_history WHERE app_id = 'roles-app'"
        ).fetchone()
        assert row == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pynenc_invocation WHERE app_id = %s", (APP_A,)
        ).fetchone() != (0,)  # the other app's rows are still there
        # No DDL: the schema belongs to the migration owner.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE pynenc_extra (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP VIEW pynenc_invocation_status")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE pynenc_alembic_version SET version_num = version_num")


def test_auditor_reads_views_and_cookbook_and_cannot_write(
    roles: Roles, audit_seed: Seed, seeded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = all_rows(seeded_url)
    with psycopg.connect(roles.auditor_url, autocommit=True) as conn:
        for view in ("pynenc_invocation_status", "pynenc_invocation_timeline"):
            row = conn.execute(f"SELECT count(*) FROM {view}").fetchone()
            assert row is not None and row[0] > 0
        for check in CHECKS.values():
            check(conn, audit_seed)

        writes = [
            "INSERT INTO pynenc_app_info (app_id, module, app_info_json) VALUES ('x', 'm', '{}')",
            "UPDATE pynenc_invocation SET task_id = 'x'",
            "DELETE FROM pynenc_invocation_history",
            "TRUNCATE pynenc_invocation_result",
        ]
        for statement in writes:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute(statement)
        # Even with read-only sessions switched off, the privileges refuse every write.
        conn.execute("SET default_transaction_read_only = off")
        for statement in writes:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(statement)

    assert main(["inspect", "invocations", "--url", roles.auditor_url, "--app-id", APP_A]) == 0
    assert audit_seed.ids["stuck"] in capsys.readouterr().out
    assert main(["inspect", "invocation", audit_seed.ids["flaky"], "--url", roles.auditor_url]) == 0
    assert "seed after 2 attempts" in capsys.readouterr().out
    # A purge as the auditor is refused and changes nothing.
    assert main(["purge", "--url", roles.auditor_url, "--app-id", APP_A]) == 2
    assert "read-only transaction" in capsys.readouterr().err
    assert all_rows(seeded_url) == before
