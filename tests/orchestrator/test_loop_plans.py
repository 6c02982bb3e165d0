"""The statements of a runner's loop stay cheap over a backlog of 100,000 queued invocations.

A runner's loop, idle or busy, sends the same few statements again and again: the
claim (the broker's own, and the one that also moves the invocation to PENDING), the
status change that follows, the blocking-control query, the heartbeats, and the
atomic-service checks, recovery searches included. Each must touch at most ``BUDGET``
shared buffers whatever the backlog, with statistics taken after the backlog arrived and
with statistics taken while the tables were still small (autovacuum had not analyzed them
since), and with the plan a prepared statement gets for the values (custom) as well as
the one it may cache (generic).

``EXPLAIN (ANALYZE, BUFFERS)`` runs each statement for real, in a transaction that is
rolled back, so writes leave nothing behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.broker.sql import statements as broker_statements
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.orchestrator.lifecycle_sql import TransitionKind, lifecycle_statements
from pynenc_postgres.orchestrator.sql import statements as orchestrator_statements
from pynenc_postgres.orchestrator.transitions import statuses_requiring_owner
from tests.conftest import PostgresServer

BACKLOG = 100_000
BUDGET = 100
APP = "loop-plans"
QUEUE = "default"
ORCH = orchestrator_statements("public")
BROKER = broker_statements("public")
LIFECYCLE = lifecycle_statements("public")
AVAILABLE = sorted(s.value for s in InvocationStatus.get_available_for_run_statuses())
DEAD_AFTER = 600.0
NOW = datetime.now(UTC)
# The finish of an atomic-service run: its UPDATE's parameters, then its INSERT's.
FINALIZE = (NOW, "completed", "", "", APP, "run-1", APP, "run-1", "runner-1", "completed", "")
FINALIZE += (NOW, NOW)

TABLES = (
    "pynenc_orchestrator_invocation",
    "pynenc_invocation",
    "pynenc_orchestrator_waiting",
    "pynenc_broker_message",
    "pynenc_runner_heartbeat",
    "pynenc_atomic_service_execution",
)

# Small tables, analyzed: what the statistics say when autovacuum last looked early on.
SMALL = (
    """INSERT INTO pynenc_orchestrator_invocation (app_id, invocation_id, task_id, call_id,
           status, status_set_at)
       SELECT %(app)s, 'early-' || i, 'tasks.work', 'tasks.work:' || i, 'success', now()
       FROM generate_series(1, 20) AS i""",
    """INSERT INTO pynenc_runner_heartbeat (app_id, runner_id, can_run_atomic_service)
       SELECT %(app)s, 'runner-' || i, i = 1 FROM generate_series(1, 4) AS i""",
)

# The backlog: queued invocations, REGISTERED and in the queue the runners consume, and
# a few parents (RUNNING) waiting for children (REGISTERED) under blocking control.
BACKLOG_ROWS = (
    """INSERT INTO pynenc_orchestrator_invocation (app_id, invocation_id, task_id, call_id,
           status, status_set_at, registered_at)
       SELECT %(app)s, 'queued-' || i, 'tasks.work', 'tasks.work:' || i, 'registered',
              now() - interval '1 hour', now() - interval '1 hour' + i * interval '1 ms'
       FROM generate_series(1, %(n)s) AS i""",
    """INSERT INTO pynenc_invocation (app_id, invocation_id, task_id, call_id, arguments_id,
           serialized_arguments)
       SELECT %(app)s, 'queued-' || i, 'tasks.work', 'tasks.work:' || i, 'args-' || i, '{}'
       FROM generate_series(1, %(n)s) AS i""",
    """INSERT INTO pynenc_broker_message (app_id, queue_name, priority, invocation_id)
       SELECT %(app)s, %(queue)s, 0, 'queued-' || i FROM generate_series(1, %(n)s) AS i""",
    """INSERT INTO pynenc_orchestrator_invocation (app_id, invocation_id, task_id, call_id,
           status, status_owner_id, status_set_at)
       SELECT %(app)s, 'parent-' || p, 'tasks.flow', 'tasks.flow:' || p, 'running',
              'runner-' || p, now()
       FROM generate_series(1, 4) AS p""",
    """INSERT INTO pynenc_orchestrator_waiting (app_id, waiter_invocation_id,
           waited_invocation_id)
       SELECT %(app)s, 'parent-' || p, 'queued-' || (p * 1000 + c)
       FROM generate_series(1, 4) AS p, generate_series(1, 5) AS c""",
    # Taken an hour ago by workers that stopped before the next status change.
    """INSERT INTO pynenc_orchestrator_invocation (app_id, invocation_id, task_id, call_id,
           status, status_set_at, taken_at)
       SELECT %(app)s, 'stranded-' || i, 'tasks.work', 'tasks.work:stranded-' || i,
              'registered', now() - interval '2 hours', now() - interval '1 hour'
       FROM generate_series(1, 3) AS i""",
)


@dataclass(frozen=True)
class Statement:
    name: str
    sql: str
    params: tuple[Any, ...]


def _positional(name: str, query: str, named: dict[str, Any]) -> Statement:
    """A statement with named parameters (``%(name)s``) as one with ``%s`` placeholders."""
    values: list[Any] = []

    def placeholder(match: re.Match[str]) -> str:
        values.append(named[match.group(1)])
        return "%s"

    return Statement(name, re.sub(r"%\((\w+)\)s", placeholder, query), tuple(values))


def _take(relaxed: bool) -> dict[str, Any]:
    take = {
        "app": APP,
        "queue": QUEUE,
        "runner": "runner-1",
        "change": "change-1",
        "from": AVAILABLE,
        "required": statuses_requiring_owner(),
        "free_tasks": ["tasks.work"],
        "recorded": NOW,
        "ctx": "runner-1",
    }
    return {**take, "commit": "off"} if relaxed else take


def loop_statements() -> list[Statement]:
    """Every statement of a runner's loop, with the parameters the loop sends."""
    runners = ["runner-1", "runner-2", "runner-3", "runner-4"]
    return [
        _positional("claim and take", LIFECYCLE.claim_and_take, _take(relaxed=False)),
        _positional(
            "claim and take (relaxed commit)", LIFECYCLE.claim_and_take_relaxed, _take(True)
        ),
        _positional(
            "status change of a claimed invocation",
            LIFECYCLE.transition(TransitionKind(owner_check=True, final=False)),
            {
                "status": "running",
                "keeps": False,
                "owner": "runner-1",
                "change": "change-2",
                "app": APP,
                "id": "queued-1",
                "from": ["pending"],
                "required": statuses_requiring_owner(),
                "runner": "runner-1",
                "recorded": NOW,
                "ctx": "runner-1",
            },
        ),
        Statement("broker claim", BROKER.claim, (APP, APP, QUEUE)),
        Statement("broker claim (relaxed commit)", BROKER.claim_relaxed, (APP, APP, QUEUE, "off")),
        Statement("blocking control", ORCH.blocking_invocations, (APP, APP, AVAILABLE, 1)),
        Statement("heartbeats", ORCH.register_heartbeats, (APP, False, None, runners, None)),
        Statement("active runners", ORCH.active_runners, (APP, DEAD_AFTER)),
        Statement(
            "active runners (eligible)", ORCH.active_runners_by_eligibility, (APP, DEAD_AFTER, True)
        ),
        Statement("abandon a dead holder", ORCH.abandon_dead_holder, (DEAD_AFTER, APP, DEAD_AFTER)),
        Statement(
            "start the atomic service",
            ORCH.start_running_execution,
            (APP, "run-1", "runner-1", "", None),
        ),
        Statement("atomic-service holder", ORCH.running_execution, (APP,)),
        Statement(
            "finish the atomic service",
            ORCH.finalize_execution,
            FINALIZE,
        ),
        Statement("running recovery candidates", ORCH.running_for_recovery, (APP, DEAD_AFTER)),
        Statement("pending recovery candidates", ORCH.pending_for_recovery, (APP, 5.0)),
        Statement(
            "stranded recovery candidates", ORCH.stranded_for_recovery, (APP, AVAILABLE, 5.0)
        ),
    ]


