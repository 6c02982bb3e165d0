"""Find rows that point at a removed invocation, in every table the models define.

The columns that hold an invocation id are read from the models (every column named
``invocation_id`` or ``*_invocation_id``, and the workflow ids, which are invocation ids
too), so a table added later is checked without anyone remembering to add it here.
Only the references listed in :data:`KEPT_REFERENCES` may outlive their invocation, each
for the reason given.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.models import Base

KEPT_REFERENCES: dict[tuple[str, str], str] = {
    # The trigger tables follow pynenc's own retention settings (event_retention_days...):
    # they record what caused what, as history.
    (t.TRIGGER_EVENT, "emitted_by_invocation_id"): "trigger history, pynenc's retention",
    (t.TRIGGER_EVENT_INVOCATION, "invocation_id"): "trigger history, pynenc's retention",
    (t.TRIGGER_RUN, "triggered_invocation_id"): "trigger history, pynenc's retention",
    (t.TRIGGER_RUN_PARTICIPANT, "source_invocation_id"): "trigger history, pynenc's retention",
    # A surviving invocation keeps the id of the parent (or enclosing workflow) that
    # called it, as a fact of its own history; the parent's rows went with the parent.
    (t.INVOCATION, "parent_invocation_id"): "a child's own record of its caller",
    (t.INVOCATION, "parent_workflow_id"): "a child's own record of its caller",
    (t.WORKFLOW_RUN, "parent_workflow_id"): "a nested workflow's record of its caller",
    (t.INVOCATION_HISTORY, "registered_by_invocation_id"): "a child's own record of its caller",
}


def reference_columns() -> list[tuple[str, str]]:
    """(table, column) of every column of the models that holds an invocation id."""
    found = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            name = column.name
            if (
                name == "invocation_id"
                or name.endswith("_invocation_id")
                or name.endswith("workflow_id")
            ):
                found.append((table.name, name))
    return found


def invocation_ids(url: str, app_id: str) -> set[str]:
    """Every invocation id the app has a row of, in the invocation or orchestrator table."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT invocation_id FROM {t.INVOCATION} WHERE app_id = %(a)s UNION "
            f"SELECT invocation_id FROM {t.ORCHESTRATOR_INVOCATION} WHERE app_id = %(a)s",
            {"a": app_id},
        ).fetchall()
    return {row[0] for row in rows}


def orphans(url: str, app_id: str, removed: set[str]) -> dict[tuple[str, str], int]:
    """Rows of the app that still point at a removed invocation, per (table, column)."""
    found: dict[tuple[str, str], int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table, column in reference_columns():
            if (table, column) in KEPT_REFERENCES:
                continue
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE app_id = %s AND {column} = ANY(%s)",
                (app_id, sorted(removed)),
            ).fetchone()
            assert row is not None
            if row[0]:
                found[table, column] = int(row[0])
    return found


def dangling_runner_contexts(url: str, app_id: str) -> list[tuple[Any, ...]]:
    """History rows whose runner context is gone."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            f"""SELECT h.invocation_id, h.runner_id FROM {t.INVOCATION_HISTORY} h
                WHERE h.app_id = %s AND NOT EXISTS (
                    SELECT 1 FROM {t.RUNNER_CONTEXT} c
                    WHERE c.app_id = h.app_id AND c.runner_id = h.runner_id)""",
            (app_id,),
        ).fetchall()


def unreferenced_client_data(url: str, app_id: str) -> set[str]:
    """Stored values of the app that no remaining row names."""
    from pynenc_postgres.retention.sql import CLIENT_DATA_REFERRERS

    named = " OR ".join(
        f"EXISTS (SELECT 1 FROM {table} r WHERE r.app_id = c.app_id "
        f"AND strpos(r.{column}, c.data_key) > 0)"
        for table, column in CLIENT_DATA_REFERRERS
    )
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT data_key FROM {t.CLIENT_DATA} c WHERE app_id = %s AND NOT ({named})",
            (app_id,),
        ).fetchall()
    return {row[0] for row in rows}


def rows_of(url: str, app_id: str) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of the app in every table but retention's own records."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: {
                tuple(tuple(v) if isinstance(v, list) else v for v in row)
                for row in conn.execute(f"SELECT * FROM {table} WHERE app_id = %s", (app_id,))
            }
            for table in Base.metadata.tables
            if table not in t.RETENTION_TABLES
        }


def count_rows(url: str, app_id: str) -> dict[str, int]:
    """Rows of the app in every table of the models."""
    with psycopg.connect(url, autocommit=True) as conn:
        counts = {}
        for table in Base.metadata.tables:
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE app_id = %s", (app_id,))
            counts[table] = int(row.fetchone()[0])  # type: ignore[index]
        return counts
