"""PostgreSQL plugin for pynenc: durable, migratable, auditable task state."""

from pynenc_postgres.db.errors import (
    PostgresConfigError,
    PostgresPluginError,
    PostgresUnavailableError,
    SchemaAheadError,
    SchemaBehindError,
    SchemaMissingError,
)

__all__ = [
    "PostgresConfigError",
    "PostgresPluginError",
    "PostgresUnavailableError",
    "SchemaAheadError",
    "SchemaBehindError",
    "SchemaMissingError",
]
