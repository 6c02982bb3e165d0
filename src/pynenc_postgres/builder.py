"""``PynencBuilder().postgres(...)`` and ``.postgres_state_backend(...)``.

Registered through the ``pynenc.plugins`` entry point. ``postgres`` follows pynenc's
``.redis()`` and ``.sqlite()``: it selects every component. ``postgres_state_backend``
selects only the state backend, for teams that keep another broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from pynenc_postgres.db.settings import MISSING_URL_HELP, check_url

if TYPE_CHECKING:
    from pynenc.builder import PynencBuilder

STATE_BACKEND_CLS = "PostgresStateBackend"
COMPONENT_CLASSES = {
    "state_backend_cls": STATE_BACKEND_CLS,
    "broker_cls": "PostgresBroker",
    "orchestrator_cls": "PostgresOrchestrator",
    "trigger_cls": "PostgresTrigger",
    "client_data_store_cls": "PostgresClientDataStore",
}


class PostgresBuilderPlugin:
    """Adds ``postgres`` and ``postgres_state_backend`` to :class:`pynenc.builder.PynencBuilder`."""

    @staticmethod
    def register_builder_methods(builder_class: type[PynencBuilder]) -> None:
        """Called by pynenc when it discovers the plugin.

        :param builder_class: the builder class to extend.
        """
        builder_class.register_plugin_method("postgres", postgres)
        builder_class.register_plugin_method("postgres_state_backend", postgres_state_backend)
        builder_class.register_plugin_validator(validate_postgres_config)


class PostgresSettings(TypedDict, total=False):
    """The keywords of both builder methods; ``name`` sets the config field ``postgres_<name>``.

    A keyword left out, or given as ``None``, keeps its configured value (environment,
    ``[tool.pynenc]``, config file, or default).

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
    :param statement_timeout_ms: server-side ``statement_timeout`` in milliseconds; 0 sends
        none, so the role's or server's own ``statement_timeout`` applies.
    :param application_name: name shown in ``pg_stat_activity``.
    :param prepare_threshold: psycopg prepare threshold; negative disables prepared
        statements (for transaction-mode poolers that lack support).
    :param apply_settings: ``startup`` or ``transaction`` (``SET LOCAL`` per call, for
        transaction-mode poolers); see ``docs/operations.md``.
    :param retry_attempts: attempts for a call failing with a transient error.
    :param retry_initial_delay: seconds before the first retry, doubled on each retry.
    :param retry_max_delay: upper bound of one backoff delay, in seconds.
    :param migration_lock_timeout_ms: ``lock_timeout`` of each migration (auto-migrate
        and ``pynenc-postgres db``), in milliseconds; 0 sends none, so the role's or
        server's own ``lock_timeout`` applies.
    :param broker_wakeup: how idle ``PostgresBroker`` consumers learn about work:
        ``listen``, ``poll`` or ``auto``.
    :param broker_poll_interval_sec: seconds between claims of an idle broker consumer
        when it polls.
    :param broker_claim_synchronous_commit: ``synchronous_commit`` of the broker's claim
        statement (default ``off``); empty keeps the connection's setting.
    :param broker_poll_max_interval_sec: longest interval between claims of an idle
        consumer that polls (the interval doubles after each empty claim).
    :param broker_recheck_interval_sec: longest time an idle consumer sends nothing while
        notifications are live.
    :param broker_listener_scope: ``host`` (one ``LISTEN`` session per host, which wakes
        one idle consumer per routed invocation) or ``process``.
    :param heartbeat_interval_sec: shortest time between two heartbeat writes of a runner.
    :param invocation_cache_size: invocation rows each process keeps after reading them;
        0 keeps none.
    :param retention: how long finished invocations are kept (``14d``, ``6h``, ``30s``);
        empty keeps everything (the default).
    :param retention_by_status: per-status windows, e.g. ``failed=30d,success=7d``.
    :param retention_interval: how often the cluster applies the retention policy.
    :param retention_batch_size: invocations removed per retention transaction.
    :param retention_lock_timeout_ms: ``lock_timeout`` of each retention batch.

    The broker keywords apply to ``PostgresBroker``: ``.postgres(...)`` selects it, and
    after ``.postgres_state_backend(...)`` they take effect once it is selected, e.g. with
    ``.custom_config(broker_cls="PostgresBroker")``.
    """

    schema: str | None
    auto_migrate: bool | None
    synchronous_commit: str | None
    pool_size: int | None
    max_overflow: int | None
    pool_timeout: float | None
    pool_max_lifetime: float | None
    pool_max_idle: float | None
    pool_check: bool | None
    connect_timeout: int | None
    statement_timeout_ms: int | None
    application_name: str | None
    prepare_threshold: int | None
    apply_settings: str | None
    retry_attempts: int | None
    retry_initial_delay: float | None
    retry_max_delay: float | None
    migration_lock_timeout_ms: int | None
    broker_wakeup: str | None
    broker_poll_interval_sec: float | None
    broker_claim_synchronous_commit: str | None
    broker_poll_max_interval_sec: float | None
    broker_recheck_interval_sec: float | None
    broker_listener_scope: str | None
    heartbeat_interval_sec: float | None
    invocation_cache_size: int | None
    retention: str | None
    retention_by_status: str | None
    retention_interval: str | None
    retention_batch_size: int | None
    retention_lock_timeout_ms: int | None


def postgres(
    builder: PynencBuilder, url: str | None = None, **settings: Unpack[PostgresSettings]
) -> PynencBuilder:
    """Run every pynenc component on PostgreSQL: one database, any number of hosts.

    Selects the Postgres state backend, broker, orchestrator, trigger and client data
    store, as pynenc's ``.redis()`` and ``.sqlite()`` select theirs. They share one
    connection pool per process and these settings. To keep another broker and store
    only the state here, use :func:`postgres_state_backend`.

    :param url: database URL, e.g. ``postgresql://user:password@host:5432/db``. When
        omitted, ``PYNENC__POSTGRES_URL`` or ``postgres_url`` from a config file is used.
    :param settings: connection and pool settings, see :class:`PostgresSettings`.
    :return: the builder, for chaining.
    """
    _apply_settings(builder, url, settings)
    builder._config.update(COMPONENT_CLASSES)
    builder._using_memory_components = False
    builder._plugin_components.clear()
    builder._plugin_components.add("postgres")
    return builder


def postgres_state_backend(
    builder: PynencBuilder, url: str | None = None, **settings: Unpack[PostgresSettings]
) -> PynencBuilder:
    """Store pynenc's state in PostgreSQL and keep the other components as chosen.

    Selects :class:`~pynenc_postgres.state_backend.PostgresStateBackend` and leaves the
    broker, orchestrator, trigger and client data store as already chosen, so
    ``.sqlite(...).postgres_state_backend(url=...)`` and
    ``.memory().postgres_state_backend(url=...)`` compose. Takes the same arguments as
    :func:`postgres`.

    :return: the builder, for chaining.
    """
    _apply_settings(builder, url, settings)
    builder._config["state_backend_cls"] = STATE_BACKEND_CLS
    builder._plugin_components.add("postgres")
    return builder


def _apply_settings(builder: PynencBuilder, url: str | None, settings: Mapping[str, Any]) -> None:
    """Copy the arguments that were given into the builder's config (``None`` = unset).

    :raises TypeError: a keyword that is not one of :class:`PostgresSettings`, as a
        misspelt keyword of an ordinary function would.
    """
    unknown = sorted(set(settings) - set(PostgresSettings.__annotations__))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(unknown)}; the Postgres builder "
            f"methods take url and {', '.join(PostgresSettings.__annotations__)}"
        )
    if url is not None:
        check_url(url)
        builder._config["postgres_url"] = url
    builder._config.update(
        {f"postgres_{name}": value for name, value in settings.items() if value is not None}
    )


def validate_postgres_config(config: dict[str, Any]) -> None:
    """Fail at ``build()`` rather than at first use when the URL cannot work.

    A missing URL is accepted when ``PYNENC__POSTGRES_URL`` or a config file may still
    provide it; it is reported on first use with the same help text.
    """
    if not any(config.get(key) == cls for key, cls in COMPONENT_CLASSES.items()):
        return
    url = config.get("postgres_url")
    if url is not None and not str(url).strip():
        raise ValueError(MISSING_URL_HELP)
    if url:
        check_url(str(url))
