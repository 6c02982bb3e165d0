"""A runner process that only looks at the retention schedule, as a runner's loop does.

Usage: python -m tests.retention.schedule_child DATABASE_URL RUNNER_ID SECONDS
"""

import sys
import time

from tests.retention.conftest import build


def main(url: str, runner_id: str, seconds: str) -> None:
    app = build(url, retention="1d", retention_interval="1s")
    schedule = app.orchestrator.retention
    print("ready", flush=True)
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        schedule.maybe_run(runner_id)
        time.sleep(0.005)
    schedule.wait(30)


if __name__ == "__main__":
    main(*sys.argv[1:4])
