"""``pynenc-postgres demo`` run as a user runs it: a separate process, real runner processes.

The demo's claims are checked against the database rows, read here with queries of
the test's own, and against the operating system's process table.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.demo import DEMO_APP_ID, demo_environment
from pynenc_postgres.demo.workers import group_alive, running_workers

DEMO_TASKS = "pynenc_postgres.demo.tasks"
DEMO_COMMAND = [sys.executable, "-m", "pynenc_postgres.cli", "demo"]
# A hang guard only: the demo finishes in seconds, a stuck one fails instead of blocking.
HANG_GUARD_SEC = 240


def demo_env(env_overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")}
    env.update(env_overrides)
    return env


def run_demo(cwd: Path, env_overrides: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [*DEMO_COMMAND, *args],
        cwd=cwd,
        env=demo_env(env_overrides),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SEC,
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


def running_rows(url: str) -> list[tuple[str, str, str, str, int, str | None, str | None]]:
    """Each RUNNING change of a demo task, with the runner context that wrote it.

    (invocation id, task, runner id, hostname, pid, runner class, class of the
    runner the context is a worker of).
    """
    with psycopg.connect(url) as conn:
        return conn.execute(
            """
            SELECT h.invocation_id, i.task_id, c.runner_id, c.hostname, c.pid::int,
                   c.runner_cls, parent.runner_cls
            FROM pynenc_invocation_history h
            JOIN pynenc_invocation i USING (app_id, invocation_id)
            JOIN pynenc_runner_context c USING (app_id, runner_id)
            LEFT JOIN pynenc_runner_context parent
                ON parent.app_id = c.app_id AND parent.runner_id = c.parent_runner_id
            WHERE h.app_id = %(app)s AND h.status = 'running' AND i.task_id LIKE %(module)s
            ORDER BY h.recorded_at, h.write_order
            """,
            {"app": DEMO_APP_ID, "module": DEMO_TASKS + ".%"},
        ).fetchall()


def runner_context_pids(url: str) -> set[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pynenc_runner_context WHERE app_id = %s AND hostname = %s",
            (DEMO_APP_ID, socket.gethostname()),
        ).fetchall()
    return {int(pid) for (pid,) in rows}


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

REPORT_LINE = re.compile(
    r"^(?P<invocation>[0-9a-f]{8})\s+(?:└ )?(?P<task>\w+)\s.*?"
    r"(?P<status>SUCCESS|FAILED)\s+(?P<retries>\d+)\s+(?:\d+ ms|-)\s+"
    r"(?P<host>\S+)\s+(?P<runner>[0-9a-f]{8}|-)$"
)


def report_lines(output: str) -> dict[str, dict[str, str]]:
    """The invocation table of the report, by the invocation id's first 8 characters."""
    report = output.split("Audit report", 1)[1]
    lines = {}
    for line in report.splitlines():
        if match := REPORT_LINE.match(line.strip()):
            lines[match["invocation"]] = match.groupdict()
    return lines


def worker_pids(output: str) -> list[int]:
    """The runner processes that the demo says it started."""
    return [int(pid) for pid in re.findall(r"worker-\d+: pid (\d+),", output)]


def assert_report(output: str) -> None:
    assert "Schema 'public' migrated to revision" in output
    for component in (
        "PostgresStateBackend",
        "PostgresBroker",
        "PostgresOrchestrator",
        "PostgresTrigger",
        "PostgresClientDataStore",
    ):
        assert component in output
    assert "SQLite" not in output
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
    assert retried.split()[-6:-4] == ["SUCCESS", "1"], retried


def assert_report_names_the_runners_in_the_database(output: str, url: str) -> None:
    """Every invocation's host and runner in the report are those of its RUNNING row."""
    ran = running_rows(url)
    lines = report_lines(output)
    latest_run: dict[str, tuple[str, str]] = {}
    for invocation_id, _task, runner_id, hostname, *_ in ran:
        latest_run[invocation_id[:8]] = (hostname, runner_id[:8])
    demo_invocations = {invocation_id[:8] for invocation_id, *_ in ran}
    assert demo_invocations <= lines.keys(), output
    for short_id in demo_invocations:
        assert (lines[short_id]["host"], lines[short_id]["runner"]) == latest_run[short_id]

    # Runner contexts were written by processes on this machine, by the worker processes
    # of pynenc's PersistentProcessRunner.
    assert {hostname for _, _, _, hostname, *_ in ran} == {socket.gethostname()}
    assert {parent_cls for *_, parent_cls in ran} == {"PersistentProcessRunner"}
    assert f"on 1 host ({socket.gethostname()})" in output

    # checkout waits for its price_line sub-tasks in its own worker process, so they
    # ran in other worker processes: the work was spread over more than one runner.
    runners_by_task: dict[str, set[str]] = {}
    for _, task, runner_id, *_ in ran:
        runners_by_task.setdefault(task.rsplit(".", 1)[-1], set()).add(runner_id)
    assert not runners_by_task["checkout"] & runners_by_task["price_line"]
    assert len({runner_id for _, _, runner_id, *_ in ran}) >= 2

    # The runners table of the report names worker processes of the runner processes
    # that the demo started, as their own context rows record them.
    started = worker_pids(output)
    assert len(started) == 2
    table = output.split("Runners that ran them", 1)[1].split("Exception of", 1)[0]
    # The table's rows: the lines between its ruler of dashes and the blank line after.
    body = re.split(r"^[- ]+$", table, maxsplit=1, flags=re.MULTILINE)[1].strip()
    rows = [line.split() for line in body.splitlines()]
    assert {row[0] for row in rows} == {socket.gethostname()}
    # pynenc's own recovery tasks, when a cron tick fires during the run, add runners.
    assert {row[1] for row in rows} >= {runner_id[:8] for _, _, runner_id, *_ in ran}
    assert {int(row[5]) for row in rows} <= set(started)


