"""The cluster's metrics, read from the database on each scrape.

:class:`PostgresMetricsCollector` is a ``prometheus_client`` collector: register it in a
registry and every scrape of that registry reads the database once. A scrape is one
short ``READ ONLY`` transaction of a few statements (:mod:`.sql`), on a connection pool
of its own, so it runs under a read-only role (the auditor role of docs/audit.md) and
never migrates anything. When the database cannot be read, the scrape still answers:
``pynenc_postgres_up`` is 0 and the cause is logged; the next scrape tries again.

Each group of metrics is one :class:`Reader`: a statement and the function that turns
its rows into metric families. A new group is one more statement in :mod:`.sql` and one
more entry in :data:`READERS`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pynenc_postgres.db.engine import Database, get_database
from pynenc_postgres.db.errors import PostgresConfigError, PostgresPluginError, translate
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.metrics import sql as metrics_sql
from pynenc_postgres.metrics.sql import MetricsSql

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
"""Seconds a scrape may spend connecting and running its statements."""

DEFAULT_RUNNER_DEAD_AFTER_MINUTES = 10.0
"""pynenc's default ``runner_considered_dead_after_minutes``."""


@dataclass(frozen=True)
class MetricsOptions:
    """What a scrape needs besides the database.

    :param runner_dead_after_minutes: a runner is dead once its latest heartbeat is
        older than this; use the runners' ``runner_considered_dead_after_minutes``.
    :param timeout: seconds a scrape may take to connect and read (each statement's
        ``statement_timeout`` too); past it the scrape reports ``pynenc_postgres_up 0``.
    """

    runner_dead_after_minutes: float = DEFAULT_RUNNER_DEAD_AFTER_MINUTES
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if not self.runner_dead_after_minutes > 0:
            raise PostgresConfigError(
                f"runner_dead_after_minutes is {self.runner_dead_after_minutes}; use the "
                "runners' runner_considered_dead_after_minutes, a positive number of minutes."
            )
        if not self.timeout > 0:
            raise PostgresConfigError(
                f"The scrape timeout is {self.timeout}; use a positive number of seconds."
            )

    @property
    def dead_after_seconds(self) -> float:
        return self.runner_dead_after_minutes * 60


Cursor = psycopg.Cursor[Any]


@dataclass(frozen=True)
class Reader:
    """One group of metrics: ``read`` runs its statements and returns its families.

    :param name: the group's name, for logs.
    :param describe: the families the group serves, without samples.
    :param read: reads the group on the scrape's cursor.
    """

    name: str
    describe: Callable[[], list[Metric]]
    read: Callable[[Cursor, MetricsSql, MetricsOptions, str], list[Metric]]


# -- the families ------------------------------------------------------------------------


def _invocation_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "pynenc_invocations",
            "Invocations whose current status (as the orchestrator enforces it) is `status`, "
            "for every status that is not final.",
            labels=["app_id", "status"],
        ),
        GaugeMetricFamily(
            "pynenc_invocations_running_dead_owner",
            "RUNNING invocations whose owner is dead by the heartbeat rule: what pynenc's "
            "running recovery will take back.",
            labels=["app_id"],
        ),
    )


def _read_invocations(
    cur: Cursor, sql: MetricsSql, options: MetricsOptions, schema: str
) -> list[Metric]:
    by_status, dead_owner = _invocation_families()
    rows = cur.execute(
        sql.invocations, (options.dead_after_seconds, list(metrics_sql.ACTIVE_STATUSES))
    ).fetchall()
    for app_id, status, count, dead in rows:
        by_status.add_metric([app_id, status], count)
        if status == "running":
            dead_owner.add_metric([app_id], dead)
    return [by_status, dead_owner]


def _queue_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "pynenc_queue_depth",
            "Invocations routed to the queue and not yet taken by a runner.",
            labels=["app_id", "queue"],
        ),
        GaugeMetricFamily(
            "pynenc_queue_oldest_age_seconds",
            "Seconds since the oldest invocation waiting in the queue was routed (server "
            "clock); 0 for an empty queue that a live runner consumes.",
            labels=["app_id", "queue"],
        ),
    )


def _runner_families() -> tuple[GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "pynenc_runners",
            "Runners (and worker processes) by the heartbeat rule: alive when their latest "
            "heartbeat is younger than runner_considered_dead_after_minutes, else dead.",
            labels=["app_id", "state"],
        ),
    )


def _read_runners_and_queues(
    cur: Cursor, sql: MetricsSql, options: MetricsOptions, schema: str
) -> list[Metric]:
    depth, oldest = _queue_families()
    (runners,) = _runner_families()
    seconds = options.dead_after_seconds
    consumed: set[tuple[str, str]] = set()
    for app_id, alive, dead, queues in cur.execute(
        sql.runners, (seconds, seconds, seconds)
    ).fetchall():
        runners.add_metric([app_id, "alive"], alive)
        runners.add_metric([app_id, "dead"], dead)
        consumed.update((app_id, queue) for queue in queues)
    waiting = {
        (app_id, queue): (count, age)
        for app_id, queue, count, age in cur.execute(sql.queues).fetchall()
    }
    # A queue that live runners consume and nothing waits in is reported empty, so its
    # series does not vanish (and an alert on it does not go stale) when it drains.
    for key in sorted(waiting.keys() | consumed):
        count, age = waiting.get(key, (0, 0.0))
        depth.add_metric(list(key), count)
        oldest.add_metric(list(key), age)
    return [depth, oldest, runners]


