"""The one purge call the retention benchmarks measure.

``retention_volume`` and ``soak`` call :func:`purge_finished` and nothing else: the
project's whole purge (:func:`pynenc_postgres.retention.purge_invocations`), which removes
each batch of invocations from every component's table in one transaction, as the
command line and the scheduled run do.
"""

from __future__ import annotations

from datetime import timedelta

from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention import purge_invocations

BATCH = 1000
"""Invocations per transaction."""


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
    return dict(report.rows)
