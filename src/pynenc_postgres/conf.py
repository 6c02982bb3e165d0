"""Configuration of the PostgreSQL plugin, declared the way pynenc declares its own.

Every field can be set with an environment variable (``PYNENC__POSTGRES_URL``), the
``[tool.pynenc]`` table of a ``pyproject.toml``, a YAML/TOML/JSON file named by
``PYNENC__FILEPATH``, or ``PynencBuilder().postgres(...)``. The broker and the client
data store read the same connection settings as the state backend, so one
``PYNENC__POSTGRES_URL`` serves every component.
"""

from cistell import ConfigField
from pynenc.conf.config_base import ConfigPynencBase
from pynenc.conf.config_broker import ConfigBroker
from pynenc.conf.config_client_data_store import ConfigClientDataStore
from pynenc.conf.config_orchestrator import ConfigOrchestrator
from pynenc.conf.config_sqlite import ConfigSQLite
from pynenc.conf.config_state_backend import ConfigStateBackend
from pynenc.conf.config_trigger import ConfigTrigger


class ConfigPostgres(ConfigPynencBase):
    """
    Connection settings shared by every pynenc-postgres component.

    :cvar ConfigField[str] postgres_url:
        SQLAlchemy or libpq URL of the database, e.g. ``postgresql://user:pw@host/db``.
        Secret: it is redacted in reprs and never stored in the database.
    :cvar ConfigField[str] postgres_schema:
        Postgres schema that holds every pynenc table, view and the version table.
    :cvar ConfigField[int] postgres_pool_size:
        Connections kept open per process (opened when first needed).
    :cvar ConfigField[int] postgres_max_overflow:
        Extra connections allowed above ``postgres_pool_size`` under load; closed when
        returned.
    :cvar ConfigField[float] postgres_pool_timeout:
        Seconds to wait for a free pooled connection before failing.
    :cvar ConfigField[float] postgres_pool_max_lifetime:
        Seconds after which a pooled connection is closed when returned and replaced by a
        new one, so connections move to a new server after a fail-over or a DNS change.
    :cvar ConfigField[float] postgres_pool_max_idle:
        Seconds a connection may sit unused in the pool; an older one is closed instead
        of handed out, before a server or firewall idle timeout closes it mid-call.
    :cvar ConfigField[bool] postgres_pool_check:
        Make a round trip (an empty statement) when an idle connection is checked out,
        and replace one that fails it. Off by default: a session that the server closed
        is found without a round trip anyway.
    :cvar ConfigField[int] postgres_connect_timeout:
        Seconds to wait for the server when opening a connection. A ``connect_timeout``
        in the URL's query wins.
    :cvar ConfigField[int] postgres_statement_timeout_ms:
        Server-side ``statement_timeout`` in milliseconds, sent when a connection opens
        (or per transaction, see ``postgres_apply_settings``). 0 sends none, so the
        role's or server's own ``statement_timeout`` applies (``ALTER ROLE ... SET
        statement_timeout``); it does not turn a configured timeout off.
    :cvar ConfigField[str] postgres_application_name:
        ``application_name`` shown in ``pg_stat_activity``. An ``application_name`` in
        the URL's query wins.
    :cvar ConfigField[bool] postgres_auto_migrate:
        Upgrade the schema to head on first connect, under an advisory lock.
        Off by default: production schemas change through ``pynenc-postgres db upgrade``.
    :cvar ConfigField[int] postgres_migration_lock_timeout_ms:
        ``lock_timeout`` of a migration, in milliseconds: a migration that cannot lock a
        busy table within it fails instead of queueing every other query behind it.
        0 sends none, so the role's or server's own ``lock_timeout`` applies (by
        default there is none, and the migration waits as long as it takes).
    :cvar ConfigField[str] postgres_synchronous_commit:
        ``synchronous_commit`` for this plugin's connections (``on``, ``off``, ...).
        Empty keeps the server's setting. ``off`` trades the last few hundred
        milliseconds of writes on a server crash for much faster commits.
    :cvar ConfigField[int] postgres_prepare_threshold:
        psycopg ``prepare_threshold``: executions before a statement is prepared
        server-side. A negative value disables prepared statements, for
        transaction-mode poolers that do not support them.
    :cvar ConfigField[str] postgres_apply_settings:
        How ``statement_timeout`` and ``synchronous_commit`` reach the server.
        ``startup`` (default) sends them once, as libpq startup options, when a
        connection opens: free per call, but transaction-mode poolers (PgBouncer)
        reject or lose them. ``transaction`` applies them with ``SET LOCAL`` inside
        each call's own transaction: no session state, at the cost of extra round
        trips per call.
    :cvar ConfigField[int] postgres_retry_attempts:
        Attempts for a call that fails with a transient error (connection lost,
        server restarting) before the error is raised. The default's backoff spans
        about 10 to 20 seconds: a fast restart of the server, which a runner would not
        survive if one of its main loop's calls gave up.
    :cvar ConfigField[float] postgres_retry_initial_delay:
        Seconds before the first retry; doubled on each further attempt.
    :cvar ConfigField[float] postgres_retry_max_delay:
        Upper bound, in seconds, of a single backoff delay.
    """

    postgres_url = ConfigField("", secret=True)
    postgres_schema = ConfigField("public")
    postgres_pool_size = ConfigField(5)
    postgres_max_overflow = ConfigField(10)
    postgres_pool_timeout = ConfigField(30.0)
    postgres_pool_max_lifetime = ConfigField(3600.0)
    postgres_pool_max_idle = ConfigField(600.0)
    postgres_pool_check = ConfigField(False)
    postgres_connect_timeout = ConfigField(10)
    postgres_statement_timeout_ms = ConfigField(60_000)
    postgres_application_name = ConfigField("pynenc")
    postgres_auto_migrate = ConfigField(False)
    postgres_migration_lock_timeout_ms = ConfigField(10_000)
    postgres_synchronous_commit = ConfigField("")
    postgres_prepare_threshold = ConfigField(1)
    postgres_apply_settings = ConfigField("startup")
    postgres_retry_attempts = ConfigField(10)
    postgres_retry_initial_delay = ConfigField(0.1)
    postgres_retry_max_delay = ConfigField(5.0)


