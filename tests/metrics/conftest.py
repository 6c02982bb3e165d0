"""Helpers of the exporter's tests: a served exporter, a real HTTP scrape, the auditor role."""

from __future__ import annotations

import re
import secrets
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.metrics import MetricsOptions, serve
from tests.audit.cookbook import blocks
from tests.conftest import PostgresServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by name and sorted labels, read by prometheus_client."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        return body.decode()


@dataclass
class Exporter:
    """A running exporter: ``scrape()`` reads it over HTTP, as Prometheus would."""

    url: str

    def scrape(self) -> Samples:
        return parse(http_get(self.url))


@pytest.fixture
def start_exporter() -> Iterator[Callable[..., Exporter]]:
    """Start ``serve()`` in a thread on a free port; every exporter stops after the test."""
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(url: str, options: MetricsOptions | None = None) -> Exporter:
        stop = threading.Event()
        bound: list[int] = []
        ready = threading.Event()

        def run() -> None:
            serve(
                DatabaseSettings(url=url),
                options,
                port=0,
                address="127.0.0.1",
                ready=lambda port: (bound.append(port), ready.set()),
                stop=stop,
            )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        stops.append((stop, thread))
        assert ready.wait(30), "the exporter did not start"
        return Exporter(f"http://127.0.0.1:{bound[0]}/metrics")

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(30)
    dispose_all()


def as_role(url: str, role: str, password: str) -> str:
    return make_url(url).set(username=role, password=password).render_as_string(hide_password=False)


@pytest.fixture
def auditor_url(postgres_server: PostgresServer, database_url: str) -> Iterator[str]:
    """The auditor role of docs/audit.md, created by its documented statements."""
    auditor = f"pynenc_auditor_{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    database = make_url(database_url).database
    script = re.sub(r"\bpynenc_auditor\b", auditor, blocks()["grants_auditor"])
    script = script.replace("'change-me'", f"'{password}'")
    script = script.replace("ON DATABASE app ", f'ON DATABASE "{database}" ')
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(script)
    try:
        yield as_role(database_url, auditor, password)
    finally:
        dispose_all()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {auditor}")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (auditor,),
            )
        with postgres_server.admin() as conn:
            conn.execute(f"DROP ROLE {auditor}")
