"""A scrape reads what is in flight, never every invocation: its plans, at scale.

The database holds 100,000 orchestrator invocations of two apps, 1 % of them in flight
(registered and queued, pending, running, retry), the rest final, seeded server-side
with ``generate_series`` and vacuumed and analyzed, as autovacuum leaves a table.

Why 100,000 and not the 1,000,000 of the benchmark: every statement reads ranges of
indexes whose size is a fixed fraction of the table (the in-flight statuses, the
queue), and a sequential scan's cost grows with the table just as fast as those ranges,
while the fixed cost of an index descent weighs less the larger the table. So a plan
that reads only index ranges at 100,000 does so at 1,000,000; seeding ten times more
would add about a minute to CI to show the same. ``python -m benchmarks.metrics`` prints
the same plans at 1,000,000.

The checks can fail: the control query (counting by status with a ``GROUP BY``) reads
every row and is refused by the same assertions.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from benchmarks.metrics_seed import Cluster, seed_cluster
from pynenc_postgres.db import tables as t
from pynenc_postgres.metrics.sql import ACTIVE_STATUSES, TABLES, statements

CLUSTER = Cluster(invocations=100_000, apps=2, in_flight=10, runners=200, executions=1_000)
IN_FLIGHT = CLUSTER.invocations * CLUSTER.in_flight // 1000
# Tables whose rows grow with the invocations: never read whole.
LARGE = (t.ORCHESTRATOR_INVOCATION, t.BROKER_MESSAGE)
DEAD_AFTER = 600.0


@pytest.fixture(scope="module")
def seeded(postgres_server: Any) -> Any:
    name = postgres_server.create_database(template=postgres_server.template)
    url = postgres_server.url_for(name)
    with psycopg.connect(url, autocommit=True) as conn:
        seed_cluster(conn, CLUSTER)
        for table in LARGE:
            conn.execute(f"VACUUM ANALYZE {table}")
    yield url
    postgres_server.drop_database(name)


def plan(url: str, query: str, params: tuple[Any, ...]) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET jit = off")
        row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", params).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0][0]["Plan"]
    return result


def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if "Relation Name" in node else []
    for child in node.get("Plans", []):
        found.extend(scans(child))
    return found


def rows_read(node: dict[str, Any]) -> dict[str, int]:
    """Rows each large table's scans returned, over every loop (filtered ones included)."""
    read: dict[str, int] = {}
    for scan in scans(node):
        table = scan["Relation Name"]
        if table in LARGE:
            rows = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)
            read[table] = read.get(table, 0) + rows * scan["Actual Loops"]
    return read


def assert_reads_only_ranges(node: dict[str, Any]) -> None:
    for scan in scans(node):
        if scan["Relation Name"] in LARGE:
            assert scan["Node Type"] in (
                "Index Scan",
                "Index Only Scan",
                "Bitmap Heap Scan",
            ), f"{scan['Node Type']} on {scan['Relation Name']}"
    # In flight: 1 % of the invocations, half of them queued. Counting the statuses reads
    # each once, the dead-owner check the running ones again, the queue each message once.
    for table, rows in rows_read(node).items():
        assert rows <= 2 * IN_FLIGHT + 100, f"{rows} rows of {table} read"


STATEMENTS = statements("public")
CASES = {
    "invocations": (STATEMENTS.invocations, (DEAD_AFTER, list(ACTIVE_STATUSES))),
    "queues": (STATEMENTS.queues, ()),
    "runners": (STATEMENTS.runners, (DEAD_AFTER,) * 3),
    "atomic_service": (STATEMENTS.atomic_service, ()),
    "history_totals": (STATEMENTS.history_totals, ()),
    "retention": (STATEMENTS.retention, ()),
    "retention_behind": (STATEMENTS.retention_behind, ()),
    "tables": (STATEMENTS.tables, ("public", list(TABLES))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_statement_reads_only_index_ranges(seeded: str, name: str) -> None:
    query, params = CASES[name]
    assert_reads_only_ranges(plan(seeded, query, params))


def test_the_check_refuses_a_full_count(seeded: str) -> None:
    control = plan(
        seeded,
        "SELECT app_id, status, count(*) FROM pynenc_orchestrator_invocation "
        "GROUP BY app_id, status",
        (),
    )
    assert rows_read(control)[t.ORCHESTRATOR_INVOCATION] == CLUSTER.invocations
    with pytest.raises(AssertionError):
        assert_reads_only_ranges(control)


def test_scrape_at_scale_reports_the_seeded_cluster(seeded: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pynenc_postgres.db.settings import DatabaseSettings
    from pynenc_postgres.metrics import PostgresMetricsCollector
    from tests.metrics.conftest import parse, series

    collector = PostgresMetricsCollector(DatabaseSettings(url=seeded))
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        samples = parse(generate_latest(registry).decode())
    finally:
        collector.close()
    assert sum(series(samples, "pynenc_invocations").values()) == IN_FLIGHT
    assert sum(series(samples, "pynenc_queue_depth").values()) == IN_FLIGHT // 2