class ConfigStateBackendPostgres(ConfigStateBackend, ConfigPostgres):
    """Configuration of :class:`~pynenc_postgres.state_backend.PostgresStateBackend`.

    Holds the shared :class:`ConfigPostgres` connection settings; class-specific
    environment variables (``PYNENC__CONFIGSTATEBACKENDPOSTGRES__POSTGRES_URL``) override
    the shared ones for the state backend alone.

    :cvar ConfigField[int] postgres_invocation_cache_size:
        Invocation rows (call and arguments, which never change once written) that each
        process keeps after reading them, least recently used first out; 0 keeps none.
    """

    postgres_invocation_cache_size = ConfigField(10_000)


class ConfigTriggerPostgres(ConfigTrigger, ConfigPostgres):
    """Configuration of :class:`~pynenc_postgres.trigger.PostgresTrigger`.

    pynenc's trigger settings (scheduler, event retention and capacity) with the shared
    :class:`ConfigPostgres` connection settings; class-specific environment variables
    (``PYNENC__CONFIGTRIGGERPOSTGRES__POSTGRES_URL``) override the shared ones for the
    trigger alone.
    """


class ConfigOrchestratorPostgres(ConfigOrchestrator, ConfigPostgres, ConfigSQLite):
    """Configuration of :class:`~pynenc_postgres.orchestrator.PostgresOrchestrator`.

    Holds pynenc's orchestrator settings and the shared :class:`ConfigPostgres`
    connection settings; class-specific environment variables
    (``PYNENC__CONFIGORCHESTRATORPOSTGRES__POSTGRES_URL``) override the shared ones for
    the orchestrator alone.

    ``sqlite_db_path`` (from pynenc's ``ConfigSQLite``) is not used. pynenc's
    integration suite checks that configuration reaches spawned workers by reading
    ``orchestrator.conf.sqlite_db_path`` in a worker, so the field is kept readable.

    :cvar ConfigField[float] postgres_heartbeat_interval_sec:
        Shortest time between two heartbeat writes of one runner from one process.
        pynenc's runners report heartbeats several times a second; a runner is dead
        only after ``runner_considered_dead_after_minutes``. Writes closer together
        than this are skipped, and the interval never exceeds a sixth of the time
        after which a runner is dead. A runner's first heartbeat, and a change of its
        queues or of its right to run the atomic service, are always written.
    :cvar ConfigField[str] postgres_retention:
        How long a finished invocation is kept once its final status was recorded: a
        duration such as ``14d``, ``6h`` or ``30s`` (units s, m, h, d, w). Empty (the
        default) keeps everything. One runner of the cluster applies it once per
        ``postgres_retention_interval``, removing the invocations' rows from every table.
    :cvar ConfigField[str] postgres_retention_by_status:
        Per-status windows that replace ``postgres_retention`` for those final statuses:
        comma-separated ``status=duration`` pairs, e.g. ``failed=30d,success=7d``;
        ``keep`` as the duration keeps that status forever. A status named here is
        purged even when ``postgres_retention`` is empty.
    :cvar ConfigField[str] postgres_retention_interval:
        How often the cluster applies the retention policy, a duration (default ``1h``).
    :cvar ConfigField[int] postgres_retention_batch_size:
        Invocations removed per transaction by the scheduled retention.
    :cvar ConfigField[int] postgres_retention_lock_timeout_ms:
        ``lock_timeout`` of each retention batch, in milliseconds: a batch that waits
        longer for a row lock is rolled back and left for the next run, so runners never
        wait long behind retention.
    """

    postgres_heartbeat_interval_sec = ConfigField(5.0)
    postgres_retention = ConfigField("")
    postgres_retention_by_status = ConfigField("")
    postgres_retention_interval = ConfigField("1h")
    postgres_retention_batch_size = ConfigField(1000)
    postgres_retention_lock_timeout_ms = ConfigField(2000)


