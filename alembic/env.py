"""Alembic environment of pynenc-postgres.

Used both by ``alembic upgrade head`` from a checkout (alembic.ini) and by the
``pynenc-postgres db`` commands of an installed package, which hand over an open
connection in ``config.attributes["connection"]``. It never configures logging and
never depends on the current directory.

Every object goes into one Postgres schema (``postgres_schema``, default ``public``),
the version table ``pynenc_alembic_version`` included, so an application's own
``alembic_version`` and tables are never read or written.
"""

from __future__ import annotations

from sqlalchemy import Connection

from alembic import context
from pynenc_postgres.db.models import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata


def _options() -> tuple[str, int]:
    """Schema and migration ``lock_timeout`` (ms): handed over, else from pynenc config."""
    schema = config.attributes.get("schema")
    lock_timeout_ms = config.attributes.get("lock_timeout_ms")
    if schema is None or lock_timeout_ms is None:
        from pynenc_postgres.conf import ConfigPostgres

        conf = ConfigPostgres()
        schema = schema or conf.postgres_schema
        if lock_timeout_ms is None:
            lock_timeout_ms = conf.postgres_migration_lock_timeout_ms
    return str(schema), int(lock_timeout_ms)


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def _preamble(schema: str, lock_timeout_ms: int) -> list[str]:
    """Statements opening every migration transaction, online and in offline SQL."""
    statements = []
    if lock_timeout_ms > 0:
        # A migration waiting for a busy table would queue every later query behind it;
        # failing after the timeout leaves the application running, and it can be re-run.
        statements.append(f"SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")
    if schema != "public":
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}")
    # Migrations name no schema; the search path puts every object in ours.
    statements.append(f"SET LOCAL search_path TO {_quoted(schema)}")
    return statements


def _configure(schema: str, **kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        compare_type=True,
        # Only our own tables: a shared database also holds the application's tables.
        include_name=_include_name,
        **kwargs,  # type: ignore[arg-type]
    )


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "table":
        return bool(name) and str(name).startswith("pynenc_") and name != VERSION_TABLE
    return True


def run_offline() -> None:
    schema, lock_timeout_ms = _options()
    _configure(schema, dialect_name="postgresql", literal_binds=True)
    with context.begin_transaction():
        for statement in _preamble(schema, lock_timeout_ms):
            context.execute(statement)
        context.run_migrations()


def _run_on(connection: Connection, schema: str, lock_timeout_ms: int) -> None:
    for statement in _preamble(schema, lock_timeout_ms):
        connection.exec_driver_sql(statement)
    # Autogenerate compares the models (which name no schema) with the default schema.
    connection.dialect.default_schema_name = schema
    _configure(schema, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    schema, lock_timeout_ms = _options()
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection, schema, lock_timeout_ms)
        return
    # `alembic ...` from a checkout: the URL comes from pynenc config, and the same
    # advisory lock as `pynenc-postgres db` and auto-migrate serializes migrations.
    from pynenc_postgres.conf import ConfigPostgres
    from pynenc_postgres.db.schema import migration_connection
    from pynenc_postgres.db.settings import DatabaseSettings

    settings = DatabaseSettings.from_config(ConfigPostgres())
    with migration_connection(settings) as conn:
        _run_on(conn, schema, lock_timeout_ms)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
