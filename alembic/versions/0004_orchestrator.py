"""Orchestrator tables: invocation status, concurrency-control arguments, blocking
control, runner heartbeats and atomic-service executions; the runner-status view.

The tables are new and empty, so creating them and their indexes takes no lock that
running pynenc processes wait on. ``pynenc_runner_status`` shows each runner with the
age of its heartbeat on the server's clock, the invocations it holds and whether it
holds the atomic service; like the views of 0002 it names no schema.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNER_STATUS_VIEW = """
CREATE VIEW pynenc_runner_status AS
SELECT h.app_id,
       h.runner_id,
       c.runner_cls,
       c.hostname,
       c.pid,
       h.can_run_atomic_service,
       h.consumed_queues,
       h.first_heartbeat_at,
       h.last_heartbeat_at,
       now() - h.last_heartbeat_at AS heartbeat_age,
       (SELECT count(*) FROM pynenc_orchestrator_invocation i
        WHERE i.app_id = h.app_id AND i.status = 'pending'
          AND i.status_owner_id = h.runner_id) AS pending_invocations,
       (SELECT count(*) FROM pynenc_orchestrator_invocation i
        WHERE i.app_id = h.app_id AND i.status = 'running'
          AND i.status_owner_id = h.runner_id) AS running_invocations,
       a.atomic_service_run_id IS NOT NULL AS holds_atomic_service,
       a.atomic_service_run_id,
       a.start_time AS atomic_service_started_at
FROM pynenc_runner_heartbeat h
LEFT JOIN pynenc_runner_context c
    ON c.app_id = h.app_id AND c.runner_id = h.runner_id
LEFT JOIN pynenc_atomic_service_execution a
    ON a.app_id = h.app_id AND a.runner_id = h.runner_id AND a.status = 'running'
