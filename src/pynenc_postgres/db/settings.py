"""Connection settings of the database layer, and URL handling that never leaks a password."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pynenc_postgres.db.errors import PostgresConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from pynenc_postgres.conf import ConfigPostgres

_ACCEPTED_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")

APPLY_SETTINGS_MODES = ("startup", "transaction")

MISSING_URL_HELP = (
    "No Postgres URL is configured for pynenc-postgres. Set the config field "
    "postgres_url: export PYNENC__POSTGRES_URL=postgresql://user:password@host:5432/db, "
    "or call PynencBuilder().postgres(url=...), or add postgres_url to [tool.pynenc] "
    "in pyproject.toml."
)


def parse_url(raw: str) -> URL:
    """Parse a Postgres URL into a SQLAlchemy URL that uses the psycopg 3 driver.

    :param raw: ``postgresql://``, ``postgres://`` or ``postgresql+psycopg://`` URL.
    :raises PostgresConfigError: the URL is empty, malformed, or not a Postgres URL.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    if not raw or not raw.strip():
        raise PostgresConfigError(MISSING_URL_HELP)
    try:
        url = make_url(raw.strip())
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise PostgresConfigError(
            f"postgres_url is not a valid URL ({_describe_unparsable(raw)}). Expected the form "
            "postgresql://user:password@host:5432/dbname."
        ) from None
    if url.drivername not in _ACCEPTED_SCHEMES:
        raise PostgresConfigError(
            f"postgres_url uses the scheme {url.drivername!r}; pynenc-postgres needs a "
            "postgresql:// URL (psycopg 3 is used as the driver)."
        )
    if url.port is not None and not 0 < url.port < 65536:
        raise PostgresConfigError(f"postgres_url has an invalid port {url.port}.")
    return url.set(drivername="postgresql+psycopg")


def redact_url(raw: str | URL) -> str:
    """Render a URL for messages and logs, with any password replaced by ``***``."""
    import sqlalchemy.exc
    from sqlalchemy.engine import URL, make_url

    try:
        url = raw if isinstance(raw, URL) else make_url(raw)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return _describe_unparsable(str(raw))
    shown = url.set(drivername="postgresql")
    return shown.render_as_string(hide_password=True)


def strip_password(raw: str) -> str:
    """Return ``raw`` without its password, for storing in pynenc's app info.

    A process that rebuilds the app from stored app info then authenticates the way
    libpq does without one: ``PGPASSWORD``, ``~/.pgpass``, or the environment's
    ``PYNENC__POSTGRES_URL``, which takes precedence over stored values.
    """
    if _plausible(raw) and not urlsplit(raw.strip()).password:
        return raw  # nothing secret: keep the URL exactly as configured
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        url = make_url(raw)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return ""
    if not url.password:
        return raw
    # URL.set() treats None as "leave unchanged", so the field is replaced directly.
    return url._replace(password=None).render_as_string(hide_password=False)


def check_url(raw: str) -> None:
    """Raise :class:`PostgresConfigError` unless ``raw`` is a usable Postgres URL.

    The common case (a well-formed URL) is checked without importing SQLAlchemy.
    """
    if not _plausible(raw):
        parse_url(raw)  # raises the error that says what is wrong


def libpq_url(raw: str) -> str:
    """``raw`` as libpq reads it: psycopg connects with the URL exactly as configured."""
    scheme, sep, rest = raw.strip().partition("://")
    return f"postgresql://{rest}" if sep and scheme in _ACCEPTED_SCHEMES else raw.strip()


def _plausible(raw: str) -> bool:
    """A cheap check that ``raw`` is a Postgres URL, without importing SQLAlchemy.

    Settings are built in every runner process, often freshly spawned; only a URL that
    fails this check goes through :func:`parse_url`, which explains what is wrong.
    """
    if not raw or not raw.strip():
        return False
    try:
        parts = urlsplit(raw.strip())
        port = parts.port  # ValueError when not a number or out of range
    except ValueError:
        return False
    return parts.scheme in _ACCEPTED_SCHEMES and (port is None or 0 < port < 65536)


def _describe_unparsable(raw: str) -> str:
    scheme, sep, _ = raw.partition("://")
    return f"{scheme}://..." if sep else "not of the form scheme://..."


@dataclass(frozen=True)
class DatabaseSettings:
    """Everything needed to open and use connections; hashable, so it keys the engine registry.

    :param url: the database URL (kept secret: not shown by ``repr``).
    :param schema: Postgres schema holding the tables and the version table.
    """

    url: str = field(repr=False)
    schema: str = "public"
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    connect_timeout: int = 10
    statement_timeout_ms: int = 60_000
    application_name: str = "pynenc"
    synchronous_commit: str = ""
    prepare_threshold: int = 1
    apply_settings: str = "startup"
    auto_migrate: bool = False
    migration_lock_timeout_ms: int = 10_000
    retry_attempts: int = 6
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
                    f"{name} is {value}; it must not be negative (0 disables the timeout)."
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

    @property
    def sqlalchemy_url(self) -> URL:
        return parse_url(self.url)

    @property
    def server(self) -> str:
        """The URL as it may appear in messages: no password."""
        return redact_url(self.sqlalchemy_url)

    def __repr__(self) -> str:
        return f"DatabaseSettings(server={self.server!r}, schema={self.schema!r})"
