"""Alembic environment of pynenc-postgres.

Used both by ``alembic upgrade head`` from a checkout (alembic.ini) and by the
``pynenc-postgres db`` commands of an installed package, which hand over an open
connection in ``config.attributes["connection"]``. It never configures logging and
never depends on the current directory.
"""

from __future__ import annotations

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from alembic import context
from pynenc_postgres.db.models import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata


def _schema() -> str:
    schema = config.attributes.get("schema")
    if schema:
        return str(schema)
    from pynenc_postgres.conf import ConfigPostgres

    return ConfigPostgres().postgres_schema


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def _configure(**kwargs: object) -> None:
    schema = _schema()
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
    schema = _schema()
    _configure(dialect_name="postgresql", literal_binds=True)
    with context.begin_transaction():
        if schema != "public":
            context.execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}")
        context.execute(f"SET LOCAL search_path TO {_quoted(schema)}")
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    schema = _schema()
    if schema != "public":
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}"))
    # Migrations name no schema; the search path puts every object in ours.
    connection.execute(text(f"SET LOCAL search_path TO {_quoted(schema)}"))
    connection.dialect.default_schema_name = schema
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    from pynenc_postgres.conf import ConfigPostgres
    from pynenc_postgres.db.settings import parse_url

    engine = create_engine(parse_url(ConfigPostgres().postgres_url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            _run_on(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
