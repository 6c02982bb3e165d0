"""Programmatic Alembic: upgrade, downgrade, current, check, offline SQL, startup check.

The migration scripts ship inside the wheel (``pynenc_postgres/migrations``); in a
checkout they are the repository's ``alembic/`` folder. Both are the same files, so
``alembic upgrade head`` from a checkout and ``pynenc-postgres db upgrade`` from an
installed package produce the same schema.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
from psycopg import sql

from pynenc_postgres.db.errors import (
    MigrationLockTimeoutError,
    PostgresConfigError,
    SchemaAheadError,
    SchemaBehindError,
    SchemaError,
    SchemaMissingError,
)
from pynenc_postgres.db.settings import DatabaseSettings, libpq_url
from pynenc_postgres.db.tables import VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection, Engine

    from pynenc_postgres.db.engine import Database

UPGRADE_COMMAND = "pynenc-postgres db upgrade"
DOWNGRADE_COMMAND = "pynenc-postgres db downgrade"
SQL_COMMAND = "pynenc-postgres db sql"
NEVER_MIGRATES = (
    " Retention and inspection (pynenc-postgres purge, inspect) never change the schema, "
    "whatever postgres_auto_migrate says."
)


def migrations_path() -> Path:
    """Folder of the Alembic environment: inside the installed package, else the checkout's.

    Every function of this module finds the scripts through this one function, so a
    test can point them at a copy of the scripts (see ``tests/migrations``).
    """
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
        table go, and its ``migration_lock_timeout_ms`` bounds every lock wait.
    :param connection: open connection that env.py uses instead of creating an engine.
    :param output: buffer receiving offline SQL.
    """
    from alembic.config import Config

    # Alembic's default stdout is the sys.stdout of the moment alembic.config was first
    # imported, which may since have been replaced and closed (pytest's capsys does).
    cfg = Config(output_buffer=output, stdout=sys.stdout)
    cfg.set_main_option("script_location", str(migrations_path()))
    if settings is not None:
        cfg.attributes["schema"] = settings.schema
        cfg.attributes["lock_timeout_ms"] = settings.migration_lock_timeout_ms
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    """The shipped revisions."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


# Revision files are ``NNNN_<what>.py`` with revision id NNNN, each revising the one
# before (tests/migrations enforces it), so ids and their order can be read from the
# file names: the startup check of a freshly spawned worker then imports no Alembic.
_REVISION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.py$")


def known_revisions() -> set[str]:
    """Every shipped revision id."""
    versions = migrations_path() / "versions"
    return {m.group(1) for f in versions.iterdir() if (m := _REVISION_FILE.match(f.name))}


def head_revision() -> str:
    """The single head revision of the shipped migrations (the latest in the chain)."""
    revisions = known_revisions()
    if not revisions:
        raise PostgresConfigError("The shipped migrations have no head revision.")
    return max(revisions)


def advisory_lock_key(schema: str) -> int:
    """Stable 64-bit key for the migration lock of one schema."""
    digest = hashlib.sha256(f"pynenc_postgres.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _engine(settings: DatabaseSettings, purpose: str) -> Engine:
    # Imported here: the startup check of a runner process needs no SQLAlchemy.
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    # libpq reads the URL exactly as the runtime pool does; SQLAlchemy would parse and
    # re-encode it (decoding '+' in a query value as a space, which libpq does not).
    conninfo = libpq_url(settings.url)

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(
            conninfo,
            connect_timeout=settings.connect_timeout,
            application_name=f"{settings.application_name}-{purpose}",
        )

    return create_engine("postgresql+psycopg://", creator=connect, poolclass=NullPool)


@contextmanager
def migration_connection(settings: DatabaseSettings) -> Iterator[Connection]:
    """One transaction holding the schema's migration lock, on a dedicated connection.

    The lock is transaction-scoped, so it is released by the commit that publishes the
    new revision: a process that waited for it then sees the migrated schema. Every
    path that migrates takes it: ``pynenc-postgres db``, ``alembic`` from a checkout,
    and auto-migrate on first connect.
    """
    from sqlalchemy import text

    engine = _engine(settings, "migrate")
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
    """Migrate the database up to ``revision`` under the advisory lock.

    :param settings: target database and schema.
    :param revision: target revision; ``head`` is the newest one shipped.
    :raises SchemaAheadError: a newer pynenc-postgres migrated the database.
    """
    from alembic import command

    with _lock_timeout_explained(settings), migration_connection(settings) as conn:
        _refuse_unknown_revision(conn, settings)
        command.upgrade(alembic_config(settings, conn), revision)


def downgrade(settings: DatabaseSettings, revision: str) -> None:
    """Migrate the database down to ``revision`` under the advisory lock.

    ``base`` drops every pynenc table; Alembic keeps the (then empty) version table.

    :param settings: target database and schema.
    :param revision: target revision, or ``base``.
    :raises SchemaAheadError: a newer pynenc-postgres migrated the database; only that
        version has the scripts to bring it down.
    """
    from alembic import command

    with _lock_timeout_explained(settings), migration_connection(settings) as conn:
        _refuse_unknown_revision(conn, settings)
        command.downgrade(alembic_config(settings, conn), revision)


def _refuse_unknown_revision(conn: Connection, settings: DatabaseSettings) -> None:
    """Raise the explained :class:`SchemaAheadError` for a revision this package lacks.

    Alembic would only say it cannot locate the revision. Read under the migration lock,
    so a newer version that migrates meanwhile is seen.
    """
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    found = _status_of(_read_revision(driver, settings.schema))
    if found.state == "ahead":
        error = schema_error(found, settings)
        assert error is not None
        raise error


@contextmanager
def _lock_timeout_explained(settings: DatabaseSettings) -> Iterator[None]:
    """Turn the server's "canceling statement due to lock timeout" into what to do about it."""
    import sqlalchemy.exc

    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise
        statement = " ".join(str(exc.statement or "").split())
        if len(statement) > 120:
            statement = statement[:117] + "..."
        raise MigrationLockTimeoutError(
            f"The migration of schema {settings.schema!r} on {settings.server} waited "
            f"postgres_migration_lock_timeout_ms ({settings.migration_lock_timeout_ms} ms) "
            f"for a lock that another session holds, and gave up at: {statement}. Nothing "
            "was changed (each migration runs in one transaction). Run it again when the "
            "sessions using the table have finished (pg_stat_activity and pg_locks show "
            "them), or raise postgres_migration_lock_timeout_ms (0 sends none: the role's or "
            "server's lock_timeout applies, by default none)."
        ) from exc


