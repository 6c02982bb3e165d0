"""The app and the task that the runners on every simulated host execute.

The app is built from ``PYNENC__*`` environment variables alone, as a runner on
another machine would build it; its components are resolved by name through the
``pynenc.plugins`` entry points. The task records each execution in a side-effect
table of the test database with a plain ``INSERT``, so a test can count how many
times each call really ran, where, and over which link.

The task's own writes ride out a server restart (``test_restart.py``): on a lost
connection it reconnects and resends. Each execution carries a random id, and a resent
insert of the same execution finds its row instead of adding one, so the table still
counts executions, not attempts.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import psycopg
from pynenc import Pynenc, context

app = Pynenc()

SIDE_EFFECT_TABLE = "multihost_side_effect"
HOLD_TABLE = "multihost_hold"

# The task's tables, created by the tests (not a migration: they are not part of the
# schema). A host in the hold table holds up to ``max_held`` of the tasks that start on
# it once ``after_executions`` executions are recorded: such a task writes its side
# effect with ``held`` true, then waits, mid-run, until the test releases the host (or
# kills it). The counter is taken by an ``UPDATE`` of the host's row, so two workers
# starting at once cannot both take the last place. Once the server has been restarted
# after ``restarted_after``, the host has ``extra_after_restart`` more places: the
# restart test holds the first task each host starts after the restart.
DDL = f"""
CREATE TABLE {SIDE_EFFECT_TABLE} (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id text NOT NULL UNIQUE,
    n integer NOT NULL,
    invocation_id text NOT NULL,
    runner_id text NOT NULL,
    hostname text NOT NULL,
    pid integer NOT NULL,
    client_addr inet,
    held boolean NOT NULL,
    ran_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE {HOLD_TABLE} (
    hostname text PRIMARY KEY,
    after_executions integer NOT NULL,
    max_held integer NOT NULL,
    held integer NOT NULL DEFAULT 0,
    released boolean NOT NULL DEFAULT false,
    restarted_after timestamptz,
    extra_after_restart integer NOT NULL DEFAULT 0
);
"""

# An execution whose row exists already (its insert committed, the reply was lost) gets
# that row's ``held`` back, and neither a second row nor a second place in the hold.
_INSERT = f"""
    WITH prior AS (
        SELECT held FROM {SIDE_EFFECT_TABLE} WHERE execution_id = %(execution_id)s
    ), hold AS (
        UPDATE {HOLD_TABLE} SET held = held + 1
        WHERE hostname = %(hostname)s AND NOT released
          AND held < max_held + CASE WHEN pg_postmaster_start_time() > restarted_after
                                     THEN extra_after_restart ELSE 0 END
          AND (SELECT count(*) FROM {SIDE_EFFECT_TABLE}) >= after_executions
          AND NOT EXISTS (SELECT 1 FROM prior)
        RETURNING hostname
    ), inserted AS (
        INSERT INTO {SIDE_EFFECT_TABLE}
            (execution_id, n, invocation_id, runner_id, hostname, pid, client_addr, held)
        SELECT %(execution_id)s, %(n)s, %(invocation_id)s, %(runner_id)s, %(hostname)s,
               %(pid)s, inet_client_addr(), EXISTS (SELECT 1 FROM hold)
        WHERE NOT EXISTS (SELECT 1 FROM prior)
        RETURNING held
    )
    SELECT held FROM inserted UNION ALL SELECT held FROM prior"""
_STILL_HELD = f"SELECT NOT released FROM {HOLD_TABLE} WHERE hostname = %(hostname)s"
# Longer than any restart the tests make; a server that stays away fails the task.
RECONNECT_SECONDS = 300.0

_connection: psycopg.Connection[tuple[object, ...]] | None = None
TASK_SESSION = "multihost-task"
"""``application_name`` of the task's own sessions (not the plugin's)."""


def _side_effects() -> psycopg.Connection[tuple[object, ...]]:
    """This worker process's own connection to the test database (autocommit)."""
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg.connect(
            os.environ["PYNENC__POSTGRES_URL"], autocommit=True, application_name=TASK_SESSION
        )
    return _connection


def _fetchone(statement: str, params: dict[str, Any]) -> tuple[object, ...] | None:
    """Run an idempotent statement, reconnecting and resending while the server restarts."""
    global _connection
    deadline = time.monotonic() + RECONNECT_SECONDS
    delay = 0.05
    while True:
        try:
            return _side_effects().execute(statement, params).fetchone()
        except psycopg.OperationalError:
            if _connection is not None:
                _connection.close()
                _connection = None
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def expected(n: int) -> int:
    return n * 7 + 3


@app.task  # type: ignore[untyped-decorator]  # pynenc ships no type information
def record(n: int) -> int:
    """Record this execution, wait while it is held, return ``expected(n)``."""
    invocation = context.get_dist_invocation_context(record.app.app_id)
    runner = context.get_runner_context(record.app.app_id)
    hostname = socket.gethostname()
    row = _fetchone(
        _INSERT,
        {
            "execution_id": uuid.uuid4().hex,
            "n": n,
            "invocation_id": str(invocation.invocation_id) if invocation else "",
            "runner_id": runner.runner_id if runner else "",
            "hostname": hostname,
            "pid": os.getpid(),
        },
    )
    held = bool(row and row[0])
    while held:
        time.sleep(0.02)
        still = _fetchone(_STILL_HELD, {"hostname": hostname})
        held = bool(still and still[0])
    return expected(n)
