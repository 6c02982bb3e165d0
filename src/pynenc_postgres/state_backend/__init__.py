"""The PostgreSQL state backend."""

from pynenc_postgres.state_backend.postgres_state_backend import PostgresStateBackend

__all__ = ["PostgresStateBackend"]