def _atomic_service_families() -> tuple[GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "pynenc_atomic_service_heartbeat_age_seconds",
            "Seconds since the latest heartbeat of the runner that holds the atomic service "
            "(triggers and recovery), and at least since it took the slot; absent while "
            "no runner holds it.",
            labels=["app_id"],
        ),
    )


def _read_atomic_service(
    cur: Cursor, sql: MetricsSql, options: MetricsOptions, schema: str
) -> list[Metric]:
    (age,) = _atomic_service_families()
    for app_id, seconds in cur.execute(sql.atomic_service).fetchall():
        age.add_metric([app_id], seconds)
    return [age]


def _history_families() -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily]:
    return (
        CounterMetricFamily(
            "pynenc_invocations_finished",
            "Invocations that reached a final status (success, failed, "
            "concurrency_controlled_final), from the history's running totals: retention "
            "never lowers them.",
            labels=["app_id", "status"],
        ),
        CounterMetricFamily(
            "pynenc_invocation_retries",
            "Invocations set to RETRY (one per retry), from the history's running totals.",
            labels=["app_id"],
        ),
        CounterMetricFamily(
            "pynenc_invocation_recoveries",
            "Invocations taken back by pynenc's recovery: status pending_recovery (stuck "
            "PENDING) or running_recovery (owner dead), from the history's running totals.",
            labels=["app_id", "status"],
        ),
    )


def _read_history_totals(
    cur: Cursor, sql: MetricsSql, options: MetricsOptions, schema: str
) -> list[Metric]:
    finished, retries, recoveries = _history_families()
    totals: dict[str, dict[str, int]] = {}
    for app_id, status, total in cur.execute(sql.history_totals).fetchall():
        totals.setdefault(app_id, {})[status] = total
    # Every counted status of every app that has any, so that rate() sees each series
    # from its first increment on.
    for app_id, counts in totals.items():
        for status in metrics_sql.FINAL_STATUSES:
            finished.add_metric([app_id, status], counts.get(status, 0))
        retries.add_metric([app_id], counts.get("retry", 0))
        for status in ("pending_recovery", "running_recovery"):
            recoveries.add_metric([app_id, status], counts.get(status, 0))
    return [finished, retries, recoveries]


def _retention_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "pynenc_retention_last_run_timestamp_seconds",
            "Unix time the app's latest retention run ended (started, while it runs); "
            "`outcome` is its outcome: running, completed, blocked or failed.",
            labels=["app_id", "outcome"],
        ),
        GaugeMetricFamily(
            "pynenc_retention_rows_removed",
            "Rows the app's latest retention run removed from the table.",
            labels=["app_id", "table"],
        ),
        GaugeMetricFamily(
            "pynenc_retention_behind_seconds",
            "Seconds the app's next scheduled retention run is overdue (server clock); 0 "
            "when it is not due yet. Grows while no runner with retention on is alive.",
            labels=["app_id"],
        ),
    )


def _read_retention(
    cur: Cursor, sql: MetricsSql, options: MetricsOptions, schema: str
) -> list[Metric]:
    last_run, rows_removed, behind = _retention_families()
    for app_id, outcome, at, removed in cur.execute(sql.retention).fetchall():
        last_run.add_metric([app_id, outcome], at)
        for table, count in sorted(removed.items()):
            rows_removed.add_metric([app_id, table], count)
    for app_id, seconds in cur.execute(sql.retention_behind).fetchall():
        behind.add_metric([app_id], seconds)
    return [last_run, rows_removed, behind]


def _table_families() -> tuple[
    GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
]:
    return (
        GaugeMetricFamily(
            "pynenc_table_size_bytes",
            "Bytes the table takes on disk, its indexes and TOAST included.",
            labels=["table"],
        ),
        GaugeMetricFamily(
            "pynenc_table_live_rows",
            "Live rows of the table, as the server's statistics estimate them.",
            labels=["table"],
        ),
        GaugeMetricFamily(
            "pynenc_table_dead_rows",
            "Dead rows of the table that VACUUM has not reclaimed yet (server's estimate).",
            labels=["table"],
        ),
        GaugeMetricFamily(
            "pynenc_table_last_vacuum_timestamp_seconds",
            "Unix time of the table's latest VACUUM, manual or automatic; absent if never.",
            labels=["table"],
        ),
    )


