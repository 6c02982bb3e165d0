"""Invocation rows are kept by the process that read them, never by the one that wrote them.

An invocation's row (its call and arguments) never changes once written, so a process
keeps the rows it read (a bounded, least-recently-used map) and the next read of the same
id costs no round trip. A row this process wrote is not kept: the write may belong to a
transaction that is rolled back. Each test deletes rows behind the process's back to see
where a read is served from.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.exceptions import InvocationNotFoundError
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.db.notify import stop_all_listeners
from tests.orchestrator.apps import build_app, register, runner_context


@pytest.fixture(autouse=True)
def _no_listener_left() -> Iterator[None]:
    """All-Postgres apps start a LISTEN thread; none may outlive its test's database."""
    yield
    stop_all_listeners()


def delete_rows(url: str, app_id: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM pynenc_invocation WHERE app_id = %s", (app_id,))


def reader(url: str, app_id: str, cache_size: int | None = None) -> Pynenc:
    """Another app instance on the same rows: its own state backend and cache."""
    config = {} if cache_size is None else {"postgres_invocation_cache_size": cache_size}
    return build_app(url, app_id, **config)


def test_a_row_read_once_is_read_again_without_the_database(database_url: str) -> None:
    writer = build_app(database_url, "cache-read")
    invocation_id = register(writer, "kept")
    app = reader(database_url, "cache-read")
    first = app.state_backend.get_invocation(invocation_id)
    delete_rows(database_url, "cache-read")
    again = app.state_backend.get_invocation(invocation_id)
    assert again.invocation_id == first.invocation_id
    assert again.call.serialized_arguments == first.call.serialized_arguments


def test_without_a_cache_every_read_goes_to_the_database(database_url: str) -> None:
    writer = build_app(database_url, "cache-off")
    invocation_id = register(writer, "not kept")
    app = reader(database_url, "cache-off", cache_size=0)
    app.state_backend.get_invocation(invocation_id)
    delete_rows(database_url, "cache-off")
    with pytest.raises(InvocationNotFoundError):
        app.state_backend.get_invocation(invocation_id)


def all_postgres(url: str, app_id: str) -> Pynenc:
    return PynencBuilder().postgres(url=url).app_id(app_id).build()


def test_the_writer_does_not_keep_what_it_wrote(database_url: str) -> None:
    # Every component on Postgres: nothing reads the row back after the registration.
    app = all_postgres(database_url, "cache-write")
    invocation_id = register(app, "written here")
    delete_rows(database_url, "cache-write")
    with pytest.raises(InvocationNotFoundError):
        app.state_backend.get_invocation(invocation_id)


def test_the_least_recently_used_row_goes_first(database_url: str) -> None:
    writer = build_app(database_url, "cache-bound")
    ids = [register(writer, f"row {i}") for i in range(3)]
    app = reader(database_url, "cache-bound", cache_size=2)
    for invocation_id in ids:
        app.state_backend.get_invocation(invocation_id)
    delete_rows(database_url, "cache-bound")
    with pytest.raises(InvocationNotFoundError):
        app.state_backend.get_invocation(ids[0])
    assert [app.state_backend.get_invocation(i).invocation_id for i in ids[1:]] == ids[1:]


def test_purge_forgets_the_rows_and_final_statuses_it_kept(database_url: str) -> None:
    app = PynencBuilder().postgres(url=database_url).app_id("cache-purge").build()
    invocation_id = register(app, "purged")
    owner = runner_context("owner")
    taken = list(app.orchestrator.get_invocations_to_run(1, owner))
    app.orchestrator.set_invocation_status(invocation_id, InvocationStatus.RUNNING, owner)
    app.orchestrator.set_invocation_result(taken[0], "done", owner)
    assert app.orchestrator.get_invocation_status(invocation_id) == InvocationStatus.SUCCESS
    app.state_backend.get_invocation(invocation_id)
    app.purge()
    with pytest.raises(KeyError):
        app.orchestrator.get_invocation_status(invocation_id)
    with pytest.raises(InvocationNotFoundError):
        app.state_backend.get_invocation(invocation_id)
