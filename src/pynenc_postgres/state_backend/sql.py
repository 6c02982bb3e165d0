"""Every statement the state backend runs, written once per Postgres schema.

Writes are ``INSERT ... ON CONFLICT`` so a statement resent after a dropped
connection is a no-op or the same update. History rows are read in write order:
``(recorded_at, write_order, status)``, because two status changes can share
``recorded_at`` to the microsecond. Batches arrive as arrays and are unnested
server-side: one statement and one round trip per call, whatever the batch size.
Each read is backed by an index whose leading column is ``app_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.sql import quote_ident


@dataclass(frozen=True)
class StateBackendSql:
    """SQL text for one schema; parameters use psycopg's ``%s`` placeholders."""

    upsert_invocations: str
    get_invocation: str
    child_invocations: str
    invocations_by_parent_event: str
    invocations_by_workflow: str
    invocations_by_workflow_type: str
    invocations_by_workflow_and_type: str
    all_invocations_of_app: str
    add_history: str
    add_histories: str
    get_history: str
    set_result: str
    get_result: str
    set_exception: str
    get_exception: str
    store_runner_context: str
    get_runner_contexts_with_ancestors: str
    match_runner_contexts: str
    store_app_info: str
    get_app_info: str
    all_app_infos: str
    store_workflow_run: str
    workflow_types: str
    all_workflow_runs: str
    workflow_runs_of_type: str
    set_workflow_data: str
    get_workflow_data: str
    store_workflow_sub_invocation: str
    workflow_sub_invocations: str
    invocation_ids_in_timerange: str
    history_in_timerange_first: str
    history_in_timerange_next: str
    purge_app: tuple[str, ...]


