"""PostgresBroker beyond pynenc's suites: wake-ups, processes, isolation, the table itself."""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc

from pynenc_postgres.broker import PostgresBroker
from pynenc_postgres.broker.sql import channel_name
from pynenc_postgres.broker.waiting import RECHECK_JITTER, ClaimLoop
from pynenc_postgres.db import schema
from pynenc_postgres.db.errors import PostgresConfigError
from pynenc_postgres.db.models import QUEUE_STORAGE_PARAMETERS
from pynenc_postgres.db.notify import NotificationListener, stop_all_listeners
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.db.wakeups import Notifier, get_notifier
from tests.broker.conftest import build_app

# Long enough that a consumer returning early was woken, not timed out.
LONG_WAIT_SEC = 60.0
DEADLINE_SEC = 30.0


def broker_of(app: Pynenc) -> PostgresBroker:
    broker = app.broker
    assert isinstance(broker, PostgresBroker)
    return broker


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SEC
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {DEADLINE_SEC}s waiting for {what}")
        time.sleep(0.01)


class WaitingConsumer:
    """A thread in ``retrieve_invocation`` of an empty queue, and what it got."""

    def __init__(self, broker: PostgresBroker, queue_name: str = "default") -> None:
        self.result: list[Any] = []
        self.elapsed = 0.0
        self.thread = threading.Thread(target=self._run, args=(broker, queue_name))
        self.thread.start()

    def _run(self, broker: PostgresBroker, queue_name: str) -> None:
        started = time.monotonic()
        self.result.append(broker.retrieve_invocation(queue_name))
        self.elapsed = time.monotonic() - started

    def join(self) -> Any:
        self.thread.join(LONG_WAIT_SEC + DEADLINE_SEC)
        assert not self.thread.is_alive()
        return self.result[0]


def notifier_of(broker: PostgresBroker) -> Notifier:
    notifier = broker.notifier()
    notifier.start()
    return notifier


def listener_of(broker: PostgresBroker) -> NotificationListener:
    """The LISTEN connection of this process, which leads its (simulated) host."""
    listener = notifier_of(broker).listener
    assert listener is not None
    return listener


def start_waiting(broker: PostgresBroker, queue_name: str = "default") -> WaitingConsumer:
    """A consumer blocked on the notifier (past its empty claim), ready to be woken."""
    notifier = notifier_of(broker)
    key = broker.wake_key(broker.app_id, queue_name)
    consumer = WaitingConsumer(broker, queue_name)
    wait_until(lambda: notifier.waiting(key) == 1, "the consumer to wait for a notification")
    return consumer


