"""Serving the cluster's metrics: a stand-alone HTTP server, or an app to mount.

``pynenc-postgres metrics`` runs :func:`serve`. An application with its own web server
mounts :func:`make_wsgi_app` or :func:`make_asgi_app` at ``/metrics`` instead, or
registers a :class:`~pynenc_postgres.metrics.collector.PostgresMetricsCollector` in the
registry it already serves.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client import make_wsgi_app as _make_wsgi_app

from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.metrics.collector import MetricsOptions, PostgresMetricsCollector

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9464
DEFAULT_ADDRESS = "0.0.0.0"


def make_registry(
    settings: DatabaseSettings, options: MetricsOptions | None = None
) -> CollectorRegistry:
    """A registry holding only the cluster's metrics (no process or platform metrics).

    :param settings: the database; a read-only role is enough.
    :param options: the heartbeat rule and the scrape's timeout.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PostgresMetricsCollector(settings, options))
    return registry


def make_wsgi_app(settings: DatabaseSettings, options: MetricsOptions | None = None) -> Any:
    """A WSGI app serving the cluster's metrics in Prometheus' text format.

    Mount it at ``/metrics`` of a WSGI server (Flask, Django, gunicorn...). Each request
    reads the database once.

    :param settings: the database; a read-only role is enough.
    :param options: the heartbeat rule and the scrape's timeout.
    """
    return _make_wsgi_app(make_registry(settings, options))


def make_asgi_app(settings: DatabaseSettings, options: MetricsOptions | None = None) -> Any:
    """An ASGI app serving the cluster's metrics (Starlette, FastAPI: ``app.mount``).

    The database is read in the server's thread pool, as ``prometheus_client`` does.

    :param settings: the database; a read-only role is enough.
    :param options: the heartbeat rule and the scrape's timeout.
    """
    return _make_asgi_app(make_registry(settings, options))


def serve(
    settings: DatabaseSettings,
    options: MetricsOptions | None = None,
    *,
    port: int = DEFAULT_PORT,
    address: str = DEFAULT_ADDRESS,
    ready: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve the cluster's metrics over HTTP until ``stop`` is set, SIGTERM or Ctrl-C.

    :param settings: the database; a read-only role is enough.
    :param options: the heartbeat rule and the scrape's timeout.
    :param port: TCP port (0 picks a free one).
    :param address: address to listen on.
    :param ready: called with the port once the server listens.
    :param stop: set it to stop the server (tests; default: wait for a signal).
    """
    collector = PostgresMetricsCollector(settings, options)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    server, thread = start_http_server(port, address, registry)
    stop = stop or threading.Event()
    previous = _stop_on_sigterm(stop)
    try:
        bound = int(server.server_address[1])
        logger.info("pynenc-postgres metrics on http://%s:%d/metrics", address, bound)
        if ready is not None:
            ready(bound)
        while not stop.wait(0.5):
            pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
        thread.join()
        collector.close()


def _stop_on_sigterm(stop: threading.Event) -> Any:
    """Make SIGTERM set ``stop`` (main thread only); return the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        stop.set()

    return signal.signal(signal.SIGTERM, handler)
