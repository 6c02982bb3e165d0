"""``pynenc-postgres metrics`` as a process, and the exporter mounted in an application."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import psycopg
import pytest

from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.metrics import make_asgi_app, make_wsgi_app
from tests.metrics.conftest import http_get, parse, value


def _queued(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id) "
            "VALUES ('cli-app', 'q', 0, 'i-1'), ('cli-app', 'q', 0, 'i-2')"
        )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pynenc_postgres.cli", "metrics", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")}


def test_once_prints_one_scrape(database_url: str) -> None:
    _queued(database_url)
    done = subprocess.run(
        _cli("--once", "--url", database_url), capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 0, done.stderr
    samples = parse(done.stdout)
    assert value(samples, "pynenc_queue_depth", app_id="cli-app", queue="q") == 2


def test_once_exits_1_when_the_database_cannot_be_read(empty_database_url: str) -> None:
    done = subprocess.run(
        _cli("--once", "--url", empty_database_url), capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 1
    assert value(parse(done.stdout), "pynenc_postgres_up") == 0
    assert "pynenc-postgres db upgrade" in done.stderr  # the schema is missing: the fix


@pytest.fixture
def process(database_url: str) -> Iterator[subprocess.Popen[str]]:
    _queued(database_url)
    child = subprocess.Popen(
        _cli("--port", "0", "--address", "127.0.0.1", "--url", database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    yield child
    if child.poll() is None:
        child.kill()
    child.wait()


def test_serves_until_sigterm(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
    assert match, line
    samples = parse(http_get(f"http://127.0.0.1:{match.group(1)}/metrics"))
    assert value(samples, "pynenc_queue_depth", app_id="cli-app", queue="q") == 2
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_wsgi_app_in_an_applications_server(database_url: str) -> None:
    _queued(database_url)
    server = make_server(
        "127.0.0.1", 0, make_wsgi_app(DatabaseSettings(url=database_url)), handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        samples = parse(http_get(f"http://127.0.0.1:{server.server_port}/metrics"))
    finally:
        server.shutdown()
        server.server_close()
    assert value(samples, "pynenc_queue_depth", app_id="cli-app", queue="q") == 2


def test_asgi_app(database_url: str) -> None:
    _queued(database_url)
    app = make_asgi_app(DatabaseSettings(url=database_url))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "query_string": b"",
        "headers": [],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert value(parse(body), "pynenc_queue_depth", app_id="cli-app", queue="q") == 2


def test_bad_options_are_refused_with_their_name() -> None:
    from pynenc_postgres.db.errors import PostgresConfigError
    from pynenc_postgres.metrics import MetricsOptions

    with pytest.raises(PostgresConfigError, match="runner_considered_dead_after_minutes"):
        MetricsOptions(runner_dead_after_minutes=0)
    with pytest.raises(PostgresConfigError, match="timeout"):
        MetricsOptions(timeout=-1)
    done = subprocess.run(
        _cli("--once", "--timeout", "0"), capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 2
    assert "--timeout" in done.stderr and "positive" in done.stderr
