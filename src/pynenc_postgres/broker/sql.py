"""Every statement the broker runs, written once per Postgres schema.

Routing inserts and notifies in one statement, so the ``NOTIFY`` is delivered exactly
when the rows are committed and visible. Claiming is one ``DELETE`` whose subquery
locks the head of the queue with ``FOR UPDATE SKIP LOCKED``: concurrent consumers take
different rows and never wait for each other, and a row is gone once it is returned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.notify import MAX_CHANNEL_BYTES
from pynenc_postgres.db.sql import qualified

RUNNABLE_STATUSES: tuple[str, ...] = tuple(
    status.value for status in InvocationStatus if status.is_available_for_run()
)
"""Statuses from which pynenc runs an invocation taken from the queue."""


@dataclass(frozen=True)
class BrokerSql:
    """SQL text for one schema; parameters use psycopg's ``%s`` placeholders."""

    channel: str
    route_one: str
    route_many: str
    claim: str
    claim_relaxed: str
    count: str
    purge_app: str


def channel_name(schema: str) -> str:
    """The ``NOTIFY`` channel of the broker in ``schema`` (channels are per database)."""
    channel = f"pynenc_broker.{schema}"
    if len(channel.encode()) <= MAX_CHANNEL_BYTES:
        return channel
    return f"pynenc_broker.{hashlib.sha256(schema.encode()).hexdigest()[:40]}"


@cache
def statements(schema: str) -> BrokerSql:
    """Render the statements for ``schema`` (cached: built once per process and schema)."""
    queue = qualified(schema, t.BROKER_MESSAGE)
    orch = qualified(schema, t.ORCHESTRATOR_INVOCATION)
    # The status change that follows a claim is a separate statement: the claim stamps
    # when it took a runnable invocation, so that one left behind by a worker that
    # stopped in between can be found without reading the whole queue (the orchestrator
    # routes it again). With an orchestrator elsewhere there is no row to stamp.
    claim = f"""
            WITH claimed AS (
                DELETE FROM {queue}
                WHERE app_id = %s AND message_id = (
                    SELECT message_id FROM {queue}
                    WHERE app_id = %s AND queue_name = %s
                    ORDER BY priority DESC, message_id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED)
                RETURNING app_id, invocation_id
            ), traced AS (
                UPDATE {orch} o SET taken_at = clock_timestamp()
                FROM claimed c
                WHERE o.app_id = c.app_id AND o.invocation_id = c.invocation_id
                  AND o.status = ANY('{{{",".join(RUNNABLE_STATUSES)}}}'::text[])
            )
            SELECT c.invocation_id"""
    return BrokerSql(
        channel=channel_name(schema),
        # A data-modifying WITH runs to completion whether or not it is read.
        route_one=f"""
            WITH routed AS (
                INSERT INTO {queue} (app_id, queue_name, priority, invocation_id)
                VALUES (%s, %s, %s, %s)
            )
            SELECT pg_notify(%s, %s)""",
        # Identity values follow the array's order: routing order is claim order.
        route_many=f"""
            WITH routed AS (
                INSERT INTO {queue} (app_id, queue_name, priority, invocation_id)
                SELECT %s, %s, %s, u.invocation_id
                FROM unnest(%s::text[]) WITH ORDINALITY AS u(invocation_id, n)
                ORDER BY u.n
            )
            SELECT pg_notify(%s, %s)""",
        claim=f"{claim} FROM claimed c",
        # The same claim with its own synchronous_commit: set_config(..., true) lasts
        # until the statement's implicit commit, and "the behavior for any one transaction
        # is determined by the setting in effect when it commits" (Postgres docs). It is
        # evaluated only when a row was taken.
        claim_relaxed=f"{claim}, set_config('synchronous_commit', %s, true) FROM claimed c",
        count=f"""
            SELECT count(*) FROM {queue} WHERE app_id = %s AND queue_name = ANY(%s::text[])""",
        purge_app=f"DELETE FROM {queue} WHERE app_id = %s",
    )