"""

VIEW_COMMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "pynenc_runner_status": (
        "Each runner with the age of its latest heartbeat (server clock), the invocations "
        "it owns and whether it holds the atomic service. Filter on app_id.",
        {
            "app_id": "pynenc application id.",
            "runner_id": "Runner context id.",
            "runner_cls": "Runner class, from pynenc_runner_context (NULL if not stored).",
            "hostname": "Host of the runner, from pynenc_runner_context.",
            "pid": "Process id of the runner, from pynenc_runner_context.",
            "can_run_atomic_service": "True when the runner may hold the atomic service.",
            "consumed_queues": "Broker queues the runner consumes.",
            "first_heartbeat_at": "First heartbeat (server clock).",
            "last_heartbeat_at": "Latest heartbeat (server clock).",
            "heartbeat_age": (
                "now() - last_heartbeat_at; pynenc considers the runner dead past "
                "runner_considered_dead_after_minutes (10 by default)."
            ),
            "pending_invocations": "Invocations PENDING and owned by this runner.",
            "running_invocations": "Invocations RUNNING and owned by this runner.",
            "holds_atomic_service": "True while the runner holds the atomic service.",
            "atomic_service_run_id": "Its running atomic-service execution, if any.",
            "atomic_service_started_at": "Start of that execution, as the runner reported it.",
        },
    ),
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    op.create_table(
        "pynenc_atomic_service_execution",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "atomic_service_run_id",
            sa.Text(),
            nullable=False,
            comment="Id of this execution attempt.",
        ),
        sa.Column("runner_id", sa.Text(), nullable=False, comment="Runner that made the attempt."),
        sa.Column(
            "status", sa.Text(), nullable=False, comment="running, completed, abandoned or blocked."
        ),
        sa.Column(
            "reason",
            sa.Text(),
            server_default=sa.text("''"),
            nullable=False,
            comment="Why it was blocked or abandoned (e.g. prior_running:..., holder dead).",
        ),
        sa.Column(
            "start_time",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="Start as reported by the runner, or the server clock when not reported.",
        ),
        sa.Column(
            "end_time",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment=(
                "End as reported by the runner (server clock when abandoned); NULL while running."
            ),
        ),
        sa.Column(
            "recorded_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment=(
                "When the attempt was written (server clock); a new holder is never "
                "considered dead before runner_considered_dead_after_minutes from "
                "here."
            ),
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "atomic_service_run_id", name=op.f("pk_pynenc_atomic_service_execution")
        ),
        comment=(
            "Atomic-service executions (trigger processing and recovery). At most one"
            " per app is running; a dead holder's run is abandoned and the slot "
            "taken."
        ),
    )
    op.create_index(
        "ix_pynenc_atomic_service_execution_app_id_start_time",
        "pynenc_atomic_service_execution",
        ["app_id", "start_time"],
        unique=False,
    )
    op.create_index(
        "uq_pynenc_atomic_service_execution_app_id_running",
        "pynenc_atomic_service_execution",
        ["app_id"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "pynenc_orchestrator_argument",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("invocation_id", sa.Text(), nullable=False, comment="pynenc invocation id."),
        sa.Column("argument_name", sa.Text(), nullable=False, comment="Argument name."),
        sa.Column(
            "serialized_value", sa.Text(), nullable=False, comment="Value, as serialized by pynenc."
        ),
        sa.Column(
            "value_md5",
            sa.Text(),
            nullable=False,
            comment="md5 of serialized_value (hex), the indexed form of the value.",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "invocation_id", "argument_name", name=op.f("pk_pynenc_orchestrator_argument")
        ),
        comment=(
            "Arguments of invocations of tasks with registration or running "
            "concurrency control, to find invocations with the same (key) arguments."
        ),
    )
    op.create_index(
        "ix_pynenc_orchestrator_argument_app_id_argument_name_value_md5",
        "pynenc_orchestrator_argument",
        ["app_id", "argument_name", "value_md5"],
        unique=False,
    )
    op.create_table(
        "pynenc_orchestrator_invocation",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("invocation_id", sa.Text(), nullable=False, comment="pynenc invocation id."),
        sa.Column("task_id", sa.Text(), nullable=False, comment="Task key, module.function."),
        sa.Column(
            "call_id",
            sa.Text(),
            nullable=False,
            comment="Call key: task key plus the arguments id.",
        ),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="Current status: registered, pending, running, success, failed, ...",
        ),
        sa.Column(
            "status_owner_id",
            sa.Text(),
            nullable=True,
            comment="Runner that owns the invocation in its current status, if any.",
        ),
        sa.Column(
            "status_set_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="When the current status was set (server clock, UTC).",
        ),
        sa.Column(
            "status_change_id",
            sa.Text(),
            nullable=True,
            comment=(
                "Id of the status change that set the current status; a change resent "
                "after a lost reply recognises itself by it. NULL after registration."
            ),
        ),
        sa.Column(
            "retries",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Times the invocation was retried.",
        ),
        sa.Column(
            "registered_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the invocation was registered (server clock).",
        ),
        sa.Column(
            "purgeable_since",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment=(
                "When the invocation reached a final status and became subject to "
                "auto_final_invocation_purge_hours (server clock); NULL before."
            ),
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "invocation_id", name=op.f("pk_pynenc_orchestrator_invocation")
        ),
        comment=(
            "Current status, owner and retry count of each invocation, as the "
            "orchestrator enforces them (server clock)."
        ),
    )
    op.create_index(
        "ix_pynenc_orchestrator_invocation_app_id_call_id",
        "pynenc_orchestrator_invocation",
        ["app_id", "call_id"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_orchestrator_invocation_app_id_purgeable_since",
        "pynenc_orchestrator_invocation",
        ["app_id", "purgeable_since"],
        unique=False,
        postgresql_where=sa.text("purgeable_since IS NOT NULL"),
    )
    op.create_index(
        "ix_pynenc_orchestrator_invocation_app_id_registered_at",
        "pynenc_orchestrator_invocation",
        ["app_id", "registered_at"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_orchestrator_invocation_app_id_status_status_set_at",
        "pynenc_orchestrator_invocation",
        ["app_id", "status", "status_set_at"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_orchestrator_invocation_app_id_task_id_status",
        "pynenc_orchestrator_invocation",
        ["app_id", "task_id", "status"],
        unique=False,
    )
    op.create_table(
        "pynenc_orchestrator_waiting",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "waiter_invocation_id", sa.Text(), nullable=False, comment="Invocation that waits."
        ),
        sa.Column(
            "waited_invocation_id",
            sa.Text(),
            nullable=False,
            comment="Invocation whose result it waits for.",
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was first written (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "app_id",
            "waiter_invocation_id",
            "waited_invocation_id",
            name=op.f("pk_pynenc_orchestrator_waiting"),
        ),
        comment=(
            "Blocking control: an invocation waiting for the results of others. Rows "
            "go when the waited invocation finishes."
        ),
    )
    op.create_index(
        "ix_pynenc_orchestrator_waiting_app_id_waited_invocation_id",
        "pynenc_orchestrator_waiting",
        ["app_id", "waited_invocation_id"],
        unique=False,
    )
    op.create_table(
        "pynenc_runner_heartbeat",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("runner_id", sa.Text(), nullable=False, comment="Runner context id."),
        sa.Column(
            "can_run_atomic_service",
            sa.Boolean(),
            nullable=False,
            comment="True when the runner may hold the atomic service (triggers, recovery).",
        ),
        sa.Column(
            "consumed_queues",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
            comment="Broker queues the runner consumes; empty when not reported.",
        ),
        sa.Column(
            "first_heartbeat_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="First heartbeat (server clock); orders runners for atomic-service slots.",
        ),
        sa.Column(
            "last_heartbeat_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="Latest heartbeat (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "runner_id", name=op.f("pk_pynenc_runner_heartbeat")),
        comment=(
            "One row per runner (and worker) of an app with its latest heartbeat. A "
            "runner is dead once now() - last_heartbeat_at exceeds "
            "runner_considered_dead_after_minutes."
        ),
    )
    op.create_index(
        "ix_pynenc_runner_heartbeat_app_id_last_heartbeat_at",
        "pynenc_runner_heartbeat",
        ["app_id", "last_heartbeat_at"],
        unique=False,
    )

    op.execute(RUNNER_STATUS_VIEW)
    for view, (view_comment, columns) in VIEW_COMMENTS.items():
        op.execute(f"COMMENT ON VIEW {view} IS {_literal(view_comment)}")
        for column, column_comment in columns.items():
            op.execute(f"COMMENT ON COLUMN {view}.{column} IS {_literal(column_comment)}")


def downgrade() -> None:
    op.execute("DROP VIEW pynenc_runner_status")
    op.drop_index(
        "ix_pynenc_runner_heartbeat_app_id_last_heartbeat_at", table_name="pynenc_runner_heartbeat"
    )
    op.drop_table("pynenc_runner_heartbeat")
    op.drop_index(
        "ix_pynenc_orchestrator_waiting_app_id_waited_invocation_id",
        table_name="pynenc_orchestrator_waiting",
    )
    op.drop_table("pynenc_orchestrator_waiting")
    op.drop_index(
        "ix_pynenc_orchestrator_invocation_app_id_task_id_status",
        table_name="pynenc_orchestrator_invocation",
    )
    op.drop_index(
        "ix_pynenc_orchestrator_invocation_app_id_status_status_set_at",
        table_name="pynenc_orchestrator_invocation",
    )
    op.drop_index(
        "ix_pynenc_orchestrator_invocation_app_id_registered_at",
        table_name="pynenc_orchestrator_invocation",
    )
    op.drop_index(
        "ix_pynenc_orchestrator_invocation_app_id_purgeable_since",
        table_name="pynenc_orchestrator_invocation",
        postgresql_where=sa.text("purgeable_since IS NOT NULL"),
    )
    op.drop_index(
        "ix_pynenc_orchestrator_invocation_app_id_call_id",
        table_name="pynenc_orchestrator_invocation",
    )
    op.drop_table("pynenc_orchestrator_invocation")
    op.drop_index(
        "ix_pynenc_orchestrator_argument_app_id_argument_name_value_md5",
        table_name="pynenc_orchestrator_argument",
    )
    op.drop_table("pynenc_orchestrator_argument")
    op.drop_index(
        "uq_pynenc_atomic_service_execution_app_id_running",
        table_name="pynenc_atomic_service_execution",
        postgresql_where=sa.text("status = 'running'"),
    )
    op.drop_index(
        "ix_pynenc_atomic_service_execution_app_id_start_time",
        table_name="pynenc_atomic_service_execution",
    )
    op.drop_table("pynenc_atomic_service_execution")
