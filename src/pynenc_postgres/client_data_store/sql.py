"""Every statement the client data store runs, written once per Postgres schema.

Keys are hashes of the content, so a key that is already stored already holds this
value: storing it again never rewrites the value. It only moves ``stored_at`` forward
once that is a minute old, so that retention, which removes values nothing refers to
any more, keeps one that a new invocation is about to refer to (see
:mod:`pynenc_postgres.retention.purge`). Updating only ``stored_at`` keeps the large
value's TOAST data as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.sql import qualified


@dataclass(frozen=True)
class ClientDataSql:
    """SQL text for one schema; ``%b`` sends a value in binary, not as hex text."""

    store: str
    retrieve: str
    purge_app: str


@cache
def statements(schema: str) -> ClientDataSql:
    """Render the statements for ``schema`` (cached: built once per process and schema)."""
    data = qualified(schema, t.CLIENT_DATA)
    return ClientDataSql(
        store=f"""
            INSERT INTO {data} AS d (app_id, data_key, data_value) VALUES (%s, %s, %b)
            ON CONFLICT (app_id, data_key) DO UPDATE SET stored_at = now()
            WHERE d.stored_at < now() - interval '1 minute'""",
        retrieve=f"SELECT data_value FROM {data} WHERE app_id = %s AND data_key = %s",
        purge_app=f"DELETE FROM {data} WHERE app_id = %s",
    )
