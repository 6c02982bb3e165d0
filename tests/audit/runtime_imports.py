"""A process that runs pynenc tasks with our state backend, then lists what it imported.

Runners import pynenc-postgres's runtime only: neither SQLAlchemy, Alembic, the models
and views of the audit API, nor the metrics exporter and prometheus_client. Prints one
module name per line.

Usage: python -m tests.audit.runtime_imports DATABASE_URL SQLITE_PATH
"""

import sys
import threading

from pynenc import PynencBuilder

from tests.audit import tasks
from tests.waiting import wait_until

AUDIT_ONLY = ("pynenc_postgres.models", "pynenc_postgres.db.models", "pynenc_postgres.db.views")


def main(url: str, sqlite_path: str) -> None:
    app = (
        PynencBuilder()
        .sqlite(sqlite_db_path=sqlite_path)
        .postgres_state_backend(url=url)
        .thread_runner(min_threads=1, max_threads=2)
        .app_id("runtime-imports")
        .custom_config(runner_loop_sleep_time_sec=0.01, invocation_wait_results_sleep_time_sec=0.01)
        .build()
    )
    for task in tasks.ALL_TASKS:
        task.app = app
    runner = threading.Thread(target=app.runner.run, daemon=True)
    runner.start()
    try:
        invocation = tasks.add(1, 2)
        assert invocation.result == 3

        def statuses() -> list[str]:
            return [
                h.status_record.status.value
                for h in app.state_backend.get_history(invocation.invocation_id)
            ]

        # pynenc sets the orchestrator's status, which ends the wait for the result,
        # before it adds the history row of that status.
        wait_until(lambda: statuses()[-1] == "success", lambda: f"history {statuses()}")
    finally:
        app.runner.stop_runner_loop()
        runner.join()
    assert "pynenc_postgres.state_backend.postgres_state_backend" in sys.modules
    for name in sorted(sys.modules):
        if name.split(".")[0] in ("sqlalchemy", "alembic", "prometheus_client") or (
            name in AUDIT_ONLY or name.startswith("pynenc_postgres.metrics")
        ):
            print(name)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
