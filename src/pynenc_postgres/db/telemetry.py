"""In-process metrics through OpenTelemetry's API: pools, retries, claims, statements.

Each process reports what only it can see; the cluster's state comes from the
exporter (:mod:`pynenc_postgres.metrics`). Instruments, all under the meter
``pynenc_postgres``:

* ``db.client.connection.count`` (``db.client.connection.state`` ``used`` or ``idle``)
  and ``db.client.connection.pending_requests``: each pool's connections and the
  threads waiting for one, observed at collection time (OpenTelemetry's semantic
  conventions for database client pools; ``db.client.connection.pool.name`` is the
  server, password masked);
* ``db.client.connection.wait_time`` (s): how long a call waited for a free connection,
  recorded only when it had to wait; ``db.client.connection.timeouts``: waits that
  ended in ``PostgresPoolTimeoutError``;
* ``pynenc_postgres.retries``: calls retried after a transient error, by ``error.type``
  (the SQLSTATE, or the driver's exception class when there is none);
* ``pynenc_postgres.broker.claim.duration`` (s) and ``pynenc_postgres.broker.claims``,
  by ``outcome`` (``claimed`` or ``empty``) and ``queue``: the claim statement of
  ``retrieve_invocation``, each time it looks at the queue;
* ``pynenc_postgres.statements``: calls of the database layer (one statement, or one
  transaction) by ``component`` (``state_backend``, ``broker``, ``orchestrator``,
  ``trigger``, ``client_data_store``, ...).

Only the API is used (the ``otel`` extra); the application installs the SDK and sets a
meter provider. Without the API every hook is an empty function. Without a provider
the instruments are OpenTelemetry's no-ops, and the statement counts, kept in plain
per-thread dictionaries that a collection reads, cost a dictionary update per call.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynenc_postgres.db.engine import Database

try:
    from opentelemetry import metrics as otel_metrics
except ImportError:  # the otel extra is not installed: every hook stays a no-op
    otel_metrics = None  # type: ignore[assignment]

METER_NAME = "pynenc_postgres"

# Statement counts per component, one dictionary per thread (no lock on the hot path);
# a collection sums them.
_local = threading.local()
_all_counts: list[dict[str, int]] = []
_all_counts_lock = threading.Lock()
_component_of_module: dict[str, str] = {}
# Statement texts seen, with their component; a bound keeps texts built per call (if a
# caller ever does that) from growing it.
_component_of_query: dict[str, str] = {}
_MAX_QUERIES = 4096


def _new_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    _local.counts = counts
    with _all_counts_lock:
        _all_counts.append(counts)
    return counts


def _component(module: str) -> str:
    """``pynenc_postgres.broker.postgres_broker`` -> ``broker``."""
    component = _component_of_module.get(module)
    if component is None:
        parts = module.split(".")
        component = parts[1] if len(parts) > 1 and parts[0] == "pynenc_postgres" else "other"
        _component_of_module[module] = component
    return component


def _count(component: str) -> None:
    try:
        counts: dict[str, int] = _local.counts
    except AttributeError:
        counts = _new_counts()
    counts[component] = counts.get(component, 0) + 1


def count_statement(query: str) -> None:
    """Count one statement of ``Database.fetchone/fetchall/execute`` for its caller's component.

    Each component's statements are texts written once (its ``sql.py``), so the
    component is looked up by the text; the caller's frame names it the first time.
    """
    component = _component_of_query.get(query)
    if component is None:
        # 0: here, 1: Database._statement, 2: Database.fetchone..., 3: the component (or
        # claim() below, on the broker's behalf).
        frame = sys._getframe(3)
        module = frame.f_globals.get("__name__", "")
        if module == __name__ and frame.f_back is not None:
            module = frame.f_back.f_globals.get("__name__", "")
        component = _component(module)
        if len(_component_of_query) < _MAX_QUERIES:
            _component_of_query[query] = component
    try:
        counts: dict[str, int] = _local.counts
    except AttributeError:
        counts = _new_counts()
    counts[component] = counts.get(component, 0) + 1


def count_operation(operation: Callable[..., Any]) -> None:
    """Count one ``Database.run`` call for the component that defined ``operation``."""
    _count(_component(getattr(operation, "__module__", None) or ""))


def statement_counts() -> dict[str, int]:
    """Calls counted so far in this process, by component."""
    total: dict[str, int] = {}
    with _all_counts_lock:
        snapshot = list(_all_counts)
    for counts in snapshot:
        for component, n in list(counts.items()):
            total[component] = total.get(component, 0) + n
    return total


def _reset_in_child() -> None:
    global _all_counts_lock
    _all_counts_lock = threading.Lock()
    _all_counts.clear()
    _local.__dict__.clear()


os.register_at_fork(after_in_child=_reset_in_child)


class _Instruments:
    """The synchronous instruments, created from one meter provider."""

    def __init__(self, provider: Any) -> None:
        meter = provider.get_meter(METER_NAME)
        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="Time a call waited for a free pooled connection (only calls that waited).",
        )
        self.timeouts = meter.create_counter(
            "db.client.connection.timeouts",
            unit="{timeout}",
            description="Waits for a pooled connection that ended in PostgresPoolTimeoutError.",
        )
        self.retries = meter.create_counter(
            "pynenc_postgres.retries",
            unit="{retry}",
            description="Calls retried after a transient error, by error.type (SQLSTATE).",
        )
        self.claim_duration = meter.create_histogram(
            "pynenc_postgres.broker.claim.duration",
            unit="s",
            description="Duration of the broker's claim statement, by outcome (claimed, empty).",
        )
        self.claims = meter.create_counter(
            "pynenc_postgres.broker.claims",
            unit="{claim}",
            description="Claims of the broker, by outcome: claimed an invocation, or empty.",
        )
        meter.create_observable_counter(
            "pynenc_postgres.statements",
            callbacks=[_observe_statements],
            unit="{statement}",
            description="Calls of the database layer (a statement or a transaction) by component.",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            callbacks=[_observe_connections],
            unit="{connection}",
            description="Open pooled connections, by state: used or idle.",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests",
            callbacks=[_observe_pending],
            unit="{request}",
            description="Threads waiting for a free pooled connection.",
        )


_instruments: _Instruments | None = None


def set_meter_provider(provider: Any) -> None:
    """Report to ``provider`` instead of OpenTelemetry's global meter provider.

    :param provider: an OpenTelemetry ``MeterProvider`` (tests, or an application that
        keeps its provider out of the global one).
    """
    global _instruments
    _instruments = _Instruments(provider)


def _get() -> _Instruments | None:
    global _instruments
    if _instruments is None and otel_metrics is not None:
        # The global provider: OpenTelemetry's proxy until the application sets one,
        # after which the same instruments report to it.
        _instruments = _Instruments(otel_metrics.get_meter_provider())
    return _instruments


def _databases() -> list[Database]:
    from pynenc_postgres.db.engine import _registry

    return list(_registry.values())


def _observe_statements(options: Any) -> Iterable[Any]:
    from opentelemetry.metrics import Observation

    return [Observation(n, {"component": component}) for component, n in statement_counts().items()]


def _observe_connections(options: Any) -> Iterable[Any]:
    from opentelemetry.metrics import Observation

    observations = []
    for database in _databases():
        stats = database.pool_stats()
        if not stats:
            continue
        pool = {"db.client.connection.pool.name": database.settings.server}
        idle = stats["pool_available"]
        observations.append(
            Observation(stats["pool_size"] - idle, {**pool, "db.client.connection.state": "used"})
        )
        observations.append(Observation(idle, {**pool, "db.client.connection.state": "idle"}))
    return observations


def _observe_pending(options: Any) -> Iterable[Any]:
    from opentelemetry.metrics import Observation

    return [
        Observation(
            stats["requests_waiting"],
            {"db.client.connection.pool.name": database.settings.server},
        )
        for database in _databases()
        if (stats := database.pool_stats())
    ]


def pool_waited(seconds: float) -> None:
    """A call waited ``seconds`` for a pooled connection."""
    instruments = _get()
    if instruments is not None:
        instruments.wait_time.record(seconds)


def pool_timed_out() -> None:
    """A wait for a pooled connection ended in a timeout."""
    instruments = _get()
    if instruments is not None:
        instruments.timeouts.add(1)


def retried(error: BaseException) -> None:
    """A call is retried after ``error``."""
    instruments = _get()
    if instruments is not None:
        sqlstate = getattr(error, "sqlstate", None)
        instruments.retries.add(1, {"error.type": sqlstate or type(error).__name__})


def claim[T](attempt: Callable[[], T | None], queue: str) -> T | None:
    """Run one claim ``attempt`` of the broker and record its duration and outcome."""
    instruments = _get()
    if instruments is None:
        return attempt()
    start = time.perf_counter()
    row = attempt()
    attributes = {"outcome": "empty" if row is None else "claimed", "queue": queue}
    instruments.claim_duration.record(time.perf_counter() - start, attributes)
    instruments.claims.add(1, attributes)
    return row


if otel_metrics is not None:
    # Created now, through the global provider: OpenTelemetry's proxy until the
    # application sets one, whenever it does, so the observable instruments (statement
    # counts, pool connections) report from the first collection on.
    _get()
else:

    def count_statement(query: str) -> None:
        pass

    def count_operation(operation: Callable[..., Any]) -> None:
        pass
