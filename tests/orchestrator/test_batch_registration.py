"""A ``parallelize`` batch is registered in one transaction, whatever its size.

Every row of a batch carries that transaction's id (``xmin``); an argument that cannot be
serialized late in a batch leaves nothing of the batch written; a batch whose reply is
lost after its commit is resent whole and registered once.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder

from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.notify import stop_all_listeners
from tests.orchestrator.apps import work
from tests.reliability.lost_reply import LostReplyProxy, lost_reply_proxy

# More invocations than a small batch, fewer than pynenc's default batch of 100.
CALLS = 75
TABLES = (
    "pynenc_invocation",
    "pynenc_orchestrator_invocation",
    "pynenc_invocation_history",
    "pynenc_broker_message",
)


@pytest.fixture(autouse=True)
def _no_listener_left() -> Iterator[None]:
    """All-Postgres apps start a LISTEN thread; none may outlive its test's database."""
    yield
    stop_all_listeners()


def all_postgres(
    url: str, app_id: str, apply_settings: str = "startup", **config: object
) -> Pynenc:
    return (
        PynencBuilder()
        .postgres(
            url=url,
            retry_initial_delay=0.01,
            apply_settings=apply_settings,
            statement_timeout_ms=60_000,
        )
        .app_id(app_id)
        .custom_config(**config)
        .build()
    )


def transactions_by_table(url: str, app_id: str) -> dict[str, dict[str, int]]:
    """Rows of the app in each table, counted by the transaction that wrote them."""
    found: dict[str, dict[str, int]] = {}
    with psycopg.connect(url) as conn:
        for table in TABLES:
            rows = conn.execute(
                f"SELECT xmin::text, count(*) FROM {table} WHERE app_id = %s GROUP BY 1",
                (app_id,),
            ).fetchall()
            found[table] = {row[0]: row[1] for row in rows}
    return found


class Unserializable:
    def __getstate__(self) -> dict[str, object]:
        raise RuntimeError("this argument cannot be serialized")


@pytest.mark.parametrize("apply_settings", ["startup", "transaction"])
def test_each_batch_is_one_transaction(database_url: str, apply_settings: str) -> None:
    """Also with settings applied per transaction (``SET LOCAL`` before the statement)."""
    app = all_postgres(
        database_url,
        f"batch-one-transaction-{apply_settings}",
        apply_settings,
        parallel_batch_size=100,
    )
    work.app = app
    calls = 250  # batches of 100, 100 and 50
    group = work.parallelize([(f"w{i}",) for i in range(calls)])
    assert len(group.invocations) == calls
    for table, by_transaction in transactions_by_table(database_url, app.app_id).items():
        assert sorted(by_transaction.values()) == [50, 100, 100], table
    first, last = group.invocations[0], group.invocations[-1]
    for invocation in (first, last):
        assert app.orchestrator.get_invocation_status(invocation.invocation_id).value == (
            "registered"
        )


def test_an_argument_that_fails_late_in_a_batch_leaves_the_batch_unwritten(
    database_url: str,
) -> None:
    app = all_postgres(database_url, "batch-rolled-back")
    work.app = app
    params: list[tuple[object]] = [(f"w{i}",) for i in range(CALLS)]
    params[-1] = (Unserializable(),)  # the batch's last argument
    with pytest.raises(RuntimeError, match="cannot be serialized"):
        work.parallelize(params)
    assert transactions_by_table(database_url, app.app_id) == {table: {} for table in TABLES}
    # The connection that rolled back serves the next batch.
    work.parallelize([(f"again{i}",) for i in range(CALLS)])
    for by_transaction in transactions_by_table(database_url, app.app_id).values():
        assert list(by_transaction.values()) == [CALLS]


@pytest.fixture
def proxy(database_url: str) -> Iterator[LostReplyProxy]:
    with lost_reply_proxy(database_url) as proxy:
        yield proxy
    dispose_all()


def test_a_batch_whose_reply_is_lost_is_resent_whole_and_registered_once(
    proxy: LostReplyProxy, database_url: str
) -> None:
    app = all_postgres(proxy.url, "batch-lost-reply")
    work.app = app
    work("warm")  # connect and check the schema before the proxy is armed
    proxy.arm("pynenc-postgres: register and route")
    calls = CALLS
    group = work.parallelize([(f"w{i}",) for i in range(calls)])
    assert proxy.dropped == 1
    ids = [str(i.invocation_id) for i in group.invocations]
    with psycopg.connect(database_url) as conn:
        history = conn.execute(
            "SELECT invocation_id, count(*) FROM pynenc_invocation_history "
            "WHERE invocation_id = ANY(%s) GROUP BY 1",
            (ids,),
        ).fetchall()
        routed = conn.execute(
            "SELECT count(DISTINCT invocation_id) FROM pynenc_broker_message "
            "WHERE invocation_id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert sorted(count for _, count in history) == [1] * calls
    assert routed == (calls,)
    # Whole: the batch's rows were written by one transaction; the resend wrote no row
    # again, but its routes (a copy is dropped when taken).
    for table, by_transaction in transactions_by_table(database_url, app.app_id).items():
        written = {xmin: n for xmin, n in by_transaction.items() if n != 1}  # not "warm"
        assert list(written.values()) in ([calls], [calls, calls]), table