class ConfigBrokerPostgres(ConfigBroker, ConfigPostgres):
    """Configuration of :class:`~pynenc_postgres.broker.PostgresBroker`.

    pynenc's broker fields apply: ``queue_timeout_sec`` is the longest an idle
    ``retrieve_invocation`` waits for work before it returns ``None``.

    :cvar ConfigField[str] postgres_broker_wakeup:
        How an idle consumer learns about new work. ``listen``: one ``LISTEN``
        connection per process, woken by the ``NOTIFY`` that every routing statement
        sends. ``poll``: claim again every ``postgres_broker_poll_interval_sec``; the
        mode for a transaction-mode pooler (PgBouncer ``pool_mode = transaction``),
        where ``LISTEN`` does not work. ``auto`` (default): ``poll`` when
        ``postgres_apply_settings`` is ``transaction`` (the setting of a
        transaction-mode pooler), else ``listen``, which finds out whether
        notifications arrive (its own probe) and polls, with a warning, if they do not.
    :cvar ConfigField[float] postgres_broker_poll_interval_sec:
        Seconds before an idle consumer claims again in ``poll`` mode, and while the
        ``LISTEN`` connection is down in ``listen`` mode; doubled after each empty claim.
    :cvar ConfigField[str] postgres_broker_claim_synchronous_commit:
        ``synchronous_commit`` of the statement that takes an invocation from the queue
        (default ``off``): it does not wait for its WAL flush. Routing always keeps the
        connection's setting. A server crash right after a claim can only bring that
        invocation back to the queue, and pynenc's status check skips it when it is
        taken again. Empty keeps the connection's setting for claims too.
    :cvar ConfigField[float] postgres_broker_poll_max_interval_sec:
        Longest interval between claims of an idle consumer that polls: each empty
        claim doubles the interval, from ``postgres_broker_poll_interval_sec`` up to this.
    :cvar ConfigField[float] postgres_broker_recheck_interval_sec:
        Longest time an idle consumer goes without a claim while notifications are live:
        a wake-up lost in a way nobody noticed costs at most this much latency.
    :cvar ConfigField[str] postgres_broker_listener_scope:
        ``host`` (default): one ``LISTEN`` connection per host (Linux network namespace),
        held by one of its processes, which wakes one idle consumer per routed invocation.
        ``process``: one ``LISTEN`` connection per process, the fallback on other systems.
    """

    postgres_broker_wakeup = ConfigField("auto")
    postgres_broker_poll_interval_sec = ConfigField(0.05)
    postgres_broker_claim_synchronous_commit = ConfigField("off")
    postgres_broker_poll_max_interval_sec = ConfigField(2.0)
    postgres_broker_recheck_interval_sec = ConfigField(5.0)
    postgres_broker_listener_scope = ConfigField("host")


class ConfigClientDataStorePostgres(ConfigClientDataStore, ConfigPostgres):
    """Configuration of :class:`~pynenc_postgres.client_data_store.PostgresClientDataStore`.

    pynenc's client data store fields apply (``min_size_to_cache``,
    ``max_size_to_cache``, ``local_cache_size``, ...), with the shared
    :class:`ConfigPostgres` connection settings.
    """
