"""Every combined statement reaches its rows through the index made for it.

The app has a few thousand invocations, analysed, and the plans are read with sequential
scans disabled, so they show what the indexes allow rather than what a small table makes
cheapest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from pynenc_postgres.orchestrator.lifecycle_sql import TransitionKind, lifecycle_statements

SQL = lifecycle_statements("public")
COMMON: dict[str, Any] = {
    "app": "plans",
    "id": "inv",
    "runner": "runner",
    "change": "change",
    "from": ["registered"],
    "required": ["pending", "running"],
    "free_tasks": ["module.task"],
    "recorded": datetime(2030, 1, 1, tzinfo=UTC),
    "ctx": "runner",
    "queue": "default",
    "commit": "off",
    "status": "success",
    "keeps": False,
    "owner": None,
    "result": "1",
    "exception": "{}",
    "error_name": "ValueError",
    "is_pynenc_error": False,
    "priority": 0.0,
    "channel": "c",
    "payload": "p",
    "ids": ["inv"],
    "finals": ["success"],
    "max_bytes": 65536,
}


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pynenc_orchestrator_invocation
                   (app_id, invocation_id, task_id, call_id, status, status_set_at)
               SELECT 'plans', 'inv-' || g, 'module.task', 'call-' || g,
                      (ARRAY['registered', 'running', 'success'])[1 + g % 3], now()
               FROM generate_series(1, 3000) AS g"""
        )
        conn.execute("ANALYZE pynenc_orchestrator_invocation")


def plan(url: str, query: str, params: dict[str, Any]) -> str:
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_seqscan = off")
        rows = conn.execute(f"EXPLAIN {query}", params).fetchall()
        conn.rollback()
    return "\n".join(row[0] for row in rows)


def test_the_claim_and_take_locks_the_queue_head_through_the_claim_index(
    database_url: str,
) -> None:
    text = plan(database_url, SQL.claim_and_take_relaxed, COMMON)
    assert "ix_pynenc_broker_message_app_id_queue_name_priority_message_id" in text
    assert "LockRows" in text
    assert "Seq Scan" not in text


def test_every_status_change_and_the_final_status_read_use_indexes(database_url: str) -> None:
    seed(database_url)
    kinds = [
        TransitionKind(owner_check=True, final=False),
        TransitionKind(owner_check=False, final=False),
        TransitionKind(owner_check=True, final=True, stores="result"),
        TransitionKind(owner_check=True, final=True, stores="exception"),
        TransitionKind(owner_check=True, final=False, retry=True, routes=True),
    ]
    for kind in kinds:
        text = plan(database_url, SQL.transition(kind), COMMON)
        assert "pk_pynenc_orchestrator_invocation" in text, (kind, text)
        assert "Seq Scan" not in text, (kind, text)
    for query in (SQL.take, SQL.final_with_results):
        text = plan(database_url, query, COMMON)
        assert "pk_pynenc_orchestrator_invocation" in text, text
        assert "Seq Scan" not in text, text
