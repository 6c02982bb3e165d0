"""The cluster's Prometheus metrics, read from the database with SQL.

One exporter serves the whole cluster: ``pynenc-postgres metrics --port 9464``, or
:func:`make_wsgi_app` / :func:`make_asgi_app` mounted in an application's own web
server, or :class:`PostgresMetricsCollector` registered in a ``prometheus_client``
registry. docs/operations.md ("Monitoring") lists the metrics, their labels and the
alerts worth setting.

Needs the ``metrics`` extra (``pip install 'pynenc-postgres[metrics]'``); pynenc's
runtime never imports this package.
"""

from __future__ import annotations

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in an environment without it
    raise ImportError(
        "pynenc-postgres metrics need prometheus_client: install the metrics extra, "
        "pip install 'pynenc-postgres[metrics]'."
    ) from exc

from pynenc_postgres.metrics.collector import (
    READERS,
    MetricsOptions,
    PostgresMetricsCollector,
    Reader,
    metric_names,
)
from pynenc_postgres.metrics.server import make_asgi_app, make_registry, make_wsgi_app, serve

__all__ = [
    "READERS",
    "MetricsOptions",
    "PostgresMetricsCollector",
    "Reader",
    "make_asgi_app",
    "make_registry",
    "make_wsgi_app",
    "metric_names",
    "serve",
]
