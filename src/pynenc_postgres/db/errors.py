"""Project exceptions, and the one function that turns driver errors into them.

Every message names the cause and the fix. None contains a password: URLs are
always rendered through :func:`pynenc_postgres.db.settings.redact_url`.
"""

from __future__ import annotations

import sys
from typing import Any

import psycopg
import psycopg.errors


class PostgresPluginError(Exception):
    """Base class of every error raised by pynenc-postgres."""


class PostgresConfigError(PostgresPluginError, ValueError):
    """The plugin is not configured, or configured with a value it cannot use."""


class PostgresUnavailableError(PostgresPluginError):
    """The server could not be reached or used, and retrying did not help."""


class PostgresAuthenticationError(PostgresUnavailableError):
    """The server rejected the user or password of ``postgres_url``."""


class PostgresDatabaseNotFoundError(PostgresUnavailableError):
    """The database named in ``postgres_url`` does not exist on the server."""


class PostgresHostNotFoundError(PostgresUnavailableError):
    """The host name in ``postgres_url`` does not resolve."""


class PostgresTooManyConnectionsError(PostgresUnavailableError):
    """The server had no free connection slot (``max_connections``), even after retrying."""


class PostgresPoolTimeoutError(PostgresUnavailableError):
    """Every pooled connection of this process stayed busy for ``postgres_pool_timeout``."""


class PostgresStatementTimeoutError(PostgresPluginError):
    """A statement ran longer than ``postgres_statement_timeout_ms``."""


class PostgresValueError(PostgresPluginError, ValueError):
    """A value cannot be stored in a Postgres ``TEXT`` column; nothing was written.

    PostgreSQL text holds neither the NUL character (``\\x00``) nor lone UTF-16
    surrogates. pynenc's serializers escape both, so only a custom serializer, or an
    identifier containing them, can produce such a value.
    """


class SchemaError(PostgresPluginError):
    """The database schema does not match what this version of the package needs."""


class SchemaMissingError(SchemaError):
    """The pynenc tables have never been created in this database/schema."""


class SchemaBehindError(SchemaError):
    """The database is at an older revision than this package needs."""


class SchemaAheadError(SchemaError):
    """The database was migrated by a newer version of this package."""


class MigrationLockTimeoutError(SchemaError):
    """A migration waited ``postgres_migration_lock_timeout_ms`` for a table lock, and gave up.

    Nothing was changed: each migration runs in one transaction.
    """


class InTransactionError(PostgresPluginError):
    """``in_transaction()`` was used in a way that cannot work; the message says how to fix it.

    Raised before anything is written for a wrong connection, database or app, and for a
    wait on a result that could only come after the application's commit.
    """


class UnsupportedConnectionError(InTransactionError, TypeError):
    """``in_transaction()`` was given an object it cannot send statements through."""


# SQLSTATE classes that a retry can fix: the connection broke, the server is
# starting or shutting down, or a concurrent transaction made this one lose.
_TRANSIENT_SQLSTATES = {
    "08000",  # connection_exception
    "08001",  # sqlclient_unable_to_establish_sqlconnection
    "08003",  # connection_does_not_exist
    "08004",  # sqlserver_rejected_establishment_of_sqlconnection
    "08006",  # connection_failure
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "53300",  # too_many_connections
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    # idle_session_timeout: the server ended a pooled session while it sat idle, so the
    # statement that met the closed session was never run.
    "57P05",
}

# Connection failures that happen before the server answers have no SQLSTATE;
# these fragments of libpq's messages mark the ones that will not fix themselves.
_PERMANENT_CONNECT_MESSAGES = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "does not exist",
    "could not translate host name",
    "failed to resolve host",
    "name or service not known",
    "invalid connection option",
    "invalid sslmode",
    "invalid integer value",
    "invalid port",
    "unsupported startup parameter",
)