def assert_no_process_left(output: str, url: str) -> None:
    """Neither the runner processes nor any worker process they spawned is still alive."""
    started = worker_pids(output)
    assert started
    for pgid in started:
        assert not group_alive(pgid), f"process group {pgid} of a runner is still alive"
    for pid in runner_context_pids(url):
        assert not _is_pynenc_process(pid), f"pid {pid} of a runner context is still alive"


def _is_pynenc_process(pid: int) -> bool:
    # A pid can be reused by an unrelated process once the worker is gone.
    try:
        return b"pynenc" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_demo_on_configured_server_migrates_runs_and_reports(
    empty_database_url: str, tmp_path: Path
) -> None:
    output = run_demo(tmp_path, {"PYNENC__POSTGRES_URL": empty_database_url})

    assert_report(output)
    password = make_url(empty_database_url).password
    if password:  # the URL carries one when the test server requires it
        assert password not in output
    assert "embedded" not in output
    assert not (tmp_path / ".pynenc-postgres" / "embedded").exists()
    assert invocation_rows(empty_database_url) == EXPECTED_ROWS
    assert_report_names_the_runners_in_the_database(output, empty_database_url)
    assert_no_process_left(output, empty_database_url)

    # A second run starts from a clean slate for its app instead of piling rows up.
    output = run_demo(tmp_path, {"PYNENC__POSTGRES_URL": empty_database_url})
    assert_report(output)
    assert invocation_rows(empty_database_url) == EXPECTED_ROWS
    assert_report_names_the_runners_in_the_database(output, empty_database_url)
    assert_no_process_left(output, empty_database_url)


def test_demo_with_nothing_configured_starts_embedded_postgres(tmp_path: Path) -> None:
    output = run_demo(tmp_path, {})

    assert "Starting an embedded PostgreSQL 18 (data in .pynenc-postgres/embedded/)" in output
    assert "Using PostgreSQL 18." in output
    assert "Stopping the embedded PostgreSQL" in output
    assert_report(output)
    assert (tmp_path / ".pynenc-postgres" / "embedded" / "PG_VERSION").read_text().strip() == "18"
    for pgid in worker_pids(output):
        assert not group_alive(pgid)
    assert len(worker_pids(output)) == 2


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_demo_stops_its_runner_processes(
    empty_database_url: str, tmp_path: Path, sig: signal.Signals
) -> None:
    demo = subprocess.Popen(
        DEMO_COMMAND,
        cwd=tmp_path,
        # faulthandler: a demo that hangs is sent SIGABRT and prints where each thread is.
        env=demo_env({"PYNENC__POSTGRES_URL": empty_database_url, "PYTHONFAULTHANDLER": "1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own group, which receives the signal the way a terminal's Ctrl-C reaches
        # every process of the foreground job.
        start_new_session=True,
        # As from a terminal: a suite started as a background job inherits an ignored
        # SIGINT, which the demo would inherit in turn.
        preexec_fn=_default_sigint,
    )
    assert demo.stdout is not None
    seen: list[str] = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "Submitted" in line:
                break
        pids = worker_pids("".join(seen))
        assert len(pids) == 2, "".join(seen)
        assert all(group_alive(pgid) for pgid in pids)
        os.killpg(demo.pid, sig)
        try:
            rest, errors = demo.communicate(timeout=HANG_GUARD_SEC)
        except subprocess.TimeoutExpired:
            demo.send_signal(signal.SIGABRT)
            _, errors = demo.communicate(timeout=30)
            pytest.fail(f"the demo hung after {sig.name}; its threads:\n{errors}")
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()

    assert demo.returncode == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM), errors
    assert "Audit report" not in rest
    for pgid in pids:
        assert not group_alive(pgid), f"process group {pgid} of a runner is still alive"
    for pid in runner_context_pids(empty_database_url):
        assert not _is_pynenc_process(pid)


def test_runner_processes_are_stopped_when_the_block_fails(
    database_url: str, tmp_path: Path
) -> None:
    environment = demo_environment(database_url, DatabaseSettings(url=database_url))
    with pytest.raises(RuntimeError, match="step failed"):
        with running_workers(2, environment, tmp_path) as workers:
            pgids = [worker.pid for worker in workers]
            assert all(group_alive(pgid) for pgid in pgids)
            raise RuntimeError("step failed")

    for pgid in pgids:
        assert not group_alive(pgid)
    assert all(worker.process.returncode is not None for worker in workers)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl"
)
def test_killed_demo_leaves_no_runner_process(empty_database_url: str, tmp_path: Path) -> None:
    """SIGKILL runs no handler in the demo; the kernel's parent-death signal stops them."""
    demo = subprocess.Popen(
        DEMO_COMMAND,
        cwd=tmp_path,
        env=demo_env({"PYNENC__POSTGRES_URL": empty_database_url}),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert demo.stdout is not None
    seen: list[str] = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "Submitted" in line:
                break
    finally:
        demo.kill()
        demo.wait()
    pids = worker_pids("".join(seen))
    assert len(pids) == 2, "".join(seen)

    # The runners stop their own worker processes on SIGTERM, which takes a moment.
    deadline = time.monotonic() + HANG_GUARD_SEC
    while any(group_alive(pgid) for pgid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pgid in pids:
        assert not group_alive(pgid), f"process group {pgid} of a runner is still alive"
