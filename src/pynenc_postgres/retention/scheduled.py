"""The scheduled run: one runner of the cluster applies the retention policy per interval.

Runners report heartbeats from their loops; :meth:`RetentionSchedule.maybe_run` rides on
that call. It sends nothing until this process's next check is due, so the loop pays
one comparison of two floats per iteration. When the check is due it sends one
statement, which decides on the server's clock (``pynenc_retention_schedule``):

* the app's run is due: this runner claims it, the row moves one interval ahead and the
  run's record is written, all in that statement; the run itself goes on in a
  background thread of this process, so the runner's loop never waits for it;
* it is not due: the answer says in how many seconds it will be, and this process does
  not ask again before then.

Two runners that ask at the same moment both send the statement; one of them moves the
row, the other waits for the row lock and then finds it no longer due. Each interval's
retention therefore runs once in the cluster, whatever the number of runners.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg

from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import sql as retention_sql
from pynenc_postgres.retention.policy import RetentionPolicy
from pynenc_postgres.retention.purge import (
    DEFAULT_LOCK_TIMEOUT_MS,
    PurgeReport,
    Scope,
    mark_failed,
    run_purge,
)

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 60.0
"""When the claim itself fails (database unreachable), the next check waits this long,
or the interval if it is shorter."""


class RetentionSchedule:
    """This process's side of the cluster's retention schedule for one app.

    :param settings: the database.
    :param app_id: the app whose policy is applied.
    :param policy: the policy; a policy that keeps everything never sends anything.
    :param runner_dead_after: the app's ``runner_considered_dead_after_minutes``.
    :param batch_size: invocations per transaction.
    :param lock_timeout_ms: longest a batch waits for a row lock.
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        app_id: str,
        policy: RetentionPolicy,
        runner_dead_after: timedelta,
        batch_size: int = 1000,
        lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    ) -> None:
        self.settings = settings
        self.app_id = app_id
        self.policy = policy
        self.runner_dead_after = runner_dead_after
        self.batch_size = batch_size
        self.lock_timeout_ms = lock_timeout_ms
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self.last_report: PurgeReport | None = None

    def maybe_run(self, runner_id: str) -> bool:
        """Claim and start the app's retention if it is due; True when this call started it.

        Cheap when it is not time to ask: one comparison with this process's clock.
        """
        if not self.policy.enabled or time.monotonic() < self._next_check:
            return False
        with self._lock:
            if os.getpid() != self._pid:
                # A forked worker inherits the parent's state, not its thread.
                self._pid, self._thread = os.getpid(), None
            if time.monotonic() < self._next_check or self._running():
                return False
            run_id = uuid.uuid4().hex
            interval = self.policy.interval.total_seconds()
            try:
                claimed, seconds_to_due = self._claim(run_id, runner_id, interval)
            except Exception as exc:  # the loop goes on; the next check tries again
                logger.warning(
                    f"Retention of app {self.app_id}: could not check the schedule: {exc}"
                )
                self._next_check = time.monotonic() + min(interval, RETRY_AFTER_SECONDS)
                return False
            self._next_check = time.monotonic() + max(seconds_to_due, 1.0)
            if not claimed:
                return False
            self._thread = threading.Thread(
                target=self._run,
                args=(run_id,),
                name=f"pynenc-postgres-retention-{self.app_id}",
                daemon=True,
            )
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a run this process started (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _claim(self, run_id: str, runner_id: str, interval: float) -> tuple[bool, float]:
        sql = retention_sql.statements(self.settings.schema)
        params = {
            "app_id": self.app_id,
            "run_id": run_id,
            "runner_id": runner_id,
            "interval": interval,
            "policy": self.policy.describe(),
        }

        def op(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            return conn.execute(sql.claim, params).fetchone()

        row = get_database(self.settings.without_schema_changes()).run(op)
        if row is None:
            # Another runner created the app's row in the same instant: it runs.
            return False, interval
        return bool(row[0]), float(row[1])

    def _run(self, run_id: str) -> None:
        scopes = [Scope(statuses, window) for window, statuses in self.policy.groups()]
        try:
            self.last_report = run_purge(
                self.settings,
                self.app_id,
                scopes,
                policy=self.policy.describe(),
                batch_size=self.batch_size,
                lock_timeout_ms=self.lock_timeout_ms,
                runner_dead_after=self.runner_dead_after,
                run_id=run_id,
            )
        except Exception as exc:
            # A thread must not end with an exception: the record says what happened.
            logger.error(f"Retention run {run_id} of app {self.app_id} failed: {exc}")
            try:
                mark_failed(self.settings, self.app_id, run_id, f"{type(exc).__name__}: {exc}")
            except Exception as again:
                logger.error(f"Retention run {run_id}: could not record the failure: {again}")
            return
        report = self.last_report
        logger.info(
            f"Retention run {run_id} of app {self.app_id}: {report.outcome}, "
            f"{report.invocations} invocations, {report.total_rows} rows removed"
        )
