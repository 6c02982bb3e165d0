"""The audit views (0002, in write order since 0003): contents, index use, schema, downgrade."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.retention.sql import statements as retention_statements
from pynenc_postgres.state_backend.sql import statements
from tests.audit.conftest import APP_A, Seed

TASKS = "tests.audit.tasks."


def status_row(conn: psycopg.Connection, invocation_id: str) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT * FROM pynenc_invocation_status WHERE app_id = %s AND invocation_id = %s",
        (APP_A, invocation_id),
    )
    assert cur.description is not None
    rows = cur.fetchall()
    assert len(rows) == 1
    return dict(zip([c.name for c in cur.description], rows[0], strict=True))


def test_status_view_reports_the_current_status_of_real_runs(
    audit_seed: Seed, seeded_url: str
) -> None:
    ids = audit_seed.ids
    with psycopg.connect(seeded_url) as conn:
        add = status_row(conn, ids["add"])
        assert (add["task_id"], add["status"], add["is_final"]) == (TASKS + "add", "success", True)
        assert add["has_result"] is True
        assert add["exception_name"] is None
        assert add["runner_id"] == audit_seed.runner_a
        assert add["registered_at"] < add["status_changed_at"]

        failed = status_row(conn, ids["divide_zero"])
        assert (failed["status"], failed["has_result"], failed["exception_name"]) == (
            "failed",
            False,
            "ZeroDivisionError",
        )
        assert status_row(conn, ids["parse_bad"])["exception_name"] == "ValueError"

        stuck = status_row(conn, ids["stuck"])
        assert (stuck["status"], stuck["is_final"], stuck["has_result"]) == (
            "running",
            False,
            False,
        )
        assert stuck["owner_runner_id"] == stuck["runner_id"] != audit_seed.runner_a

        step = conn.execute(
            "SELECT invocation_id FROM pynenc_invocation WHERE app_id = %s "
            "AND parent_invocation_id = %s LIMIT 1",
            (APP_A, ids["pipeline"]),
        ).fetchone()
        assert step is not None
        sub = status_row(conn, step[0])
        assert (sub["parent_invocation_id"], sub["workflow_id"]) == (
            ids["pipeline"],
            ids["pipeline"],
        )


def test_timeline_view_matches_the_history_in_order(audit_seed: Seed, seeded_url: str) -> None:
    with psycopg.connect(seeded_url) as conn:
        for name in ("flaky", "divide_zero", "pipeline", "stuck"):
            invocation_id = audit_seed.ids[name]
            history = conn.execute(
                "SELECT status, recorded_at, runner_id FROM pynenc_invocation_history "
                "WHERE app_id = %s AND invocation_id = %s "
                "ORDER BY recorded_at, write_order, status",
                (APP_A, invocation_id),
            ).fetchall()
            timeline = conn.execute(
                "SELECT step, status, recorded_at, runner_id, previous_status, since_previous, "
                "since_first FROM pynenc_invocation_timeline "
                "WHERE app_id = %s AND invocation_id = %s ORDER BY step",
                (APP_A, invocation_id),
            ).fetchall()
            assert [row[1:4] for row in timeline] == history
            assert [row[0] for row in timeline] == list(range(1, len(history) + 1))
            for previous, current in itertools.pairwise(timeline):
                assert current[4] == previous[1]
                assert current[5] == current[2] - previous[2]
                assert current[6] == current[2] - timeline[0][2]


def plan(conn: psycopg.Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Every node of the plan, flattened."""
    row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()
    assert row is not None
    document = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(document[0]["Plan"])
    return nodes