def route_unannounced(url: str, broker: PostgresBroker, invocation_id: str) -> None:
    """Queue a row as a route whose notification was lost: no NOTIFY, another session."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id) "
            "VALUES (%s, 'default', 0, %s)",
            (broker.app_id, invocation_id),
        )


# -- ordering and scope ------------------------------------------------------------


def test_priority_then_routing_order_across_batches_and_single_routes(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url, queue_timeout_sec=0))
    broker.route_invocations(["low-1", "low-2"], "default", -100.0)
    broker.route_invocation("mid-1", "default", 0.5)
    broker.route_invocations(["high-1", "high-2", "high-3"], "default", 100.0)
    broker.route_invocation("mid-2", "default", 0.5)
    broker.route_invocation("low-3", "default", -100.0)

    taken = [broker.retrieve_invocation() for _ in range(8)]

    assert taken == ["high-1", "high-2", "high-3", "mid-1", "mid-2", "low-1", "low-2", "low-3"]
    assert broker.retrieve_invocation() is None


def test_queues_and_apps_are_separate_and_purge_takes_only_this_apps_rows(
    broker_url: str,
) -> None:
    app_a = build_app(broker_url, queue_timeout_sec=0, queues=("default", "other"))
    app_b = build_app(broker_url, queue_timeout_sec=0, queues=("default", "other"))
    a, b = broker_of(app_a), broker_of(app_b)
    a.route_invocations(["a1", "a2"], "default", 0.0)
    a.route_invocation("a3", "other", 0.0)
    b.route_invocations(["b1", "b2", "b3"], "default", 0.0)
    app_b.client_data_store._store("key", "b's value")

    assert a.count_invocations() == 3
    assert a.count_invocations(["other"]) == 1
    assert b.count_invocations(["default"]) == 3
    assert a.retrieve_invocation("other") == "a3"
    assert b.retrieve_invocation("other") is None

    app_a.purge()

    assert a.count_invocations() == 0
    assert b.count_invocations() == 3
    assert app_b.client_data_store._retrieve("key") == "b's value"
    assert [b.retrieve_invocation() for _ in range(3)] == ["b1", "b2", "b3"]


def test_claims_take_one_statement_backed_by_the_claim_index(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url))
    app_id = broker.app_id
    with psycopg.connect(broker_url) as conn:
        conn.execute("SET enable_seqscan = off")  # the plan must not depend on table stats
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                f"EXPLAIN {broker.sql.claim}", (app_id, app_id, "default")
            ).fetchall()
        )
    assert "ix_pynenc_broker_message_app_id_queue_name_priority_message_id" in plan
    assert "LockRows" in plan
    assert "Sort" not in plan


# -- wake-ups ------------------------------------------------------------------------


def test_an_idle_consumer_is_woken_by_the_notify_of_a_route(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url, queue_timeout_sec=LONG_WAIT_SEC))
    consumer = start_waiting(broker)
    notifier = notifier_of(broker)
    received, wakes = listener_of(broker).notifications, notifier.wakes

    # Routed by another process (no local shortcut): only the notification wakes it.
    other = broker_of(build_app(broker_url, app_id=broker.app_id))
    with psycopg.connect(broker_url, autocommit=True) as conn:
        conn.execute(
            other.sql.route_one,
            (
                broker.app_id,
                "default",
                0.0,
                "woken",
                broker.sql.channel,
                f"default:{broker.app_id}",
            ),
        )

    assert consumer.join() == "woken"
    assert consumer.elapsed < LONG_WAIT_SEC
    assert listener_of(broker).notifications > received
    assert notifier.wakes == wakes + 1


def test_with_process_scope_each_process_listens_for_its_own_consumers(
    broker_url: str,
) -> None:
    """The fallback where abstract socket names do not exist (and by choice elsewhere)."""
    broker = broker_of(
        build_app(
            broker_url, queue_timeout_sec=LONG_WAIT_SEC, postgres_broker_listener_scope="process"
        )
    )
    notifier = notifier_of(broker)
    assert (notifier.scope, notifier.role) == ("process", "leader")
    consumer = start_waiting(broker)
    route_unannounced(broker_url, broker, "woken")
    with psycopg.connect(broker_url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (broker.sql.channel, f"default:{broker.app_id}"))
    assert consumer.join() == "woken"
    assert consumer.elapsed < LONG_WAIT_SEC


def test_an_unknown_listener_scope_names_the_field_and_the_choices(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url, postgres_broker_listener_scope="rack"))
    with pytest.raises(PostgresConfigError, match=r"postgres_broker_listener_scope.*'host'"):
        broker.retrieve_invocation()


def test_a_batch_route_wakes_every_idle_consumer_of_the_queue(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url, queue_timeout_sec=LONG_WAIT_SEC))
    notifier = notifier_of(broker)
    key = broker.wake_key(broker.app_id, "default")
    consumers = [WaitingConsumer(broker) for _ in range(3)]
    wait_until(lambda: notifier.waiting(key) == 3, "three consumers to wait")
    wakes = notifier.wakes

    route_unannounced(broker_url, broker, "x")
    route_unannounced(broker_url, broker, "y")
    route_unannounced(broker_url, broker, "z")
    with psycopg.connect(broker_url, autocommit=True) as conn:  # one notification for three
        conn.execute("SELECT pg_notify(%s, %s)", (broker.sql.channel, f"#3:{key}"))

    assert sorted(consumer.join() for consumer in consumers) == ["x", "y", "z"]
    assert notifier.wakes == wakes + 3


def test_a_route_to_another_queue_or_app_does_not_end_the_wait(broker_url: str) -> None:
    app = build_app(broker_url, queue_timeout_sec=LONG_WAIT_SEC, queues=("default", "other"))
    broker = broker_of(app)
    other_app = broker_of(build_app(broker_url))
    consumer = start_waiting(broker)
    listener = listener_of(broker)
    wakes = notifier_of(broker).wakes

    received = listener.notifications
    broker.route_invocation("elsewhere", "other", 0.0)
    other_app.route_invocation("not mine", "default", 0.0)
    wait_until(lambda: listener.notifications >= received + 2, "both notifications")
    assert consumer.thread.is_alive()
    assert notifier_of(broker).wakes == wakes

    broker.route_invocation("mine", "default", 0.0)
    assert consumer.join() == "mine"
    assert broker.retrieve_invocation("other") == "elsewhere"


def test_an_empty_queue_returns_none_after_queue_timeout_sec(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url, queue_timeout_sec=0.3))
    started = time.monotonic()
    assert broker.retrieve_invocation() is None
    assert time.monotonic() - started >= 0.3


def test_poll_mode_opens_no_listen_connection_and_still_delivers(broker_url: str) -> None:
    broker = broker_of(
        build_app(
            broker_url,
            queue_timeout_sec=LONG_WAIT_SEC,
            postgres_broker_wakeup="poll",
            postgres_broker_poll_interval_sec=0.02,
        )
    )
    assert broker.wakeup_mode == "poll"
    assert broker.notifier().scope == "poll"
    consumer = WaitingConsumer(broker)

    route_unannounced(broker_url, broker, "polled")

    assert consumer.join() == "polled"
    assert consumer.elapsed < LONG_WAIT_SEC
    with psycopg.connect(broker_url) as conn:
        listening = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).fetchone()
    assert listening == (0,)


def test_auto_mode_polls_behind_a_transaction_mode_pooler(broker_url: str) -> None:
    direct = broker_of(build_app(broker_url))
    pooled = broker_of(build_app(broker_url, postgres_apply_settings="transaction"))
    assert (direct.wakeup_mode, pooled.wakeup_mode) == ("listen", "poll")
    forced = broker_of(
        build_app(
            broker_url, postgres_apply_settings="transaction", postgres_broker_wakeup="LISTEN"
        )
    )
    assert forced.wakeup_mode == "listen"


def test_an_unknown_wakeup_mode_names_the_field_and_the_choices(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url, postgres_broker_wakeup="push"))
    with pytest.raises(PostgresConfigError, match=r"postgres_broker_wakeup.*'listen'.*'poll'"):
        broker.retrieve_invocation()


def test_the_listener_reconnects_after_its_connection_is_killed(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url, queue_timeout_sec=LONG_WAIT_SEC))
    listener = listener_of(broker)
    first_pid = listener.backend_pid
    assert first_pid is not None

    with psycopg.connect(broker_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
    wait_until(
        lambda: listener.connected and listener.backend_pid not in (None, first_pid),
        "the listener to LISTEN again on a new connection",
    )
    assert listener.reconnects >= 1

    consumer = start_waiting(broker)
    wakes = notifier_of(broker).wakes
    with psycopg.connect(broker_url, autocommit=True) as conn:
        conn.execute(
            broker.sql.route_one,
            (
                broker.app_id,
                "default",
                0.0,
                "after reconnect",
                broker.sql.channel,
                f"default:{broker.app_id}",
            ),
        )
    assert consumer.join() == "after reconnect"
    assert notifier_of(broker).wakes == wakes + 1


def test_work_routed_while_the_listener_reconnects_is_found_by_a_recheck(
    broker_url: str,
) -> None:
    """Whatever was routed while nobody listened, its notification is lost: when the
    LISTEN is back, every idle consumer looks at the table again."""
    broker = broker_of(
        build_app(
            broker_url,
            queue_timeout_sec=LONG_WAIT_SEC,
            # Neither polling nor the periodic re-check comes within the test's wait.
            postgres_broker_poll_interval_sec=LONG_WAIT_SEC,
            postgres_broker_recheck_interval_sec=10 * LONG_WAIT_SEC,
        )
    )
    consumer = start_waiting(broker)
    notifier = notifier_of(broker)
    listener = listener_of(broker)
    first_pid = listener.backend_pid
    with psycopg.connect(broker_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
    wait_until(lambda: not notifier.live, "the listener to notice")
    route_unannounced(broker_url, broker, "routed while nobody listened")

    assert consumer.join() == "routed while nobody listened"
    assert consumer.elapsed < LONG_WAIT_SEC
    assert listener.reconnects >= 1 and listener.backend_pid != first_pid


def test_a_consumer_waiting_while_the_listener_is_down_polls(broker_url: str) -> None:
    """While LISTEN is lost, waits fall back to polling: routed work is still taken."""
    broker = broker_of(
        build_app(
            broker_url, queue_timeout_sec=LONG_WAIT_SEC, postgres_broker_poll_interval_sec=0.02
        )
    )
    listener = listener_of(broker)
    listener.stop()  # as if the connection were gone for good
    assert not listener.connected
    assert not notifier_of(broker).live

    consumer = WaitingConsumer(broker)
    route_unannounced(broker_url, broker, "polled meanwhile")

    assert consumer.join() == "polled meanwhile"


def test_a_very_long_app_id_still_notifies_everyone(broker_url: str) -> None:
    """NOTIFY payloads must stay under 8000 bytes; a longer key wakes every waiter."""
    app_id = "long-" + "é" * 5000  # 10,005 bytes in UTF-8
    broker = broker_of(build_app(broker_url, app_id=app_id, queue_timeout_sec=LONG_WAIT_SEC))
    consumer = start_waiting(broker)

    broker.route_invocation("for the long app", "default", 0.0)

    assert consumer.join() == "for the long app"


def test_a_long_schema_name_gets_a_channel_within_the_identifier_limit(
    broker_url: str,
) -> None:
    long_schema = "pynenc_" + "s" * 56  # 63 bytes: the longest identifier
    channel = channel_name(long_schema)
    assert len(channel.encode()) <= 63
    assert channel != channel_name(long_schema[:-1])
    schema.upgrade(DatabaseSettings(url=broker_url, schema=long_schema))
    broker = broker_of(
        build_app(broker_url, queue_timeout_sec=LONG_WAIT_SEC, postgres_schema=long_schema)
    )
    consumer = start_waiting(broker)

    broker.route_invocation("in the long schema", "default", 0.0)

    assert consumer.join() == "in the long schema"


# -- processes -------------------------------------------------------------------


def _take_in_forked_child(broker: PostgresBroker, results: Any) -> None:
    try:
        notifier = broker.notifier()
        notifier.start()
        results.put({"role": notifier.role, "taken": broker.retrieve_invocation()})
    except BaseException as exc:
        results.put({"error": repr(exc)})
        raise
    finally:
        stop_all_listeners()


# The parent's listening thread is what makes it multi-threaded; the child never uses it
# (its at-fork handler drops the parent's notifier), which is the point of the test.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_follows_the_parent_and_the_parent_keeps_leading(
    broker_url: str,
) -> None:
    broker = broker_of(build_app(broker_url, queue_timeout_sec=LONG_WAIT_SEC))
    parent = notifier_of(broker)
    assert parent.role == "leader"
    parent_pid = listener_of(broker).backend_pid
    broker.route_invocation("for the child", "default", 0.0)

    ctx = multiprocessing.get_context("fork")
    results: Any = ctx.Queue()
    child = ctx.Process(target=_take_in_forked_child, args=(broker, results))
    child.start()
    report = results.get(timeout=DEADLINE_SEC)
    child.join(DEADLINE_SEC)

    assert "error" not in report, report
    # The child dropped the parent's socket and connection, and joined the host's
    # notifier, which the parent leads: no LISTEN connection of its own.
    assert report == {"role": "follower", "taken": "for the child"}
    assert child.exitcode == 0
    # The child's exit closed nothing of the parent's: it still leads and listens.
    assert broker.notifier() is parent
    assert parent.live and listener_of(broker).backend_pid == parent_pid
    consumer = start_waiting(broker)
    route_unannounced(broker_url, broker, "for the parent")
    with psycopg.connect(broker_url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (broker.sql.channel, f"default:{broker.app_id}"))
    assert consumer.join() == "for the parent"


def test_pickling_carries_configuration_never_a_connection(broker_url: str) -> None:
    app = build_app(broker_url, queue_timeout_sec=0)
    broker = broker_of(app)
    broker.route_invocation("before", "default", 0.0)
    listener = listener_of(broker)

    copy = pickle.loads(pickle.dumps(broker))

    assert copy._loop is None
    assert copy.retrieve_invocation() == "before"
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(listener)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(broker.notifier())


# -- the table -------------------------------------------------------------------


def test_the_queue_table_has_the_models_autovacuum_settings(broker_url: str) -> None:
    """Alembic's autogenerate does not compare storage parameters; this test does."""
    with psycopg.connect(broker_url) as conn:
        row = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'pynenc_broker_message'"
        ).fetchone()
    assert row is not None
    assert dict(option.split("=", 1) for option in row[0]) == QUEUE_STORAGE_PARAMETERS