@cache
def statements(schema: str) -> StateBackendSql:
    """Render the statements for ``schema`` (cached: built once per process and schema)."""
    s = quote_ident(schema)
    inv = f"{s}.{t.INVOCATION}"
    hist = f"{s}.{t.INVOCATION_HISTORY}"
    res = f"{s}.{t.INVOCATION_RESULT}"
    exc = f"{s}.{t.INVOCATION_EXCEPTION}"
    ctx = f"{s}.{t.RUNNER_CONTEXT}"
    app = f"{s}.{t.APP_INFO}"
    wfr = f"{s}.{t.WORKFLOW_RUN}"
    wfd = f"{s}.{t.WORKFLOW_DATA}"
    wfs = f"{s}.{t.WORKFLOW_SUB_INVOCATION}"
    counter = f"{s}.{t.HISTORY_COUNTER}"
    history_columns = (
        "invocation_id, recorded_at, status, status_owner_id, status_set_at, "
        "runner_id, registered_by_invocation_id"
    )
    # The natural key: a resent row is a no-op, and keeps its first write_order.
    history_key = "(app_id, invocation_id, recorded_at, status)"
    ctx_columns = "runner_id, runner_cls, parent_runner_id, pid, hostname, thread_id"
    return StateBackendSql(
        upsert_invocations=f"""
            INSERT INTO {inv} AS t (
                app_id, invocation_id, task_id, call_id, arguments_id, serialized_arguments,
                parent_invocation_id, parent_event_id, workflow_id, workflow_type_key,
                parent_workflow_id)
            SELECT %s, u.* FROM unnest(
                %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                %s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) AS u
            ON CONFLICT (app_id, invocation_id) DO UPDATE SET
                task_id = excluded.task_id,
                call_id = excluded.call_id,
                arguments_id = excluded.arguments_id,
                serialized_arguments = excluded.serialized_arguments,
                parent_invocation_id = excluded.parent_invocation_id,
                parent_event_id = excluded.parent_event_id,
                workflow_id = excluded.workflow_id,
                workflow_type_key = excluded.workflow_type_key,
                parent_workflow_id = excluded.parent_workflow_id,
                updated_at = now()""",
        get_invocation=f"""
            SELECT call_id, serialized_arguments, parent_invocation_id, parent_event_id,
                   workflow_id, workflow_type_key, parent_workflow_id
            FROM {inv} WHERE app_id = %s AND invocation_id = %s""",
        child_invocations=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND parent_invocation_id = %s ORDER BY invocation_id""",
        invocations_by_parent_event=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND parent_event_id = %s ORDER BY invocation_id""",
        invocations_by_workflow=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND workflow_id = %s ORDER BY invocation_id""",
        invocations_by_workflow_type=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND workflow_type_key = %s ORDER BY invocation_id""",
        invocations_by_workflow_and_type=f"""
            SELECT invocation_id FROM {inv}
            WHERE app_id = %s AND workflow_id = %s AND workflow_type_key = %s
            ORDER BY invocation_id""",
        all_invocations_of_app=f"""
            SELECT invocation_id FROM {inv} WHERE app_id = %s ORDER BY invocation_id""",
        add_history=f"""
            INSERT INTO {hist} (invocation_id, app_id, recorded_at, status, status_owner_id,
                                status_set_at, runner_id, registered_by_invocation_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT {history_key} DO NOTHING""",
        add_histories=f"""
            INSERT INTO {hist} (app_id, {history_columns})
            SELECT %s, u.invocation_id, %s, %s, %s, %s, %s, %s
            FROM unnest(%s::text[]) AS u(invocation_id)
            ON CONFLICT {history_key} DO NOTHING""",
        get_history=f"""
            SELECT {history_columns} FROM {hist}
            WHERE app_id = %s AND invocation_id = %s
            ORDER BY recorded_at, write_order, status""",
        set_result=f"""
            INSERT INTO {res} (app_id, invocation_id, serialized_result) VALUES (%s, %s, %s)
            ON CONFLICT (app_id, invocation_id) DO UPDATE
            SET serialized_result = excluded.serialized_result, stored_at = now()""",
        get_result=f"""
            SELECT serialized_result FROM {res} WHERE app_id = %s AND invocation_id = %s""",
        set_exception=f"""
            INSERT INTO {exc} (app_id, invocation_id, error_name, is_pynenc_error,
                               serialized_exception)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (app_id, invocation_id) DO UPDATE
            SET error_name = excluded.error_name, is_pynenc_error = excluded.is_pynenc_error,
                serialized_exception = excluded.serialized_exception, stored_at = now()""",
        get_exception=f"""
            SELECT serialized_exception FROM {exc} WHERE app_id = %s AND invocation_id = %s""",
        store_runner_context=f"""
            INSERT INTO {ctx} (app_id, {ctx_columns})
            SELECT %s, u.* FROM unnest(
                %s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::bigint[]) AS u
            ON CONFLICT (app_id, runner_id) DO UPDATE SET
                runner_cls = excluded.runner_cls,
                parent_runner_id = excluded.parent_runner_id,
                pid = excluded.pid, hostname = excluded.hostname,
                thread_id = excluded.thread_id""",
        get_runner_contexts_with_ancestors=f"""
            WITH RECURSIVE found AS (
                SELECT {ctx_columns} FROM {ctx}
                WHERE app_id = %s AND runner_id = ANY(%s::text[])
              UNION
                SELECT c.runner_id, c.runner_cls, c.parent_runner_id, c.pid, c.hostname,
                       c.thread_id
                FROM {ctx} c JOIN found f ON c.runner_id = f.parent_runner_id
                WHERE c.app_id = %s
            )
            SELECT {ctx_columns} FROM found""",
        match_runner_contexts=f"""
            WITH RECURSIVE found AS (
                SELECT {ctx_columns}, true AS matched FROM {ctx}
                WHERE app_id = %s AND runner_id LIKE %s ESCAPE '\\'
              UNION
                SELECT c.runner_id, c.runner_cls, c.parent_runner_id, c.pid, c.hostname,
                       c.thread_id, false
                FROM {ctx} c JOIN found f ON c.runner_id = f.parent_runner_id
                WHERE c.app_id = %s
            )
            SELECT {ctx_columns}, bool_or(matched) FROM found
            GROUP BY {ctx_columns} ORDER BY runner_id""",
        store_app_info=f"""
            INSERT INTO {app} (app_id, module, app_info_json) VALUES (%s, %s, %s)
            ON CONFLICT (app_id) DO UPDATE SET module = excluded.module,
                app_info_json = excluded.app_info_json, updated_at = now()""",
        get_app_info=f"SELECT app_info_json FROM {app} WHERE app_id = %s",
        all_app_infos=f"SELECT app_id, app_info_json FROM {app} ORDER BY app_id",
        store_workflow_run=f"""
            INSERT INTO {wfr} (app_id, workflow_id, workflow_type_key, parent_workflow_id)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (app_id, workflow_id) DO UPDATE SET
                workflow_type_key = excluded.workflow_type_key,
                parent_workflow_id = excluded.parent_workflow_id""",
        workflow_types=f"""
            SELECT DISTINCT workflow_type_key FROM {wfr} WHERE app_id = %s
            ORDER BY workflow_type_key""",
        all_workflow_runs=f"""
            SELECT workflow_id, workflow_type_key, parent_workflow_id FROM {wfr}
            WHERE app_id = %s ORDER BY workflow_id""",
        workflow_runs_of_type=f"""
            SELECT workflow_id, workflow_type_key, parent_workflow_id FROM {wfr}
            WHERE app_id = %s AND workflow_type_key = %s ORDER BY workflow_id""",
        set_workflow_data=f"""
            INSERT INTO {wfd} (app_id, workflow_id, data_key, serialized_value)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (app_id, workflow_id, data_key) DO UPDATE
            SET serialized_value = excluded.serialized_value, updated_at = now()""",
        get_workflow_data=f"""
            SELECT serialized_value FROM {wfd}
            WHERE app_id = %s AND workflow_id = %s AND data_key = %s""",
        store_workflow_sub_invocation=f"""
            INSERT INTO {wfs} (app_id, workflow_id, sub_invocation_id) VALUES (%s, %s, %s)
            ON CONFLICT DO NOTHING""",
        workflow_sub_invocations=f"""
            SELECT sub_invocation_id FROM {wfs}
            WHERE app_id = %s AND workflow_id = %s ORDER BY sub_invocation_id""",
        invocation_ids_in_timerange=f"""
            SELECT DISTINCT invocation_id FROM {hist}
            WHERE app_id = %s AND recorded_at >= %s AND recorded_at <= %s
              AND invocation_id > %s
            ORDER BY invocation_id LIMIT %s""",
        # Keyset pagination: (recorded_at, invocation_id, write_order, status) is unique
        # (the primary key's columns and one more) and the selects end with write_order,
        # so a batch resumes right after the last row of the previous one.
        history_in_timerange_first=f"""
            SELECT {history_columns}, write_order FROM {hist}
            WHERE app_id = %s AND recorded_at >= %s AND recorded_at <= %s
            ORDER BY recorded_at, invocation_id, write_order, status LIMIT %s""",
        history_in_timerange_next=f"""
            SELECT {history_columns}, write_order FROM {hist}
            WHERE app_id = %s
              AND (recorded_at, invocation_id, write_order, status) > (%s, %s, %s, %s)
              AND recorded_at <= %s
            ORDER BY recorded_at, invocation_id, write_order, status LIMIT %s""",
        purge_app=tuple(
            f"DELETE FROM {table} WHERE app_id = %s"
            for table in (hist, res, exc, wfs, wfd, wfr, inv, ctx, app, counter)
        ),
    )
