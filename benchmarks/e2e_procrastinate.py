"""procrastinate's side of the end-to-end and submit benchmarks: its app and its tiny task.

procrastinate (https://procrastinate.readthedocs.io) is the Postgres-native task queue a
Python team would pick instead of pynenc on Postgres. It is installed only in the
benchmarks' environment (``benchmarks/requirements.txt``), never as a dependency of the
package. Its worker processes import this module and read the database URL from
``PROCRASTINATE_BENCH_URL``.
"""

from __future__ import annotations

import os

import procrastinate

from pynenc_postgres.db.settings import libpq_url

URL_ENV = "PROCRASTINATE_BENCH_URL"
QUEUE = "default"

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=libpq_url(os.environ.get(URL_ENV, "")))
)


@app.task(queue=QUEUE)
def tiny(x: int) -> int:
    """The same tiny task as pynenc's (``benchmarks.e2e_app.tiny``)."""
    return x


def work(concurrency: int) -> None:
    """One worker process: ``concurrency`` jobs at a time, until SIGTERM."""
    app.run_worker(queues=[QUEUE], concurrency=concurrency, install_signal_handlers=True)
