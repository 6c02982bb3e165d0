"""The app and the task that the runners on every simulated host execute.

The app is built from ``PYNENC__*`` environment variables alone, as a runner on
another machine would build it; its components are resolved by name through the
``pynenc.plugins`` entry points. The task records each execution in a side-effect
table of the test database with a plain ``INSERT``, so a test can count how many
times each call really ran, where, and over which link.
"""

from __future__ import annotations

import os
import socket
import time

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
# starting at once cannot both take the last place.
DDL = f"""
CREATE TABLE {SIDE_EFFECT_TABLE} (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    released boolean NOT NULL DEFAULT false
);
"""

_INSERT = f"""
    WITH hold AS (
        UPDATE {HOLD_TABLE} SET held = held + 1
        WHERE hostname = %s AND NOT released AND held < max_held
          AND (SELECT count(*) FROM {SIDE_EFFECT_TABLE}) >= after_executions
        RETURNING hostname
    )
    INSERT INTO {SIDE_EFFECT_TABLE}
        (n, invocation_id, runner_id, hostname, pid, client_addr, held)
    SELECT %s, %s, %s, %s, %s, inet_client_addr(), EXISTS (SELECT 1 FROM hold)
    RETURNING held"""
_STILL_HELD = f"SELECT NOT released FROM {HOLD_TABLE} WHERE hostname = %s"

_connection: psycopg.Connection[tuple[object, ...]] | None = None


def _side_effects() -> psycopg.Connection[tuple[object, ...]]:
    """This worker process's own connection to the test database (autocommit)."""
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg.connect(os.environ["PYNENC__POSTGRES_URL"], autocommit=True)
    return _connection


def expected(n: int) -> int:
    return n * 7 + 3


@app.task  # type: ignore[untyped-decorator]  # pynenc ships no type information
def record(n: int) -> int:
    """Record this execution, wait while it is held, return ``expected(n)``."""
    invocation = context.get_dist_invocation_context(record.app.app_id)
    runner = context.get_runner_context(record.app.app_id)
    hostname = socket.gethostname()
    conn = _side_effects()
    row = conn.execute(
        _INSERT,
        (
            hostname,
            n,
            str(invocation.invocation_id) if invocation else "",
            runner.runner_id if runner else "",
            hostname,
            os.getpid(),
        ),
    ).fetchone()
    held = bool(row and row[0])
    while held:
        time.sleep(0.02)
        still = conn.execute(_STILL_HELD, (hostname,)).fetchone()
        held = bool(still and still[0])
    return expected(n)
