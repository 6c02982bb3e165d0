"""``pynenc-postgres demo`` run as a user runs it: a separate process, real worker processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

from pynenc_postgres.demo import DEMO_APP_ID

DEMO_TASKS = "pynenc_postgres.demo.tasks"


def run_demo(cwd: Path, env_overrides: dict[str, str], *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")}
    env.update(env_overrides)
    proc = subprocess.run(
        [sys.executable, "-m", "pynenc_postgres.cli", "demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def invocation_rows(url: str) -> list[tuple[str, str | None, str, int, str | None]]:
    """(task, parent task, final status, retries, error name) of the demo's invocations."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            """
            WITH last AS (
                SELECT DISTINCT ON (invocation_id) invocation_id, status
                FROM pynenc_invocation_history WHERE app_id = %(app)s
                ORDER BY invocation_id, recorded_at DESC, write_order DESC, status DESC
            ), retries AS (
                SELECT invocation_id, count(*) AS n FROM pynenc_invocation_history
                WHERE app_id = %(app)s AND status = 'retry' GROUP BY invocation_id
            )
            SELECT i.task_id, p.task_id, last.status, coalesce(retries.n, 0)::int, e.error_name
            FROM pynenc_invocation i
            JOIN last USING (invocation_id)
            LEFT JOIN retries USING (invocation_id)
            LEFT JOIN pynenc_invocation p
                ON p.app_id = i.app_id AND p.invocation_id = i.parent_invocation_id
            LEFT JOIN pynenc_invocation_exception e
                ON e.app_id = i.app_id AND e.invocation_id = i.invocation_id
            WHERE i.app_id = %(app)s AND i.task_id LIKE %(module)s
            ORDER BY 1, 3
            """,
            {"app": DEMO_APP_ID, "module": DEMO_TASKS + ".%"},
        ).fetchall()


EXPECTED_ROWS = sorted(
    [
        (f"{DEMO_TASKS}.add", None, "success", 0, None),
        (f"{DEMO_TASKS}.add", None, "success", 0, None),
        (f"{DEMO_TASKS}.checkout", None, "success", 0, None),
        (f"{DEMO_TASKS}.fetch_exchange_rate", None, "success", 1, None),
        (f"{DEMO_TASKS}.price_line", f"{DEMO_TASKS}.checkout", "success", 0, None),
        (f"{DEMO_TASKS}.price_line", f"{DEMO_TASKS}.checkout", "success", 0, None),
        (f"{DEMO_TASKS}.price_line", f"{DEMO_TASKS}.checkout", "success", 0, None),
        (f"{DEMO_TASKS}.validate_order", None, "failed", 0, "ValueError"),
        (f"{DEMO_TASKS}.validate_order", None, "success", 0, None),
    ],
    key=lambda row: (row[0], row[2]),
)


def assert_report(output: str) -> None:
    assert "Schema 'public' migrated to revision" in output
    assert "PersistentProcessRunner" in output
    assert "validate_order(42, items=0)  -> FAILED: ValueError: order 42 has no items" in output
    assert "fetch_exchange_rate('USD')   -> SUCCESS: 1.08" in output
    assert "checkout(1001, 3 lines)      -> SUCCESS: 3400" in output
    report = output.split("Audit report", 1)[1]
    # pynenc's own maintenance tasks may add SUCCESS rows, depending on timing.
    assert re.search(r"^\d+ invocations: 1 FAILED, \d+ SUCCESS$", report, re.MULTILINE)
    assert "└ price_line" in report
    assert "Exception of validate_order" in report
    assert "    order 42 has no items" in report
    (retried,) = [line for line in report.splitlines() if "currency=USD" in line]
    assert retried.split()[-4:-2] == ["SUCCESS", "1"], retried


def test_demo_on_configured_server_migrates_runs_and_reports(
    empty_database_url: str, tmp_path: Path
) -> None:
    output = run_demo(tmp_path, {"PYNENC__POSTGRES_URL": empty_database_url})

    assert_report(output)
    assert "embedded" not in output
    assert not (tmp_path / ".pynenc-postgres" / "embedded").exists()
    assert invocation_rows(empty_database_url) == EXPECTED_ROWS

    # A second run starts from a clean slate for its app instead of piling rows up.
    output = run_demo(tmp_path, {"PYNENC__POSTGRES_URL": empty_database_url})
    assert_report(output)
    assert invocation_rows(empty_database_url) == EXPECTED_ROWS


def test_demo_with_nothing_configured_starts_embedded_postgres(tmp_path: Path) -> None:
    output = run_demo(tmp_path, {})

    assert "Starting an embedded PostgreSQL 18 (data in .pynenc-postgres/embedded/)" in output
    assert "Using PostgreSQL 18." in output
    assert "Stopping the embedded PostgreSQL" in output
    assert_report(output)
    assert (tmp_path / ".pynenc-postgres" / "embedded" / "PG_VERSION").read_text().strip() == "18"
    assert (tmp_path / ".pynenc-postgres" / "demo.sqlite3").exists()
