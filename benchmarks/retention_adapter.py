"""The one purge call the retention benchmarks measure, and where the whole purge plugs in.

``retention_volume`` and ``soak`` call :func:`purge_finished` and nothing else, so the
purge under test changes here only. Today the project's purge is
:func:`pynenc_postgres.retention.purge_invocations`, which covers the state backend's
tables; the orchestrator's rows (with their concurrency arguments and waiting edges) of
the same invocations are then removed in batches of the same size through the
``purgeable_since`` index, since the orchestrator's own ``auto_purge`` is one unbatched
statement. The whole purge of the ``retention`` package replaces both.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
from psycopg import sql

from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import purge_invocations

BATCH = 1000
"""Invocations per transaction."""

# The ids are read first, then deleted by id: a DELETE ... IN (subquery LIMIT) planned
# on stale statistics was seen scanning the whole table for a single batch.
ORCHESTRATOR_CANDIDATES = """
    SELECT invocation_id FROM pynenc_orchestrator_invocation
    WHERE app_id = %(app)s AND purgeable_since < now() - %(older)s::interval
    ORDER BY purgeable_since LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED"""

ORCHESTRATOR_BATCH = """
    WITH purged AS (
        DELETE FROM pynenc_orchestrator_invocation
        WHERE app_id = %(app)s AND invocation_id = ANY(%(ids)s)
        RETURNING invocation_id
    ), arguments AS (
        DELETE FROM pynenc_orchestrator_argument
        WHERE app_id = %(app)s AND invocation_id = ANY(%(ids)s)
    ), edges AS (
        DELETE FROM pynenc_orchestrator_waiting
        WHERE app_id = %(app)s AND (waited_invocation_id = ANY(%(ids)s)
                                    OR waiter_invocation_id = ANY(%(ids)s))
    )
    SELECT count(*) FROM purged"""


def purge_finished(
    url: str, app_id: str, older_than: timedelta, schema: str = "public"
) -> dict[str, int]:
    """Remove the app's finished invocations older than ``older_than``, in batches.

    :param url: the database (migrated to head).
    :param schema: the schema of the tables.
    :param app_id: the app whose invocations are removed.
    :param older_than: age of the final status (server clock).
    :return: rows deleted per table.
    """
    report = purge_invocations(
        DatabaseSettings(url=url, schema=schema), app_id, older_than=older_than, batch_size=BATCH
    )
    rows = dict(report.rows)
    rows["pynenc_orchestrator_invocation"] = _purge_orchestrator_rows(
        url, app_id, older_than, schema
    )
    return rows


def _purge_orchestrator_rows(url: str, app_id: str, older_than: timedelta, schema: str) -> int:
    deleted = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        while True:
            params = {"app": app_id, "older": older_than, "batch": BATCH}
            with conn.transaction():
                ids = [r[0] for r in conn.execute(ORCHESTRATOR_CANDIDATES, params)]
                if not ids:
                    return deleted
                row = conn.execute(ORCHESTRATOR_BATCH, {**params, "ids": ids}).fetchone()
            deleted += int(row[0]) if row else 0
