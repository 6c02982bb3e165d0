"""PostgresClientDataStore: pynenc's store of large values, in PostgreSQL."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc.client_data_store.base_client_data_store import BaseClientDataStore

from pynenc_postgres.client_data_store.sql import ClientDataSql, statements
from pynenc_postgres.conf import ConfigClientDataStorePostgres
from pynenc_postgres.db import tables
from pynenc_postgres.db.component import DatabaseComponent
from pynenc_postgres.retention.purge import purge_app

if TYPE_CHECKING:
    import psycopg
    from pynenc.app import Pynenc

# "surrogatepass" keeps even a lone surrogate: every Python string round-trips.
_ENCODING = "utf-8"
_ERRORS = "surrogatepass"


class PostgresClientDataStore(DatabaseComponent, BaseClientDataStore):
    """
    Client data store that keeps pynenc's large arguments and results in PostgreSQL.

    pynenc replaces a serialized value above ``min_size_to_cache`` with a key derived
    from its content and calls :meth:`_store`; every process of every host then reads
    it back with :meth:`_retrieve`. Values are stored as UTF-8 ``bytea``, so any string
    (NUL characters included) comes back exactly, and rows are keyed by ``app_id``.

    :param Pynenc app: the pynenc application.
    """

    def __init__(self, app: Pynenc) -> None:
        super().__init__(app)

    @cached_property
    def conf(self) -> ConfigClientDataStorePostgres:
        return ConfigClientDataStorePostgres(
            config_values=self.app.config_values,
            config_filepath=self.app.config_filepath,
        )

    @cached_property
    def sql(self) -> ClientDataSql:
        return statements(self.settings.schema)

    def _store(self, key: str, value: str) -> None:
        """Store ``value`` under its content key; storing a stored key again is a no-op."""
        self._enlist()
        self.db.execute(self.sql.store, (self.app_id, key, value.encode(_ENCODING, _ERRORS)))

    def _retrieve(self, key: str) -> str:
        """The value stored under ``key``.

        :raises KeyError: nothing is stored under ``key`` for this app.
        """
        query, params = self.sql.retrieve, (self.app_id, key)

        def op(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            # Binary results: a large value crosses the wire once, not as hex text.
            with conn.cursor(binary=True) as cursor:
                return cursor.execute(query, params).fetchone()

        row = self.db.run(op)
        if row is None:
            raise KeyError(f"Key {key} not found in client data store")
        return bytes(row[0]).decode(_ENCODING, _ERRORS)

    def _purge(self) -> None:
        """Delete every stored value of this app, and nothing else."""
        purge_app(self.db, self.settings.schema, self.app_id, (tables.CLIENT_DATA,))
