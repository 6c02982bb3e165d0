"""A worker process that starts ``stuck`` and hangs in it until it is killed.

Killing it with SIGKILL leaves the invocation RUNNING in the database, and the atomic
service held by a dead runner, exactly as a crashed worker does.

Usage: python -m tests.audit.stuck_worker DATABASE_URL SQLITE_PATH APP_ID
"""

import sys
import threading

from pynenc import PynencBuilder
from pynenc.orchestrator.atomic_service import AtomicServiceRun

from tests.audit import tasks


def main(url: str, sqlite_path: str, app_id: str) -> None:
    app = (
        PynencBuilder()
        .sqlite(sqlite_db_path=sqlite_path)
        .postgres_state_backend(url=url)
        .thread_runner(min_threads=1, max_threads=2)
        .app_id(app_id)
        # The seed's orchestrator (tests.audit.conftest.ORCHESTRATOR_CLS).
        .custom_config(runner_loop_sleep_time_sec=0.01, orchestrator_cls="PostgresOrchestrator")
        .build()
    )
    for task in tasks.ALL_TASKS:
        task.app = app
    invocation = tasks.stuck()
    # The worker also holds the atomic service when it dies, as a crashed holder does.
    app.orchestrator.record_atomic_service_execution_start(
        AtomicServiceRun(runner_id=app.runner.runner_id), None
    )
    print(invocation.invocation_id, flush=True)
    runner = threading.Thread(target=app.runner.run, daemon=True)
    runner.start()
    runner.join()


if __name__ == "__main__":
    main(*sys.argv[1:4])