def per_invocation_pk_scans(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plan's history scans, each checked to be a primary-key range of one invocation.

    History has no index in write order: an invocation's rows are read through the
    primary key ``(app_id, invocation_id, recorded_at, status)`` and a sort over those
    few rows is expected. What must not happen is a scan of the whole table or of a
    range wider than one invocation.
    """
    scans = [n for n in nodes if n.get("Relation Name") == "pynenc_invocation_history"]
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
        assert scan["Index Name"] == "pk_pynenc_invocation_history", scan
        condition = scan["Index Cond"]
        assert "app_id =" in condition and "invocation_id =" in condition, scan
    return scans


def test_views_and_history_reads_are_index_backed_on_a_large_history(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pynenc_invocation (app_id, invocation_id, task_id, call_id,
                   arguments_id, serialized_arguments)
               SELECT 'app-' || (g % 5), 'inv-' || g, 'mod.task' || (g % 20), 'c', 'a', '{}'
               FROM generate_series(1, 50000) g"""
        )
        conn.execute(
            """INSERT INTO pynenc_invocation_history (app_id, invocation_id, recorded_at, status,
                   status_owner_id, status_set_at, runner_id)
               SELECT 'app-' || (g % 5), 'inv-' || g,
                      now() - make_interval(secs => g) + make_interval(secs => s.n / 1000.0),
                      s.status, 'r1', now(), 'r1'
               FROM generate_series(1, 50000) g,
                    (VALUES (1, 'registered'), (2, 'pending'), (3, 'running'), (4, 'success'))
                    AS s(n, status)"""
        )
        conn.execute("ANALYZE")
        status_plan = plan(
            conn,
            "SELECT * FROM pynenc_invocation_status "
            "WHERE app_id = 'app-1' AND invocation_id = 'inv-101'",
        )
        scans = {(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in status_plan}
        assert ("Index Scan", "pynenc_invocation", "pk_pynenc_invocation") in scans
        # Two probes (latest row, first row), each an index range of one invocation on
        # the primary key; sorting those few rows by write order is expected.
        assert len(per_invocation_pk_scans(status_plan)) == 2, status_plan
        big = {"pynenc_invocation", "pynenc_invocation_history"}
        assert not [
            n for n in status_plan if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in big
        ]

        timeline_plan = plan(
            conn,
            "SELECT * FROM pynenc_invocation_timeline "
            "WHERE app_id = 'app-1' AND invocation_id = 'inv-101'",
        )
        assert len(per_invocation_pk_scans(timeline_plan)) == 1, timeline_plan
        assert not [
            n
            for n in timeline_plan
            if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in big
        ]

        # The backend's history reads and retention's "is this the latest row?" probe.
        sql = statements("public")
        at = datetime(2026, 1, 1, tzinfo=UTC)
        history_plan = plan(conn, sql.get_history, ("app-1", "inv-101"))
        assert len(per_invocation_pk_scans(history_plan)) == 1, history_plan
        assert not [n for n in history_plan if n["Node Type"] == "Seq Scan"]

        # The time-range keyset walks the (app_id, recorded_at, invocation_id, status)
        # index from the cursor: the index condition starts at (recorded_at,
        # invocation_id), and only rows sharing both are sorted by write_order. The
        # range spans all of app-1's rows, so sorting the range instead would be costly.
        first = conn.execute(
            "SELECT recorded_at, invocation_id, write_order, status "
            "FROM pynenc_invocation_history WHERE app_id = 'app-1' "
            "ORDER BY recorded_at, invocation_id, write_order, status LIMIT 1"
        ).fetchone()
        assert first is not None
        next_batch = plan(
            conn,
            sql.history_in_timerange_next,
            ("app-1", *first, first[0] + timedelta(days=1), 100),
        )
        range_scans = [n for n in next_batch if "Index Name" in n]
        assert [n["Index Name"] for n in range_scans] == [
            "ix_pynenc_invocation_history_app_id_recorded_at"
        ], next_batch
        assert "invocation_id" in range_scans[0]["Index Cond"], range_scans[0]
        assert not [n for n in next_batch if n["Node Type"] in ("Seq Scan", "Sort")], next_batch

        candidates = plan(
            conn,
            retention_statements("public").history_candidates,
            {
                "app_id": "app-1",
                "cutoff": at,
                "statuses": ["success"],
                "after_at": at - timedelta(days=1),
                "after_id": "",
                "after_status": "",
                "limit": 1000,
            },
        )
        probe = [n for n in candidates if n.get("Parent Relationship") == "SubPlan"]
        assert probe == per_invocation_pk_scans(probe), candidates
        assert len(probe) == 1, candidates
        assert not [n for n in candidates if n["Node Type"] == "Seq Scan"]


def test_downgrade_removes_views_and_index_and_upgrade_restores_them(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url)

    def objects() -> set[str]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT relname FROM pg_class WHERE relname IN ('pynenc_invocation_status', "
                "'pynenc_invocation_timeline', "
                "'ix_pynenc_workflow_sub_invocation_app_id_sub_invocation_id')"
            ).fetchall()
        return {row[0] for row in rows}

    assert len(objects()) == 3
    schema.downgrade(settings, "0001")
    assert objects() == set()
    assert schema.current(settings) == "0001"
    schema.upgrade(settings)
    assert len(objects()) == 3
    schema.check_autogenerate(settings)  # raises if models and database differ


def test_views_bind_to_the_configured_schema(empty_database_url: str) -> None:
    settings = DatabaseSettings(url=empty_database_url, schema="audit_space")
    schema.upgrade(settings)
    schema.check_autogenerate(settings)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        views = conn.execute(
            "SELECT schemaname, viewname FROM pg_views WHERE viewname LIKE 'pynenc\\_%' "
            "ORDER BY viewname"
        ).fetchall()
        assert views == [
            ("audit_space", "pynenc_invocation_status"),
            ("audit_space", "pynenc_invocation_timeline"),
            ("audit_space", "pynenc_runner_status"),
        ]
        conn.execute(
            """INSERT INTO audit_space.pynenc_invocation (app_id, invocation_id, task_id, call_id,
                   arguments_id, serialized_arguments) VALUES ('a', 'i', 't', 'c', 'x', '{}')"""
        )
        conn.execute(
            """INSERT INTO audit_space.pynenc_invocation_history (app_id, invocation_id,
                   recorded_at, status, status_set_at, runner_id)
               VALUES ('a', 'i', now(), 'running', now(), 'r')"""
        )
        # Read with a search_path that does not include the schema: the views still
        # resolve their tables in audit_space.
        conn.execute("SET search_path TO public")
        row = conn.execute(
            "SELECT task_id, status FROM audit_space.pynenc_invocation_status"
        ).fetchone()
        assert row == ("t", "running")
