"""``inspect invocation`` shows values that pynenc keeps in its client data store.

pynenc stores a large argument, result or exception as a reference key
(``__pynenc__client_data__:<hash>``) and the value in the client data store. The detail
resolves the key through ``pynenc_client_data``, shows the beginning of a large value
(all of it with ``--full``), and says so when the row is gone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.cli import main
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.inspect import (
    CLIENT_DATA_PREFIX,
    MAX_CHARS,
    StoredValue,
    _client_data,
    invocation_detail,
)

APP_ID = "inspect-client-data"
# Above pynenc's min_size_to_cache (1024 characters), with characters of 2, 3 and 4 bytes.
BIG_TEXT = "naïve €uro 🐍 and more; " * 120
BIG_RESULT = list(range(1500))

placeholder = PynencBuilder().memory().app_id("inspect-placeholder").build()


@placeholder.task
def describe(text: str, count: int) -> list[int]:
    return list(range(count))


@pytest.fixture
def app(database_url: str) -> Iterator[Pynenc]:
    app = PynencBuilder().app_id(APP_ID).postgres(url=database_url).build()
    describe.app = app
    yield app
    describe.app = placeholder


def inspect(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> str:
    assert main(["inspect", "invocation", *args, "--app-id", APP_ID, "--url", url]) == 0
    return capsys.readouterr().out


def test_arguments_result_and_exception_from_the_client_data_store_are_shown(
    app: Pynenc, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with_result = describe(BIG_TEXT, 3).invocation_id
    with_exception = describe(BIG_TEXT, 4).invocation_id
    app.state_backend.set_result(with_result, BIG_RESULT)
    app.state_backend.set_exception(with_exception, ValueError(BIG_TEXT))
    text = app.serializer.serialize(BIG_TEXT)
    result = app.serializer.serialize(BIG_RESULT)
    assert len(text) > MAX_CHARS and len(result) > MAX_CHARS

    detail = invocation_detail(DatabaseSettings(url=database_url), with_result, APP_ID)[0]
    assert detail.serialized_arguments.count(CLIENT_DATA_PREFIX) == 1  # what the row holds
    argument = detail.arguments["text"]
    assert argument.reference is not None and argument.reference.startswith(CLIENT_DATA_PREFIX)
    assert argument == StoredValue(
        text=text[:MAX_CHARS], reference=argument.reference, size=len(text.encode()), complete=False
    )
    assert detail.arguments["count"] == StoredValue(text="3", size=1)

    out = inspect(capsys, database_url, with_result)
    assert CLIENT_DATA_PREFIX not in out
    assert f"  arguments  text={text[:MAX_CHARS]}... (the first {MAX_CHARS:,} characters" in out
    assert "\n             count=3\n" in out
    assert f"Result\n  {result[:MAX_CHARS]}... (the first" in out

    full = inspect(capsys, database_url, with_result, "--full")
    assert f"  arguments  text={text}\n" in full
    assert f"Result\n  {result}\n" in full

    out = inspect(capsys, database_url, with_exception, "--full")
    assert "Exception ValueError" in out
    assert CLIENT_DATA_PREFIX not in out
    serialized = app.state_backend._get_exception(with_exception)
    stored = app.client_data_store._retrieve(_error_data_key(serialized))
    assert json.dumps(stored)[1:-1] in out  # error_data, resolved, inside the JSON shown


def _error_data_key(serialized_exception: str) -> str:
    key: str = json.loads(serialized_exception)["error_data"]
    assert key.startswith(CLIENT_DATA_PREFIX)
    return key


def test_a_reference_whose_row_is_gone_is_named(
    app: Pynenc, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    invocation_id = describe(BIG_TEXT, 5).invocation_id
    app.state_backend.set_result(invocation_id, BIG_RESULT)
    keys: list[Any]
    with psycopg.connect(database_url, autocommit=True) as conn:
        keys = [row[0] for row in conn.execute("SELECT data_key FROM pynenc_client_data")]
        conn.execute("DELETE FROM pynenc_client_data")
    assert len(keys) == 2

    out = inspect(capsys, database_url, invocation_id)
    for key in keys:
        assert (
            f"(kept in the client data store as {key}, but pynenc_client_data has no such "
            "row: it was deleted, or another client data store keeps it)"
        ) in out
    assert "\n             count=5\n" in out
    detail = invocation_detail(DatabaseSettings(url=database_url), invocation_id, APP_ID)[0]
    assert detail.result is not None and detail.result.missing


def test_the_beginning_of_a_value_ends_on_a_whole_character(app: Pynenc, database_url: str) -> None:
    """Only the first bytes are read; a cut through a character's bytes leaves it out."""
    key = f"{CLIENT_DATA_PREFIX}:{'0' * 64}"
    value = "\u20ac" * 2000 + "\ud800"  # 3 bytes each, and a lone surrogate the store keeps
    app.client_data_store._store(key, value)
    settings = DatabaseSettings(url=database_url)

    for max_chars in (1, 333, 1334, 5000):
        found = _client_data(settings, APP_ID, [key], max_chars)[key]
        assert found.size == len(value.encode("utf-8", "surrogatepass"))
        assert found.text == value[:max_chars]
        assert found.complete is (max_chars >= len(value))
    assert _client_data(settings, APP_ID, [key], None)[key].text == value
    assert _client_data(settings, "another-app", [key], None) == {}