# -- claim durability --------------------------------------------------------------


def claim_setting(url: str, broker: PostgresBroker, queue_name: str = "default") -> str:
    """``synchronous_commit`` in effect at the end of a claim's transaction."""
    claim, params = broker._claim(queue_name)
    with psycopg.connect(url) as conn:  # one explicit transaction around the claim
        conn.execute(claim, params)
        row = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
    assert row is not None
    return str(row[0])


def test_a_claim_commits_with_its_own_synchronous_commit(broker_url: str) -> None:
    relaxed = broker_of(build_app(broker_url, queue_timeout_sec=0))
    strict = broker_of(
        build_app(broker_url, queue_timeout_sec=0, postgres_broker_claim_synchronous_commit="")
    )
    relaxed.route_invocation("relaxed", "default", 0.0)
    strict.route_invocation("strict", "default", 0.0)

    assert claim_setting(broker_url, relaxed) == "off"
    assert claim_setting(broker_url, relaxed) == "on"  # nothing taken: nothing changed
    assert claim_setting(broker_url, strict) == "on"
    with psycopg.connect(broker_url) as conn:  # it never outlives the claim's transaction
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_an_unknown_claim_synchronous_commit_is_refused(broker_url: str) -> None:
    broker = broker_of(build_app(broker_url, postgres_broker_claim_synchronous_commit="later"))
    with pytest.raises(PostgresConfigError, match="postgres_broker_claim_synchronous_commit"):
        broker.retrieve_invocation()


