"""``PynencBuilder().postgres(...)``: registered through the ``pynenc.plugins`` entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pynenc_postgres.db.settings import MISSING_URL_HELP, check_url

if TYPE_CHECKING:
    from pynenc.builder import PynencBuilder

STATE_BACKEND_CLS = "PostgresStateBackend"


class PostgresBuilderPlugin:
    """Adds the ``postgres`` method to :class:`pynenc.builder.PynencBuilder`."""

    @staticmethod
    def register_builder_methods(builder_class: type[PynencBuilder]) -> None:
        """Called by pynenc when it discovers the plugin.

        :param builder_class: the builder class to extend.
        """
        builder_class.register_plugin_method("postgres", postgres)
        builder_class.register_plugin_validator(validate_postgres_config)


def postgres(
    builder: PynencBuilder,
    url: str | None = None,
    *,
    schema: str | None = None,
    auto_migrate: bool | None = None,
    synchronous_commit: str | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pool_timeout: float | None = None,
    pool_max_lifetime: float | None = None,
    pool_max_idle: float | None = None,
    pool_check: bool | None = None,
    connect_timeout: int | None = None,
    statement_timeout_ms: int | None = None,
    application_name: str | None = None,
    prepare_threshold: int | None = None,
    apply_settings: str | None = None,
    retry_attempts: int | None = None,
    retry_initial_delay: float | None = None,
    retry_max_delay: float | None = None,
) -> PynencBuilder:
    """Store pynenc's state in PostgreSQL.

    Selects :class:`~pynenc_postgres.state_backend.PostgresStateBackend` and leaves the
    broker, orchestrator, trigger and client data store as already chosen, so
    ``.sqlite(...).postgres(url=...)`` and ``.memory().postgres(url=...)`` compose.
    Arguments left as ``None`` keep their configured value (environment, pyproject, or
    default).

    :param url: database URL, e.g. ``postgresql://user:password@host:5432/db``. When
        omitted, ``PYNENC__POSTGRES_URL`` or ``postgres_url`` from a config file is used.
    :param schema: Postgres schema holding the tables (default ``public``).
    :param auto_migrate: upgrade the schema on first connect (default off).
    :param synchronous_commit: ``synchronous_commit`` for these connections, e.g. ``off``.
    :param pool_size: connections kept per process.
    :param max_overflow: extra connections allowed under load.
    :param pool_timeout: seconds to wait for a pooled connection.
    :param pool_max_lifetime: seconds after which a pooled connection is replaced.
    :param pool_max_idle: seconds a connection above ``pool_size`` may stay unused.
    :param pool_check: make a round trip when an idle connection is checked out (off by
        default).
    :param connect_timeout: seconds to wait when opening a connection.
    :param statement_timeout_ms: server-side statement timeout (0 disables it).
    :param application_name: name shown in ``pg_stat_activity``.
    :param prepare_threshold: psycopg prepare threshold; negative disables prepared
        statements (for transaction-mode poolers that lack support).
    :param apply_settings: ``startup`` or ``transaction`` (``SET LOCAL`` per call, for
        transaction-mode poolers); see ``docs/operations.md``.
    :param retry_attempts: attempts for a call failing with a transient error.
    :param retry_initial_delay: seconds before the first retry, doubled on each retry.
    :param retry_max_delay: upper bound of one backoff delay, in seconds.
    :return: the builder, for chaining.
    """
    if url is not None:
        check_url(url)
        builder._config["postgres_url"] = url
    values: dict[str, Any] = {
        "postgres_schema": schema,
        "postgres_auto_migrate": auto_migrate,
        "postgres_synchronous_commit": synchronous_commit,
        "postgres_pool_size": pool_size,
        "postgres_max_overflow": max_overflow,
        "postgres_pool_timeout": pool_timeout,
        "postgres_pool_max_lifetime": pool_max_lifetime,
        "postgres_pool_max_idle": pool_max_idle,
        "postgres_pool_check": pool_check,
        "postgres_connect_timeout": connect_timeout,
        "postgres_statement_timeout_ms": statement_timeout_ms,
        "postgres_application_name": application_name,
        "postgres_prepare_threshold": prepare_threshold,
        "postgres_apply_settings": apply_settings,
        "postgres_retry_attempts": retry_attempts,
        "postgres_retry_initial_delay": retry_initial_delay,
        "postgres_retry_max_delay": retry_max_delay,
    }
    builder._config.update({key: value for key, value in values.items() if value is not None})
    builder._config["state_backend_cls"] = STATE_BACKEND_CLS
    builder._plugin_components.add("postgres")
    return builder


def validate_postgres_config(config: dict[str, Any]) -> None:
    """Fail at ``build()`` rather than at first use when the URL cannot work.

    A missing URL is accepted when ``PYNENC__POSTGRES_URL`` or a config file may still
    provide it; it is reported on first use with the same help text.
    """
    if config.get("state_backend_cls") != STATE_BACKEND_CLS:
        return
    url = config.get("postgres_url")
    if url is not None and not str(url).strip():
        raise ValueError(MISSING_URL_HELP)
    if url:
        check_url(str(url))