def current(settings: DatabaseSettings) -> str | None:
    """The revision the database is at, or None when the schema was never created.

    Reads without the migration lock, so it answers while a migration runs (with the
    revision committed before it).
    """
    engine = _engine(settings, "status")
    try:
        with engine.connect() as conn:
            driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
            return _read_revision(driver, settings.schema)
    finally:
        engine.dispose()


def check_autogenerate(settings: DatabaseSettings) -> None:
    """Compare the models with the database, as ``alembic check`` does.

    :raises alembic.util.exc.AutogenerateDiffsDetected: the models and database differ.
    """
    from alembic import command

    with migration_connection(settings) as conn:
        command.check(alembic_config(settings, conn))


def offline_sql(settings: DatabaseSettings, revision_range: str) -> str:
    """The SQL that ``upgrade``/``downgrade`` would run, for review; touches no database.

    :param settings: only its schema and migration lock timeout are used.
    :param revision_range: ``TO`` (from base) or ``FROM:TO``; a ``TO`` older than
        ``FROM`` renders a downgrade, e.g. ``head:base``.
    """
    from alembic import command

    start, sep, end = revision_range.partition(":")
    if not sep:
        start, end = "base", revision_range
    output = io.StringIO()
    cfg = alembic_config(settings, output=output)
    script = script_directory()
    if _is_downgrade(script, start, end):
        command.downgrade(cfg, f"{start}:{end}", sql=True)
    else:
        command.upgrade(cfg, f"{start}:{end}", sql=True)
    return output.getvalue()


def _is_downgrade(script: ScriptDirectory, start: str, end: str) -> bool:
    if start == "base" or end == "head" or start == end:
        return False
    if end == "base":
        return True
    ancestors = {rev.revision for rev in script.iterate_revisions(start, "base")}
    # `end` may be a prefix or a symbol such as "heads"; compare resolved ids.
    target = script.get_revision(end)
    return target is not None and target.revision in ancestors