def _pg_type(value: Any) -> str:
    if isinstance(value, datetime):
        return "timestamptz"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "float8"
    if isinstance(value, list):
        return "text[]"
    return "text"


def _numbered(query: str) -> str:
    """psycopg's ``%s`` placeholders as ``$n`` (and ``%%`` as ``%``), for PREPARE."""
    counter = iter(range(1, 1000))
    return re.sub(r"%%|%s", lambda m: "%" if m.group() == "%%" else f"${next(counter)}", query)


def buffers(conn: psycopg.Connection[Any], statement: Statement, mode: str) -> int:
    """Shared buffers the statement's execution touched, with ``mode`` plans."""
    types = [_pg_type(p) if p is not None else "text" for p in statement.params]
    # A NULL heartbeat queue list or start time is typed by the statement's own cast.
    types = [
        "text[]" if p is None and "heartbeat" in statement.name else t
        for p, t in zip(statement.params, types, strict=True)
    ]
    types = [
        "timestamptz" if p is None and "atomic service" in statement.name else t
        for p, t in zip(statement.params, types, strict=True)
    ]
    with conn.transaction(force_rollback=True):
        conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
        conn.execute(f"PREPARE loop_statement ({', '.join(types)}) AS {_numbered(statement.sql)}")
        try:
            values = sql.SQL(", ").join(sql.Literal(p) for p in statement.params)
            explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE loop_statement({})")
            row = conn.execute(explain.format(values)).fetchone()
        finally:
            conn.execute("DEALLOCATE loop_statement")
    assert row is not None
    document = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    plan = document[0]["Plan"]
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


