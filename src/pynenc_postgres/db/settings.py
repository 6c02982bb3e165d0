"""Connection settings of the database layer; the URL is checked and redacted by :mod:`.urls`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pynenc_postgres.db import urls
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.libpq_options import check_options
from pynenc_postgres.db.urls import MISSING_URL_HELP, libpq_url

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from pynenc_postgres.conf import ConfigPostgres

__all__ = [
    "APPLY_SETTINGS_MODES",
    "MISSING_URL_HELP",
    "DatabaseSettings",
    "check_url",
    "libpq_url",
    "parse_url",
    "redact_url",
]

APPLY_SETTINGS_MODES = ("startup", "transaction")


def check_url(raw: str) -> None:
    """Raise :class:`PostgresConfigError` unless libpq can use ``raw`` as it is.

    The URL's form is checked by :mod:`.urls`, the values of its options by libpq itself
    without connecting (:mod:`.libpq_options`). Neither imports SQLAlchemy: settings are
    built in every runner process, often freshly spawned.
    """
    urls.parse(raw)
    check_options(raw)


def parse_url(raw: str) -> URL:
    """``raw`` as a SQLAlchemy URL with the psycopg 3 driver, for SQLAlchemy's own uses.

    The package itself connects with the URL as configured (:func:`libpq_url`); this is
    for code that wants SQLAlchemy's view of it.

    :raises PostgresConfigError: the URL is empty or malformed.
    """
    from sqlalchemy.engine import make_url

    urls.parse(raw)
    return make_url(libpq_url(raw)).set(drivername="postgresql+psycopg")


def redact_url(raw: str) -> str:
    """Render a URL for messages and logs, with every secret replaced by ``***``."""
    return urls.redact(raw)


@dataclass(frozen=True)
class DatabaseSettings:
    """Everything needed to open and use connections; hashable, so it keys the engine registry.

    :param url: the database URL (kept secret: not shown by ``repr``).
    :param schema: Postgres schema holding the tables and the version table.
    :param auto_migrate: the startup check upgrades a missing or outdated schema.
    :param never_migrate: set by callers that must never change the schema (retention,
        inspection): the startup check reports a missing or outdated schema, whatever
        ``auto_migrate`` says. See :meth:`without_schema_changes`.
    """

    url: str = field(repr=False)
    schema: str = "public"
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_max_lifetime: float = 3600.0
    pool_max_idle: float = 600.0
    pool_check: bool = False
    connect_timeout: int = 10
    statement_timeout_ms: int = 60_000
    application_name: str = "pynenc"
    synchronous_commit: str = ""
    prepare_threshold: int = 1
    apply_settings: str = "startup"
    auto_migrate: bool = False
    never_migrate: bool = False
    migration_lock_timeout_ms: int = 10_000
    retry_attempts: int = 10
    retry_initial_delay: float = 0.1
    retry_max_delay: float = 5.0

    def __post_init__(self) -> None:
        check_url(self.url)
        if not self.schema or not self.schema.strip():
            raise PostgresConfigError("postgres_schema must name a Postgres schema, e.g. public.")
        if self.pool_size < 1:
            raise PostgresConfigError("postgres_pool_size must be at least 1.")
        if self.retry_attempts < 1:
            raise PostgresConfigError("postgres_retry_attempts must be at least 1.")
        if self.retry_initial_delay < 0 or self.retry_max_delay < 0:
            raise PostgresConfigError(
                "postgres_retry_initial_delay and postgres_retry_max_delay must not be negative."
            )
        if self.pool_timeout < 0 or self.connect_timeout < 0:
            raise PostgresConfigError(
                "postgres_pool_timeout and postgres_connect_timeout must not be negative."
            )
        if self.pool_max_lifetime <= 0 or self.pool_max_idle <= 0:
            raise PostgresConfigError(
                "postgres_pool_max_lifetime and postgres_pool_max_idle must be positive "
                "numbers of seconds."
            )
        if self.apply_settings not in APPLY_SETTINGS_MODES:
            raise PostgresConfigError(
                f"postgres_apply_settings is {self.apply_settings!r}; use 'startup' (sent when "
                "a connection opens) or 'transaction' (SET LOCAL in each call's transaction, "
                "for transaction-mode poolers such as PgBouncer)."
            )
        if self.max_overflow < 0:
            raise PostgresConfigError(
                f"postgres_max_overflow is {self.max_overflow}; it must not be negative "
                "(0 allows no connections above postgres_pool_size)."
            )
        for name, value in (
            ("postgres_statement_timeout_ms", self.statement_timeout_ms),
            ("postgres_migration_lock_timeout_ms", self.migration_lock_timeout_ms),
        ):
            if value < 0:
                raise PostgresConfigError(
                    f"{name} is {value}; it must not be negative (0 sends no timeout, so the "
                    "role's or server's own setting applies)."
                )
        # The server would refuse a wrong value only when a connection opens, in a way
        # that looks like an unreachable server. Its values, their boolean spellings, and
        # "" (keep the server's setting):
        if self.synchronous_commit.strip().lower() not in {
            "",
            "on",
            "off",
            "local",
            "remote_write",
            "remote_apply",
            "true",
            "false",
            "yes",
            "no",
            "1",
            "0",
        }:
            raise PostgresConfigError(
                f"postgres_synchronous_commit is {self.synchronous_commit!r}; use one of "
                "on, off, local, remote_write, remote_apply, or leave it empty to keep the "
                "server's setting."
            )

    @classmethod
    def from_config(cls, conf: ConfigPostgres) -> DatabaseSettings:
        """Build settings from the plugin's cistell config."""
        return cls(
            url=conf.postgres_url,
            schema=conf.postgres_schema,
            pool_size=conf.postgres_pool_size,
            max_overflow=conf.postgres_max_overflow,
            pool_timeout=conf.postgres_pool_timeout,
            pool_max_lifetime=conf.postgres_pool_max_lifetime,
            pool_max_idle=conf.postgres_pool_max_idle,
            pool_check=conf.postgres_pool_check,
            connect_timeout=conf.postgres_connect_timeout,
            statement_timeout_ms=conf.postgres_statement_timeout_ms,
            application_name=conf.postgres_application_name,
            synchronous_commit=conf.postgres_synchronous_commit,
            prepare_threshold=conf.postgres_prepare_threshold,
            apply_settings=conf.postgres_apply_settings,
            auto_migrate=conf.postgres_auto_migrate,
            migration_lock_timeout_ms=conf.postgres_migration_lock_timeout_ms,
            retry_attempts=conf.postgres_retry_attempts,
            retry_initial_delay=conf.postgres_retry_initial_delay,
            retry_max_delay=conf.postgres_retry_max_delay,
        )

    def without_schema_changes(self) -> DatabaseSettings:
        """These settings for a caller that reads or deletes rows but never runs DDL.

        ``postgres_auto_migrate`` is meant for pynenc's runtime; a ``purge`` or an
        ``inspect`` against a database whose schema is missing or behind reports that,
        with the command that fixes it, instead of migrating it.
        """
        return dataclasses.replace(self, auto_migrate=False, never_migrate=True)

    @property
    def server(self) -> str:
        """The URL as it may appear in messages: every secret replaced by ``***``."""
        return urls.redact(self.url)

    @property
    def has_secrets(self) -> bool:
        """True when the URL itself carries a password or another libpq secret."""
        return urls.parse(self.url).has_secrets

    def __repr__(self) -> str:
        return f"DatabaseSettings(server={self.server!r}, schema={self.schema!r})"