# -- the poll schedule ---------------------------------------------------------------


def test_an_idle_poller_backs_off_to_the_longest_interval_and_keeps_it_after_work() -> None:
    """Claims of one idle consumer that polls: 0.02 s apart, doubling to 0.16 s; a claim
    that finds work is followed by one at once, and the schedule goes on at the interval
    it had reached (0.16 s), not from the first one."""
    notifier = get_notifier(DatabaseSettings(url="postgresql://unused/db"), "unused", "poll")
    loop = ClaimLoop(notifier, poll_interval=0.02, poll_max_interval=0.16, recheck_interval=60)
    times: list[float] = []

    def claim() -> str | None:
        times.append(time.monotonic())
        return "found" if len(times) == 8 else None

    # Claims due at 0, 0.02, 0.06, 0.14, 0.30, 0.46, 0.62 (each interval within a fifth
    # of that): the 8th (0.78, at the soonest 0.62) comes later.
    assert loop.retrieve("q:app", claim, timeout=0.6) is None
    assert loop.retrieve("q:app", claim, timeout=5.0) == "found"
    assert loop.retrieve("q:app", claim, timeout=0.01) is None  # the claim at once
    assert notifier.seat("q:app", 0.02).interval == pytest.approx(0.16)
    assert loop.retrieve("q:app", claim, timeout=0.25) is None
    assert len(times) >= 10
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, planned in zip(gaps, [0.02, 0.04, 0.08, 0.16, 0.16, 0.16, 0.16], strict=False):
        assert gap >= planned * (1 - RECHECK_JITTER) - 0.002  # never sooner than the schedule
    assert gaps[7] < 0.02  # after the find: at once
    assert gaps[8] >= 0.16 * (1 - RECHECK_JITTER) - 0.002  # then the interval reached


def test_the_polls_of_a_hosts_consumers_do_not_keep_step() -> None:
    """Consumers that start together would otherwise claim on one common beat: each
    interval is spread by up to a fifth either way."""
    notifier = get_notifier(DatabaseSettings(url="postgresql://unused/db"), "unused", "poll")
    loop = ClaimLoop(notifier, poll_interval=2.0, poll_max_interval=2.0, recheck_interval=60)
    seat = notifier.seat("spread:app", 2.0)
    waits = []
    for _ in range(50):
        loop._empty(seat, 100.0, (0, 0))
        waits.append(seat.poll_at - 100.0)
    assert all(2.0 * (1 - RECHECK_JITTER) <= w <= 2.0 * (1 + RECHECK_JITTER) for w in waits)
    assert len({round(w, 6) for w in waits}) > 40