@pytest.fixture(scope="module", params=["fresh statistics", "statistics of small tables"])
def backlog_url(request: pytest.FixtureRequest, postgres_server: PostgresServer) -> Iterator[str]:
    """A database holding the backlog, analyzed before or after it arrived."""
    name = postgres_server.create_database(template=postgres_server.template)
    url = postgres_server.url_for(name)
    params = {"app": APP, "n": BACKLOG, "queue": QUEUE}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:  # the statistics stay what the test makes them
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        for statement in SMALL:
            conn.execute(statement, params)
        if request.param == "statistics of small tables":
            conn.execute(f"ANALYZE {', '.join(TABLES)}")
        for statement in BACKLOG_ROWS:
            conn.execute(statement, params)
        if request.param == "fresh statistics":
            conn.execute(f"ANALYZE {', '.join(TABLES)}")
        # Every page set visible, as after the first VACUUM: the counts below are the
        # plans', not first-touch hint-bit writes.
        conn.execute(f"VACUUM {', '.join(TABLES)}")
    yield url
    dispose_all()
    postgres_server.drop_database(name)


@pytest.mark.parametrize("plans", ["force_custom_plan", "force_generic_plan"])
def test_every_loop_statement_touches_at_most_100_buffers_over_the_backlog(
    backlog_url: str, plans: str
) -> None:
    with psycopg.connect(backlog_url) as conn:
        (queued,) = conn.execute(
            "SELECT count(*) FROM pynenc_broker_message WHERE app_id = %s", (APP,)
        ).fetchone()  # type: ignore[misc]
        assert queued == BACKLOG
        touched = {s.name: buffers(conn, s, plans) for s in loop_statements()}
    print(touched)
    assert {name: n for name, n in touched.items() if n > BUDGET} == {}


def test_the_blocking_control_query_finds_the_oldest_waited_invocation(
    backlog_url: str,
) -> None:
    """The plan that ignores the backlog still answers right: the oldest registered
    invocation that someone waits for, and that waits for nothing."""
    with psycopg.connect(backlog_url) as conn:
        rows = conn.execute(ORCH.blocking_invocations, (APP, APP, AVAILABLE, 3)).fetchall()
    assert [r[0] for r in rows] == ["queued-1001", "queued-1002", "queued-1003"]