# libpq's messages for SSL settings that cannot work (no SQLSTATE: they fail before or
# during the handshake), with the parameter to fix and how. Retrying never helps.
_SSL_CONFIG_MESSAGES = (
    (
        "server does not support ssl",
        "sslmode",
        "enable ssl on the server, or use sslmode=prefer or disable",
    ),
    (
        "root certificate",
        "sslrootcert",
        "point it at the CA certificate file that signed the server's certificate, "
        "use sslrootcert=system, or lower sslmode to require",
    ),
    (
        "certificate verify failed",
        "sslrootcert",
        "the server's certificate is not signed by the CA in sslrootcert; point it at the "
        "right CA certificate",
    ),
    (
        "does not match host name",
        "sslmode",
        "connect with the host name the certificate names, or use sslmode=verify-ca",
    ),
    (
        "host name must be specified for a verified ssl connection",
        "sslmode",
        "give a host name in postgres_url, or use sslmode=verify-ca",
    ),
    ("weak sslmode", "sslmode", "use the sslmode that the message names"),
    (
        "private key",
        "sslkey",
        "point it at the client key that matches sslcert, readable only by its owner "
        "(chmod 0600), and give its passphrase as sslpassword",
    ),
    ("certificate file", "sslcert", "point it at a readable client certificate file"),
    (
        "did not request an ssl certificate",
        "sslcertmode",
        "lower sslcertmode, or make the server ask for client certificates",
    ),
    (
        "without a valid ssl certificate",
        "sslcertmode",
        "give sslcert and sslkey, or lower sslcertmode",
    ),
    ("ssl protocol version", "ssl_min_protocol_version", "use a version the server offers"),
    (
        "channel binding",
        "channel_binding",
        "use SSL (sslmode=require) and SCRAM authentication, or channel_binding=prefer",
    ),
)

# Connection refusals for lack of slots arrive before the server assigns a SQLSTATE.
_NO_SLOT_MESSAGES = (
    "too many clients already",
    "remaining connection slots are reserved",
    "too many connections for role",
    "too many connections for database",
)


def _sqlalchemy_exc() -> Any:
    """SQLAlchemy's exception module, or None while nothing has imported SQLAlchemy.

    Only migrations and URL rendering use SQLAlchemy; a runner process that never loads
    it (importing it costs a spawned worker about 0.3 s) cannot hold one of its errors.
    """
    return sys.modules.get("sqlalchemy.exc")


def driver_error(exc: BaseException) -> psycopg.Error | None:
    """Return the psycopg error behind ``exc`` (SQLAlchemy wraps driver errors)."""
    if isinstance(exc, psycopg.Error):
        return exc
    sa_exc = _sqlalchemy_exc()
    if (
        sa_exc is not None
        and isinstance(exc, sa_exc.DBAPIError)
        and isinstance(exc.orig, psycopg.Error)
    ):
        return exc.orig
    return None


def is_pool_timeout(exc: BaseException) -> bool:
    """True for a pool that had no free connection (ours, or SQLAlchemy's)."""
    if isinstance(exc, TimeoutError):
        return True
    sa_exc = _sqlalchemy_exc()
    return sa_exc is not None and isinstance(exc, sa_exc.TimeoutError)


