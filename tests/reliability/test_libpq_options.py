"""A connection option that libpq refuses is a ``PostgresConfigError`` naming it, at once.

libpq checks option values when a connection starts, before any network step; the
plugin runs that check when the settings are made (builder, ``DatabaseSettings``, every
command), so ``?sslmode=bogus`` is reported as the mistake in the URL that it is, not as
an unreachable server. Options that libpq reads only once it has a socket are recognised
in the first connection's error. No message contains the URL's password.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest
from pynenc import PynencBuilder

from pynenc_postgres.cli import main
from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.settings import DatabaseSettings
from tests.reliability.server import free_port
from tests.reliability.test_connection_errors import RETRY_LOG, SECRETS, assert_no_secret

PASSWORD = SECRETS[0]
BASE = f"postgresql://app:{quote(PASSWORD, safe='')}@db-host.invalid:5432/app"

# A query that libpq refuses, and the options that the error must name.
REFUSED = [
    ("sslmode=bogus", ["sslmode"]),
    ("gssencmode=bogus", ["gssencmode"]),
    ("channel_binding=bogus", ["channel_binding"]),
    ("target_session_attrs=bogus", ["target_session_attrs"]),
    ("load_balance_hosts=bogus", ["load_balance_hosts"]),
    ("require_auth=bogus", ["require_auth"]),
    ("ssl_min_protocol_version=TLSv9", ["ssl_min_protocol_version"]),
    ("sslmode=require&sslrootcert=system", ["sslmode", "sslrootcert"]),
    ("port=abc", ["port"]),
    ("port=99999", ["port"]),
    ("hostaddr=10.0.0.1,10.0.0.2", ["host", "hostaddr"]),
    ("service=pynenc_no_such_service", ["service"]),
    ("connect_timeout=soon", ["connect_timeout"]),
]

ACCEPTED = [
    "sslmode=disable",
    "sslmode=verify-full&sslrootcert=system",
    "target_session_attrs=read-write",
    "load_balance_hosts=random",
    "channel_binding=prefer",
    "gssencmode=disable",
    "require_auth=scram-sha-256",
    "hostaddr=10.0.0.1",
    "connect_timeout=5",
    "keepalives_idle=30",
    "options=-c%20search_path%3Dapp",
]


def named(error: BaseException, keywords: list[str]) -> bool:
    return f"Check {' and '.join(keywords)} in postgres_url" in str(error)


@pytest.mark.parametrize(("query", "keywords"), REFUSED, ids=[q for q, _ in REFUSED])
def test_refused_option_is_a_config_error_naming_it(
    query: str, keywords: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(PostgresConfigError) as info:
        DatabaseSettings(url=f"{BASE}?{query}")
    assert named(info.value, keywords), info.value
    assert "Cannot reach" not in str(info.value)
    assert_no_secret(info.value, caplog)


@pytest.mark.parametrize("query", ACCEPTED)
def test_valid_options_are_accepted(query: str) -> None:
    DatabaseSettings(url=f"{BASE}?{query}")
    if "hostaddr" not in query:  # one address per host
        DatabaseSettings(url=f"postgresql://h1,h2:5433/app?{query}")


@pytest.mark.parametrize("method", ["postgres", "postgres_state_backend"])
def test_the_builder_refuses_it_before_anything_connects(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(PostgresConfigError) as info:
        getattr(PynencBuilder(), method)(url=f"{BASE}?sslmode=bogus")
    assert named(info.value, ["sslmode"])
    assert_no_secret(info.value, caplog)


@pytest.mark.parametrize(
    "command", [["db", "current"], ["db", "upgrade"], ["inspect", "invocations"]]
)
def test_commands_name_the_option_not_the_server(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--url", f"{BASE}?sslmode=bogus"]) == 2
    err = capsys.readouterr().err
    assert 'invalid sslmode value: "bogus". Check sslmode in postgres_url' in err
    assert "Cannot reach" not in err
    for secret in SECRETS:
        assert secret not in err


def test_an_option_from_the_environment_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGSSLMODE", "bogus")
    with pytest.raises(PostgresConfigError, match="set by the environment variable PGSSLMODE"):
        DatabaseSettings(url=BASE)


def test_an_option_read_at_connect_time_is_a_config_error_without_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """libpq reads ``keepalives`` once it has a TCP socket, before sending anything."""
    url = f"postgresql://app:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/app"
    settings = DatabaseSettings(url=f"{url}?keepalives=often", retry_attempts=5)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PostgresConfigError) as info:
        get_database(settings).fetchone("SELECT 1", ())
    assert named(info.value, ["keepalives"]), info.value
    assert "postgresql://app:***@127.0.0.1:" in str(info.value)
    assert RETRY_LOG not in caplog.text
    assert_no_secret(info.value, caplog)
