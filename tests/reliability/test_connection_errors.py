"""Bad configuration: each mistake gives its own readable error, at once, with no password.

The server is a private one with password authentication over TCP, so a wrong password
is really rejected (the session server trusts every local connection).
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any
from urllib.parse import quote

import pytest
from pynenc import PynencBuilder

from pynenc_postgres.db.errors import (
    PostgresAuthenticationError,
    PostgresConfigError,
    PostgresDatabaseNotFoundError,
    PostgresHostNotFoundError,
    PostgresPluginError,
    PostgresUnavailableError,
)
from pynenc_postgres.db.settings import MISSING_URL_HELP
from tests.reliability.conftest import APP_PASSWORD, APP_ROLE, Dedicated, build_app
from tests.reliability.server import free_port
from tests.reliability.tasks import new_invocation

SECRETS = (APP_PASSWORD, quote(APP_PASSWORD, safe=""), "wrong-Pa55word")
RETRY_LOG = "Transient Postgres error"


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it chains to, by cause or context."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
    return seen


def assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    rendered = [str(e) for e in chain(exc)] + [repr(e) for e in chain(exc)]
    rendered.append("".join(traceback.format_exception(exc)))
    rendered.append(caplog.text)
    for text in rendered:
        for secret in SECRETS:
            assert secret not in text


def test_no_url_configured_names_field_env_var_and_builder(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PYNENC__POSTGRES_URL", raising=False)
    monkeypatch.delenv("PYNENC__FILEPATH", raising=False)
    app = PynencBuilder().memory().postgres_state_backend().build()
    with pytest.raises(PostgresConfigError) as info:
        app.state_backend.get_invocation("anything")
    message = str(info.value)
    assert "postgres_url" in message
    assert "PYNENC__POSTGRES_URL" in message
    assert "PynencBuilder().postgres(url=...)" in message
    # An explicitly empty URL is refused when the app is built, with the same help.
    with pytest.raises(ValueError, match="PYNENC__POSTGRES_URL"):
        PynencBuilder().memory().postgres_state_backend(url=" ").build()
    assert MISSING_URL_HELP in message


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{quote(APP_PASSWORD, safe='')}@localhost:notaport/db",
        f"postgresql://app:{quote(APP_PASSWORD, safe='')}@localhost:99999/db",
        f"mysql://app:{quote(APP_PASSWORD, safe='')}@localhost/db",
        f"just some text with {APP_PASSWORD} in it",
    ],
    ids=["port-not-a-number", "port-out-of-range", "not-postgres", "not-a-url"],
)
def test_malformed_url_is_refused_by_the_builder(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(PostgresConfigError, match="postgres_url") as info:
        PynencBuilder().memory().postgres_state_backend(url=url)
    assert_no_secret(info.value, caplog)


CONNECT_TIMEOUT = 5


def _first_call(url: str, **retry: Any) -> tuple[BaseException, float]:
    app = build_app(url, connect_timeout=CONNECT_TIMEOUT, **retry)
    started = time.perf_counter()
    with pytest.raises(PostgresPluginError) as info:
        app.state_backend.get_invocation("x")
    return info.value, time.perf_counter() - started


def backoff_bounds(attempts: int, initial: float, maximum: float) -> tuple[float, float]:
    """Least and most time the retry loop sleeps over ``attempts`` attempts.

    Each delay is the doubled one before it, capped at ``maximum``, and sleeps between
    half and all of it (jitter).
    """
    delays = [min(initial * 2**n, maximum) for n in range(attempts - 1)]
    return sum(delays) / 2, sum(delays)


@pytest.mark.parametrize(
    ("case", "expected", "words"),
    [
        ("unknown host", PostgresHostNotFoundError, ["cannot be resolved", "host"]),
        ("wrong password", PostgresAuthenticationError, ["rejected the credentials"]),
        ("unknown role", PostgresAuthenticationError, ["rejected the credentials"]),
        ("missing database", PostgresDatabaseNotFoundError, ["does not exist", "createdb"]),
    ],
)
def test_permanent_connection_errors_fail_at_once_readably(
    dedicated: Dedicated,
    caplog: pytest.LogCaptureFixture,
    case: str,
    expected: type[PostgresPluginError],
    words: list[str],
) -> None:
    database = dedicated.new_database()
    port = dedicated.server.port
    urls = {
        "unknown host": dedicated.app_url(database).replace("127.0.0.1", "no-such-host.invalid"),
        "wrong password": dedicated.app_url(database, password="wrong-Pa55word"),
        "unknown role": f"postgresql://nobody:{quote(APP_PASSWORD, safe='')}@127.0.0.1:{port}/"
        + database,
        "missing database": dedicated.app_url("no_such_database"),
    }
    caplog.set_level(logging.DEBUG)
    # A retry would first sleep at least half of retry_initial_delay; that is longer
    # than one connection attempt can take (connect_timeout).
    initial_delay = 4 * CONNECT_TIMEOUT
    error, elapsed = _first_call(
        urls[case], retry_attempts=4, retry_initial_delay=initial_delay, retry_max_delay=60
    )
    assert type(error) is expected, error
    for word in words:
        assert word in str(error)
    assert ":***@" in str(error)  # the server is named, its password redacted
    # A mistake in the configuration is not retried: one attempt, no backoff.
    assert RETRY_LOG not in caplog.text
    assert elapsed < initial_delay / 2, f"{case} took {elapsed:.3f} s: it waited to retry"
    assert_no_secret(error, caplog)


def test_refused_port_is_retried_then_names_the_server(
    dedicated: Dedicated, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused port is what a restarting server looks like, so it is retried, boundedly."""
    url = dedicated.app_url("pynenc").replace(f":{dedicated.server.port}/", f":{free_port()}/")
    caplog.set_level(logging.WARNING)
    retry = {"retry_attempts": 4, "retry_initial_delay": 0.2, "retry_max_delay": 0.5}
    error, elapsed = _first_call(url, **retry)
    assert type(error) is PostgresUnavailableError
    assert "Cannot reach Postgres at postgresql://pynenc_app:***@127.0.0.1:" in str(error)
    assert "gave up after 4 attempts" in str(error)
    assert caplog.text.count(RETRY_LOG) == 3
    # It backed off between the attempts, and within the configured bounds: at most the
    # full delays plus one connect_timeout per attempt (a refused port answers at once).
    least, most = backoff_bounds(4, 0.2, 0.5)
    assert least <= elapsed < most + 4 * CONNECT_TIMEOUT, elapsed
    assert_no_secret(error, caplog)


def test_correct_credentials_work_over_password_auth(dedicated: Dedicated) -> None:
    """The control case of the errors above: the same URL with the right password works."""
    database = dedicated.new_database()
    app = build_app(dedicated.app_url(database))
    invocation = new_invocation(app, 1)
    app.state_backend.upsert_invocations([invocation])
    assert app.state_backend.get_invocation(invocation.invocation_id) == invocation
    # The app info that pynenc stores for discovery keeps the user, never the password.
    stored = dedicated.server.execute(
        "SELECT app_info_json FROM pynenc_app_info WHERE app_id = %s", (app.app_id,), database
    )
    assert stored
    assert APP_ROLE in str(stored[0][0])
    for secret in SECRETS:
        assert secret not in str(stored[0][0])