def is_database_error(exc: BaseException) -> bool:
    """True for the errors the retry loop classifies: driver errors and pool timeouts."""
    return driver_error(exc) is not None or is_pool_timeout(exc)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same call may succeed (lost connection, restart, deadlock)."""
    err = driver_error(exc)
    if err is None:
        return isinstance(exc, ConnectionError)
    if isinstance(err, psycopg.DataError) and not err.sqlstate:
        return False  # raised by the client while adapting a value: nothing was sent
    if err.sqlstate:
        return err.sqlstate in _TRANSIENT_SQLSTATES
    if isinstance(err, psycopg.OperationalError):
        message = str(err).lower()
        return (
            not any(fragment in message for fragment in _PERMANENT_CONNECT_MESSAGES)
            and not _ssl_mistake(message)
            and _option_mistake(str(err)) is None
        )
    return False


def _option_mistake(message: str) -> str | None:
    """The explained error for a libpq option that a connection could not accept."""
    from pynenc_postgres.db.libpq_options import option_mistake

    return option_mistake(message)


def _ssl_mistake(message: str) -> tuple[str, str] | None:
    """The SSL parameter and fix that a lower-cased libpq message points at, if any."""
    for fragment, parameter, fix in _SSL_CONFIG_MESSAGES:
        if fragment in message:
            return parameter, fix
    return None


def translate(exc: BaseException, server: str) -> PostgresPluginError:
    """Turn a driver or pool error into a project error that names cause and fix.

    :param exc: the error raised by psycopg or SQLAlchemy's pool.
    :param server: the redacted URL of the server, for the message.
    """
    if isinstance(exc, UnicodeEncodeError):
        return PostgresValueError(
            f"A value sent to {server} is not valid UTF-8 ({exc.reason}: "
            f"{exc.object[exc.start : exc.end]!r}); Postgres text cannot hold lone surrogates. "
            "Nothing was written. pynenc's serializers escape them; a custom serializer must too."
        )
    if is_pool_timeout(exc):
        return PostgresPoolTimeoutError(
            f"No pooled connection to {server} became free within postgres_pool_timeout. "
            "Raise postgres_pool_size/postgres_max_overflow, or lower the number of threads "
            "sharing this process's pool."
        )
    err = driver_error(exc)
    if err is None:
        return PostgresUnavailableError(f"Postgres call to {server} failed: {exc}")
    detail = _first_line(err)
    sqlstate = err.sqlstate or ""
    lowered = detail.lower()
    if isinstance(err, psycopg.DataError) and "nul" in lowered and not sqlstate:
        return PostgresValueError(
            f"A value sent to {server} contains the NUL character (\\x00), which Postgres "
            "text cannot hold. Nothing was written. pynenc's serializers escape NUL; a custom "
            "serializer must too."
        )
    if isinstance(err, psycopg.errors.QueryCanceled):
        return PostgresStatementTimeoutError(
            f"A statement on {server} was cancelled after postgres_statement_timeout_ms: "
            f"{detail}. Raise postgres_statement_timeout_ms or find what blocks the table."
        )
    option_mistake = None if sqlstate else _option_mistake(str(err))
    if option_mistake is not None:
        return PostgresConfigError(f"{option_mistake} (connecting to {server})")
    ssl_mistake = None if sqlstate else _ssl_mistake(str(err).lower())
    if ssl_mistake is not None:
        parameter, fix = ssl_mistake
        return PostgresConfigError(
            f"The SSL settings of postgres_url do not work with {server}: {detail}. "
            f"Check {parameter} in postgres_url: {fix}."
        )
    if (
        sqlstate.startswith("28")
        or "authentication failed" in lowered
        or "no password supplied" in lowered
        or ("role" in lowered and "does not exist" in lowered)
    ):
        return PostgresAuthenticationError(
            f"Postgres at {server} rejected the credentials: {detail}. "
            "Check the user and password in postgres_url / PYNENC__POSTGRES_URL."
        )
    if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return PostgresDatabaseNotFoundError(
            f"The database named in {server} does not exist: {detail}. "
            "Create it (createdb) or fix the database name in postgres_url."
        )
    if "translate host name" in lowered or "resolve host" in lowered:
        return PostgresHostNotFoundError(
            f"The host in {server} cannot be resolved: {detail}. Fix the host in postgres_url."
        )
    if "unsupported startup parameter" in lowered:
        return PostgresUnavailableError(
            f"The server or pooler at {server} refused a connection setting: {detail}. Behind "
            "a transaction-mode pooler such as PgBouncer set postgres_apply_settings="
            "transaction (settings are then applied per transaction with SET LOCAL), or add "
            "options to the pooler's ignore_startup_parameters."
        )
    if sqlstate == "53300" or any(fragment in lowered for fragment in _NO_SLOT_MESSAGES):
        return PostgresTooManyConnectionsError(
            f"Postgres at {server} has no free connection slots: {detail}. Lower "
            "postgres_pool_size/postgres_max_overflow across processes, or raise the server's "
            "max_connections."
        )
    if isinstance(err, psycopg.OperationalError) and not sqlstate:
        return PostgresUnavailableError(
            f"Cannot reach Postgres at {server}: {detail}. Check that the server is running and "
            "accepts connections on that address, and that postgres_url is right."
        )
    if isinstance(err, psycopg.OperationalError):
        return PostgresUnavailableError(f"Postgres at {server} failed ({sqlstate}): {detail}")
    return PostgresPluginError(f"Postgres at {server} rejected a statement ({sqlstate}): {detail}")


def _first_line(err: psycopg.Error) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
