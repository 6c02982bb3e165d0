"""PostgreSQL plugin for pynenc: durable, migratable, auditable task state."""

# First: a machine without libpq gets an error that names the extra to install.
from pynenc_postgres.db import driver as _driver
from pynenc_postgres.db.errors import (
    PostgresConfigError,
    PostgresPluginError,
    PostgresUnavailableError,
    SchemaAheadError,
    SchemaBehindError,
    SchemaMissingError,
)

del _driver

__all__ = [
    "PostgresConfigError",
    "PostgresPluginError",
    "PostgresUnavailableError",
    "SchemaAheadError",
    "SchemaBehindError",
    "SchemaMissingError",
]