def _read_tables(
    cur: Cursor, sql: MetricsSql, options: MetricsOptions, schema: str
) -> list[Metric]:
    size, live, dead, vacuumed = _table_families()
    for table, size_bytes, live_rows, dead_rows, vacuum_time in cur.execute(
        sql.tables, (schema, list(metrics_sql.TABLES))
    ).fetchall():
        size.add_metric([table], size_bytes)
        live.add_metric([table], live_rows)
        dead.add_metric([table], dead_rows)
        if vacuum_time is not None:
            vacuumed.add_metric([table], float(vacuum_time))
    return [size, live, dead, vacuumed]


READERS: tuple[Reader, ...] = (
    Reader("invocations", lambda: list(_invocation_families()), _read_invocations),
    Reader(
        "queues and runners",
        lambda: [*_queue_families(), *_runner_families()],
        _read_runners_and_queues,
    ),
    Reader("atomic service", lambda: list(_atomic_service_families()), _read_atomic_service),
    Reader("history totals", lambda: list(_history_families()), _read_history_totals),
    Reader("retention", lambda: list(_retention_families()), _read_retention),
    Reader("tables", lambda: list(_table_families()), _read_tables),
)
"""Every group of metrics a scrape reads, in order, in one transaction."""


def _exporter_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "pynenc_postgres_up",
            "1 when this scrape read the database, 0 when it could not (server down or "
            "unreachable, schema missing or behind, privileges missing; the exporter logs why).",
        ),
        GaugeMetricFamily(
            "pynenc_postgres_scrape_duration_seconds",
            "Seconds this scrape spent reading the database.",
        ),
    )


def metric_names() -> list[str]:
    """The name of every metric the exporter serves (counters with their ``_total``)."""
    names = []
    for family in describe_all():
        suffix = "_total" if family.type == "counter" else ""
        names.append(family.name + suffix)
    return names


def describe_all(readers: Sequence[Reader] = READERS) -> list[Metric]:
    """Every family of ``readers`` and of the exporter itself, without samples."""
    return [*_exporter_families(), *(family for reader in readers for family in reader.describe())]


def exporter_settings(settings: DatabaseSettings, options: MetricsOptions) -> DatabaseSettings:
    """``settings`` for the exporter's own small pool.

    One attempt per scrape (Prometheus scrapes again soon; retrying inside a scrape
    would only outlast its timeout), the scrape's timeout for connecting and for each
    statement, and never a schema change.
    """
    return dataclasses.replace(
        settings.without_schema_changes(),
        pool_size=1,
        max_overflow=1,
        pool_timeout=options.timeout,
        connect_timeout=max(1, math.ceil(options.timeout)),
        statement_timeout_ms=max(1, int(options.timeout * 1000)),
        retry_attempts=1,
        application_name="pynenc-metrics",
    )


class PostgresMetricsCollector(Collector):
    """Reads the cluster's metrics from the database on each collection.

    Register it in a ``prometheus_client`` registry (``REGISTRY.register(collector)``
    in an application that serves ``/metrics`` already, or a registry of its own; see
    :func:`pynenc_postgres.metrics.make_wsgi_app`).

    :param settings: the database; a read-only role is enough.
    :param options: the heartbeat rule and the scrape's timeout.
    :param readers: the groups of metrics to read (default: all of them).
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        options: MetricsOptions | None = None,
        readers: Sequence[Reader] = READERS,
    ) -> None:
        self.options = options or MetricsOptions()
        self.settings = exporter_settings(settings, self.options)
        self.readers = tuple(readers)
        self._sql = metrics_sql.statements(self.settings.schema)

    @property
    def database(self) -> Database:
        return get_database(self.settings)

    def describe(self) -> Iterable[Metric]:
        """The families served, without reading the database (for the registry's checks)."""
        return describe_all(self.readers)

    def collect(self) -> Iterator[Metric]:
        """Read the database in one read-only transaction and yield every family."""
        up, duration = _exporter_families()
        start = time.perf_counter()
        families: list[Metric] = []
        try:
            families = self.database.run(self._read, transaction=True)
        except PostgresPluginError as exc:
            failure: Exception | None = exc
        except psycopg.Error as exc:
            failure = translate(exc, self.settings.server)
        else:
            failure = None
        if failure is not None:
            logger.warning(
                "pynenc-postgres metrics: cannot read %s: %s", self.settings.server, failure
            )
        up.add_metric([], 0 if failure else 1)
        duration.add_metric([], time.perf_counter() - start)
        yield up
        yield duration
        yield from families

    def _read(self, conn: psycopg.Connection[Any]) -> list[Metric]:
        families: list[Metric] = []
        with conn.cursor() as cur:
            # The planner cannot know that the statuses counted are the rare ones, and its
            # estimates would make it compile the statements (JIT): hundreds of
            # milliseconds spent to save microseconds.
            cur.execute("SET TRANSACTION READ ONLY; SET LOCAL jit = off")
            for reader in self.readers:
                families.extend(reader.read(cur, self._sql, self.options, self.settings.schema))
        return families

    def close(self) -> None:
        """Close the exporter's connections (the next collection opens new ones)."""
        self.database.dispose()