@dataclass(frozen=True)
class SchemaStatus:
    """Where the database stands relative to the shipped migrations.

    :param current: the database's revision, None when the schema was never created.
    :param head: the newest revision this package ships.
    :param known: every revision this package ships.
    """

    current: str | None
    head: str
    known: frozenset[str] = field(default_factory=frozenset)

    @property
    def state(self) -> str:
        """``missing``, ``up to date``, ``behind`` or ``ahead``."""
        if self.current is None:
            return "missing"
        if self.current == self.head:
            return "up to date"
        if self.current in self.known:
            return "behind"
        return "ahead"


def status(settings: DatabaseSettings) -> SchemaStatus:
    """Compare the database's revision with the shipped migrations."""
    return _status_of(current(settings))


def _status_of(revision: str | None) -> SchemaStatus:
    return SchemaStatus(current=revision, head=head_revision(), known=frozenset(known_revisions()))


def _read_revision(conn: psycopg.Connection[Any], schema: str) -> str | None:
    table = sql.Identifier(schema, VERSION_TABLE)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table.as_string(conn),)).fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute(sql.SQL("SELECT version_num FROM {}").format(table)).fetchone()
    return str(version[0]) if version else None


def ensure_ready(database: Database, conn: psycopg.Connection[Any]) -> None:
    """Startup check, run once per process on the first connection.

    With ``postgres_auto_migrate`` a missing or outdated schema is upgraded under the
    advisory lock, so concurrent starters wait for one migration and then find it done;
    settings marked ``never_migrate`` (retention, inspection) never do that. Otherwise a
    schema that is missing, behind or ahead raises the matching
    :class:`~pynenc_postgres.db.errors.SchemaError`, naming the command that fixes it.

    :param database: the process's database handle.
    :param conn: the connection that is being checked out.
    """
    settings = database.settings
    found = _status_of(_read_revision(conn, settings.schema))
    if found.state == "up to date":
        return
    migrate = settings.auto_migrate and not settings.never_migrate
    if migrate and found.state in ("missing", "behind"):
        upgrade(settings, "head")
        return
    error = schema_error(found, settings)
    assert error is not None
    raise error


def schema_error(found: SchemaStatus, settings: DatabaseSettings) -> SchemaError | None:
    """The error for a database that is not at head, or None when it is.

    Messages name the exact command to run; the URL in them has its password
    replaced by ``***``.

    :param found: where the database stands.
    :param settings: the database, for the message.
    """
    where = f"schema {settings.schema!r} of {settings.server}"
    options = _command_options(settings)
    hint = _password_hint(settings)
    if found.state == "up to date":
        return None
    if found.state == "missing":
        return SchemaMissingError(
            f"The pynenc-postgres tables do not exist in {where}. Create them with: "
            f"{UPGRADE_COMMAND}{options}{hint}. Review the SQL first with: "
            f"{SQL_COMMAND} head{_schema_option(settings)}."
            + (
                NEVER_MIGRATES
                if settings.never_migrate
                else " Or set postgres_auto_migrate=True to create them on first connect."
            )
        )
    if found.state == "behind":
        return SchemaBehindError(
            f"The pynenc-postgres tables in {where} are at revision {found.current}, but "
            f"this version of pynenc-postgres needs revision {found.head}. Upgrade them "
            f"with: {UPGRADE_COMMAND}{options}{hint}. Review the SQL first with: "
            f"{SQL_COMMAND} {found.current}:head{_schema_option(settings)}."
            + (NEVER_MIGRATES if settings.never_migrate else "")
        )
    return SchemaAheadError(
        f"The pynenc-postgres tables in {where} are at revision {found.current}, which "
        f"this version of pynenc-postgres ({_package_version()}, newest revision "
        f"{found.head}) does not know: a newer pynenc-postgres migrated them. Install the "
        "newer version here (pip install --upgrade pynenc-postgres), or, to go back to this "
        "version, run with the newer version installed: "
        f"{DOWNGRADE_COMMAND} {found.head}{options}{hint}."
    )


def _schema_option(settings: DatabaseSettings) -> str:
    return "" if settings.schema == "public" else f" --schema {shlex.quote(settings.schema)}"


def _command_options(settings: DatabaseSettings) -> str:
    return f" --url {shlex.quote(settings.server)}{_schema_option(settings)}"


def _password_hint(settings: DatabaseSettings) -> str:
    if not settings.has_secrets:
        return ""
    return " (with the password in place of ***, or without --url to read PYNENC__POSTGRES_URL)"


def _package_version() -> str:
    try:
        return importlib.metadata.version("pynenc-postgres")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"
