"""Programmatic Alembic: upgrade, downgrade, current, check, offline SQL, startup check.

The migration scripts ship inside the wheel (``pynenc_postgres/migrations``); in a
checkout they are the repository's ``alembic/`` folder. Both are the same files, so
``alembic upgrade head`` from a checkout and ``pynenc-postgres db upgrade`` from an
installed package produce the same schema.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from alembic import command
from pynenc_postgres.db.errors import (
    PostgresConfigError,
    SchemaAheadError,
    SchemaBehindError,
    SchemaMissingError,
)
from pynenc_postgres.db.models import VERSION_TABLE
from pynenc_postgres.db.settings import DatabaseSettings

if TYPE_CHECKING:
    from pynenc_postgres.db.engine import Database

UPGRADE_COMMAND = "pynenc-postgres db upgrade"


def migrations_path() -> Path:
    """Folder of the Alembic environment: inside the installed package, else the checkout's."""
    package_dir = Path(__file__).resolve().parent.parent
    shipped = package_dir / "migrations"
    if (shipped / "env.py").is_file():
        return shipped
    checkout = package_dir.parent.parent / "alembic"
    if (checkout / "env.py").is_file():
        return checkout
    raise PostgresConfigError(
        f"pynenc-postgres cannot find its migration scripts (looked in {shipped} and "
        f"{checkout}). Reinstall the package: pip install --force-reinstall pynenc-postgres."
    )


def alembic_config(
    settings: DatabaseSettings | None = None,
    connection: Connection | None = None,
    output: io.StringIO | None = None,
) -> Config:
    """An Alembic ``Config`` built without an ini file.

    :param settings: target database; its schema decides where tables and the version
        table go.
    :param connection: open connection that env.py uses instead of creating an engine.
    :param output: buffer receiving offline SQL.
    """
    cfg = Config(output_buffer=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    cfg.attributes["schema"] = settings.schema if settings else "public"
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The single head revision of the shipped migrations."""
    head = script_directory().get_current_head()
    if head is None:
        raise PostgresConfigError("The shipped migrations have no head revision.")
    return head


def known_revisions() -> set[str]:
    return {rev.revision for rev in script_directory().walk_revisions()}


def advisory_lock_key(schema: str) -> int:
    """Stable 64-bit key for the migration lock of one schema."""
    digest = hashlib.sha256(f"pynenc_postgres.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def migration_connection(settings: DatabaseSettings) -> Iterator[Connection]:
    """One transaction holding the schema's migration lock, on a dedicated connection.

    The lock is transaction-scoped, so it is released by the commit that publishes the
    new revision: a process that waited for it then sees the migrated schema.
    """
    engine = create_engine(
        settings.sqlalchemy_url,
        poolclass=NullPool,
        connect_args={
            "connect_timeout": settings.connect_timeout,
            "application_name": f"{settings.application_name}-migrate",
        },
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": advisory_lock_key(settings.schema)},
            )
            yield conn
    finally:
        engine.dispose()


def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` under the advisory lock."""
    with migration_connection(settings) as conn:
        command.upgrade(alembic_config(settings, conn), revision)


def downgrade(settings: DatabaseSettings, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` drops every pynenc table)."""
    with migration_connection(settings) as conn:
        command.downgrade(alembic_config(settings, conn), revision)


def current(settings: DatabaseSettings) -> str | None:
    """The revision the database is at, or None when the schema was never created."""
    with migration_connection(settings) as conn:
        return _read_revision(conn.connection.driver_connection, settings.schema)  # type: ignore[arg-type]


def check_autogenerate(settings: DatabaseSettings) -> None:
    """Raise ``alembic.util.exc.AutogenerateDiffsDetected`` if the models and database differ."""
    with migration_connection(settings) as conn:
        command.check(alembic_config(settings, conn))


def offline_sql(settings: DatabaseSettings, revision_range: str) -> str:
    """The SQL that ``upgrade``/``downgrade`` would run, for review; touches no database.

    :param revision_range: ``TO`` (from base) or ``FROM:TO``; a ``TO`` older than
        ``FROM`` renders a downgrade.
    """
    start, sep, end = revision_range.partition(":")
    if not sep:
        start, end = "base", revision_range
    output = io.StringIO()
    cfg = alembic_config(settings, output=output)
    script = ScriptDirectory.from_config(cfg)
    if _is_downgrade(script, start, end):
        command.downgrade(cfg, f"{start}:{end}", sql=True)
    else:
        command.upgrade(cfg, f"{start}:{end}", sql=True)
    return output.getvalue()


def _is_downgrade(script: ScriptDirectory, start: str, end: str) -> bool:
    if start == "base" or end == "head":
        return False
    if end == "base":
        return True
    ancestors = {rev.revision for rev in script.iterate_revisions(start, "base")}
    return end in ancestors and end != start


@dataclass(frozen=True)
class SchemaStatus:
    """Where the database stands relative to the shipped migrations."""

    current: str | None
    head: str

    @property
    def state(self) -> str:
        if self.current is None:
            return "missing"
        if self.current == self.head:
            return "up to date"
        if self.current in known_revisions():
            return "behind"
        return "ahead"


def status(settings: DatabaseSettings) -> SchemaStatus:
    return SchemaStatus(current=current(settings), head=head_revision())


def _read_revision(conn: psycopg.Connection[Any], schema: str) -> str | None:
    table = f'"{schema}".{VERSION_TABLE}'
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(f"SELECT version_num FROM {table} LIMIT 1").fetchone()
    return str(row[0]) if row else None


def ensure_ready(database: Database, conn: psycopg.Connection[Any]) -> None:
    """Startup check, run once per process on the first connection.

    With ``postgres_auto_migrate`` the schema is upgraded (under the advisory lock, so
    concurrent starters wait for one migration); otherwise a schema that is missing,
    behind or ahead raises an error naming the command that fixes it.
    """
    settings = database.settings
    head = head_revision()
    revision = _read_revision(conn, settings.schema)
    if revision == head:
        return
    if settings.auto_migrate and (revision is None or revision in known_revisions()):
        upgrade(settings, "head")
        return
    target = _command_target(settings)
    if revision is None:
        raise SchemaMissingError(
            f"The pynenc tables do not exist in schema {settings.schema!r} of {settings.server}. "
            f"Create them with: {UPGRADE_COMMAND}{target} "
            "(or set postgres_auto_migrate=true to migrate on first connect)."
        )
    if revision in known_revisions():
        raise SchemaBehindError(
            f"The database {settings.server} (schema {settings.schema!r}) is at revision "
            f"{revision}, but this pynenc-postgres needs {head}. Upgrade it with: "
            f"{UPGRADE_COMMAND}{target}"
        )
    raise SchemaAheadError(
        f"The database {settings.server} (schema {settings.schema!r}) is at revision "
        f"{revision}, which this pynenc-postgres (head {head}) does not know: it was migrated "
        "by a newer version. Upgrade the package: pip install --upgrade pynenc-postgres "
        f"(or downgrade the database with the newer version: pynenc-postgres db downgrade {head})."
    )


def _command_target(settings: DatabaseSettings) -> str:
    schema = "" if settings.schema == "public" else f" --schema {settings.schema}"
    return f" --url '{settings.server}'{schema}"
