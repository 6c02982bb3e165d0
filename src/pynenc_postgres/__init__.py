"""PostgreSQL plugin for pynenc: durable, migratable, auditable task state."""

# First: a machine without libpq gets an error that names the extra to install.
from pynenc_postgres.db import driver as _driver
from pynenc_postgres.db.errors import (
    InTransactionError,
    PostgresConfigError,
    PostgresPluginError,
    PostgresUnavailableError,
    SchemaAheadError,
    SchemaBehindError,
    SchemaMissingError,
    UnsupportedConnectionError,
)
from pynenc_postgres.transaction import in_transaction

del _driver

__all__ = [
    "InTransactionError",
    "PostgresConfigError",
    "PostgresPluginError",
    "PostgresUnavailableError",
    "SchemaAheadError",
    "SchemaBehindError",
    "SchemaMissingError",
    "UnsupportedConnectionError",
    "in_transaction",
]
