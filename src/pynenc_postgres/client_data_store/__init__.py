"""PostgresClientDataStore: pynenc's client data store in PostgreSQL."""

from pynenc_postgres.client_data_store.postgres_client_data_store import PostgresClientDataStore

__all__ = ["PostgresClientDataStore"]
