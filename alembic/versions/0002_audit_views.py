"""Audit views: current status and timeline of each invocation; index for retention.

``pynenc_invocation_status`` finds each invocation's latest history row with one
backward probe of the history primary key (app_id, invocation_id, recorded_at,
status), so its cost grows with the invocations read, not with the history kept.
``pynenc_invocation_timeline`` numbers each invocation's history rows and measures
the time between them.

The views name no schema: migrations run with ``search_path`` set to the configured
schema, so the views are created there and bound to that schema's tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS_VIEW = """
CREATE VIEW pynenc_invocation_status AS
SELECT i.app_id,
       i.invocation_id,
       i.task_id,
       cur.status,
       cur.status IN ('success', 'failed', 'concurrency_controlled_final') AS is_final,
       first_row.recorded_at AS registered_at,
       cur.recorded_at AS status_changed_at,
       cur.runner_id,
       cur.status_owner_id AS owner_runner_id,
       EXISTS (
           SELECT 1 FROM pynenc_invocation_result r
           WHERE r.app_id = i.app_id AND r.invocation_id = i.invocation_id
       ) AS has_result,
       e.error_name AS exception_name,
       i.parent_invocation_id,
       i.workflow_id
FROM pynenc_invocation i
LEFT JOIN LATERAL (
    SELECT h.status, h.recorded_at, h.runner_id, h.status_owner_id
    FROM pynenc_invocation_history h
    WHERE h.app_id = i.app_id AND h.invocation_id = i.invocation_id
    ORDER BY h.recorded_at DESC, h.status DESC
    LIMIT 1
) cur ON true
LEFT JOIN LATERAL (
    SELECT h.recorded_at
    FROM pynenc_invocation_history h
    WHERE h.app_id = i.app_id AND h.invocation_id = i.invocation_id
    ORDER BY h.recorded_at, h.status
    LIMIT 1
) first_row ON true
LEFT JOIN pynenc_invocation_exception e
    ON e.app_id = i.app_id AND e.invocation_id = i.invocation_id
"""

TIMELINE_VIEW = """
CREATE VIEW pynenc_invocation_timeline AS
SELECT h.app_id,
       h.invocation_id,
       i.task_id,
       row_number() OVER w AS step,
       h.status,
       h.recorded_at,
       lag(h.status) OVER w AS previous_status,
       h.recorded_at - lag(h.recorded_at) OVER w AS since_previous,
       h.recorded_at - first_value(h.recorded_at) OVER w AS since_first,
       h.status_owner_id AS owner_runner_id,
       h.runner_id,
       c.runner_cls,
       c.hostname,
       c.pid,
       h.registered_by_invocation_id
FROM pynenc_invocation_history h
LEFT JOIN pynenc_invocation i
    ON i.app_id = h.app_id AND i.invocation_id = h.invocation_id
LEFT JOIN pynenc_runner_context c
    ON c.app_id = h.app_id AND c.runner_id = h.runner_id
WINDOW w AS (PARTITION BY h.app_id, h.invocation_id ORDER BY h.recorded_at, h.status)
"""

COMMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "pynenc_invocation_status": (
        "Current status of each invocation: its latest history row, one index probe each. "
        "Filter on app_id (and invocation_id or task_id) to stay index-backed.",
        {
            "app_id": "pynenc application id.",
            "invocation_id": "pynenc invocation id.",
            "task_id": "Task key, module.function.",
            "status": "Status of the latest history row; NULL if no history was written yet.",
            "is_final": "True for success, failed and concurrency_controlled_final.",
            "registered_at": "Time of the first history row (normally REGISTERED).",
            "status_changed_at": "Time of the latest history row.",
            "runner_id": "Runner context that wrote the latest status change.",
            "owner_runner_id": "Runner owning the invocation in its current status, if any.",
            "has_result": "True when pynenc_invocation_result holds a return value.",
            "exception_name": "Exception class name from pynenc_invocation_exception, if any.",
            "parent_invocation_id": "Invocation that called this one, if any.",
            "workflow_id": "Workflow run this invocation belongs to, if any.",
        },
    ),
    "pynenc_invocation_timeline": (
        "Every status change of every invocation, numbered, with the time since the "
        "previous change and since the first. Filter on app_id and invocation_id.",
        {
            "app_id": "pynenc application id.",
            "invocation_id": "pynenc invocation id.",
            "task_id": "Task key, module.function (NULL if the invocation row is missing).",
            "step": "1 for the first change of the invocation, then 2, 3, ...",
            "status": "Status entered at this step.",
            "recorded_at": "When pynenc recorded the change (client clock, UTC).",
            "previous_status": "Status before this step; NULL at step 1.",
            "since_previous": "Time spent in the previous status; NULL at step 1.",
            "since_first": "Time since step 1.",
            "owner_runner_id": "Runner owning the invocation in this status, if any.",
            "runner_id": "Runner context that wrote the change.",
            "runner_cls": "Class of that runner context, e.g. ThreadRunner.",
            "hostname": "Host of that runner context.",
            "pid": "Process id of that runner context.",
            "registered_by_invocation_id": "For REGISTERED rows: the parent that registered it.",
        },
    ),
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    # Retention deletes an invocation's workflow membership by sub-invocation id.
    # IF NOT EXISTS lets a DBA build the index CONCURRENTLY ahead of a large upgrade.
    op.create_index(
        "ix_pynenc_workflow_sub_invocation_app_id_sub_invocation_id",
        "pynenc_workflow_sub_invocation",
        ["app_id", "sub_invocation_id"],
        unique=False,
        if_not_exists=True,
    )
    op.execute(STATUS_VIEW)
    op.execute(TIMELINE_VIEW)
    for view, (view_comment, columns) in COMMENTS.items():
        op.execute(f"COMMENT ON VIEW {view} IS {_literal(view_comment)}")
        for column, column_comment in columns.items():
            op.execute(f"COMMENT ON COLUMN {view}.{column} IS {_literal(column_comment)}")


def downgrade() -> None:
    op.execute("DROP VIEW pynenc_invocation_timeline")
    op.execute("DROP VIEW pynenc_invocation_status")
    op.drop_index(
        "ix_pynenc_workflow_sub_invocation_app_id_sub_invocation_id",
        table_name="pynenc_workflow_sub_invocation",
    )
