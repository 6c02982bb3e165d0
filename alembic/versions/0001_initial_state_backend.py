"""Baseline: the state-backend tables of pynenc 0.4, with their indexes and comments.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pynenc_app_info",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "module", sa.Text(), nullable=False, comment="Python module that defines the app."
        ),
        sa.Column(
            "app_info_json",
            sa.Text(),
            nullable=False,
            comment="pynenc AppInfo as JSON, with the database password removed.",
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the app last registered (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", name=op.f("pk_pynenc_app_info")),
        comment="One row per pynenc app, for discovery. Never holds a database password.",
    )
    op.create_table(
        "pynenc_invocation",
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
            "arguments_id",
            sa.Text(),
            nullable=False,
            comment="Hash identifying the call's arguments.",
        ),
        sa.Column(
            "serialized_arguments",
            sa.Text(),
            nullable=False,
            comment="JSON object of argument name to value, each as serialized by pynenc.",
        ),
        sa.Column(
            "parent_invocation_id",
            sa.Text(),
            nullable=True,
            comment="Invocation that called this one, if any.",
        ),
        sa.Column(
            "parent_event_id",
            sa.Text(),
            nullable=True,
            comment="Trigger event whose firing created this invocation, if any.",
        ),
        sa.Column(
            "workflow_id",
            sa.Text(),
            nullable=True,
            comment="Invocation id of the workflow this invocation belongs to.",
        ),
        sa.Column(
            "workflow_type_key",
            sa.Text(),
            nullable=True,
            comment="Task key of the workflow's defining task.",
        ),
        sa.Column(
            "parent_workflow_id",
            sa.Text(),
            nullable=True,
            comment="Workflow that started this invocation's workflow, if nested.",
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was first written (server clock, UTC).",
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was last upserted (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "invocation_id", name=op.f("pk_pynenc_invocation")),
        comment="Every pynenc invocation: the task called and its serialized arguments.",
    )
    op.create_index(
        "ix_pynenc_invocation_app_id_parent_event_id",
        "pynenc_invocation",
        ["app_id", "parent_event_id"],
        unique=False,
        postgresql_where=sa.text("parent_event_id IS NOT NULL"),
    )
    op.create_index(
        "ix_pynenc_invocation_app_id_parent_invocation_id",
        "pynenc_invocation",
        ["app_id", "parent_invocation_id"],
        unique=False,
        postgresql_where=sa.text("parent_invocation_id IS NOT NULL"),
    )
    op.create_index(
        "ix_pynenc_invocation_app_id_task_id",
        "pynenc_invocation",
        ["app_id", "task_id"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_invocation_app_id_workflow_id",
        "pynenc_invocation",
        ["app_id", "workflow_id"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_invocation_app_id_workflow_type_key",
        "pynenc_invocation",
        ["app_id", "workflow_type_key"],
        unique=False,
    )
    op.create_table(
        "pynenc_invocation_exception",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("invocation_id", sa.Text(), nullable=False, comment="Invocation that raised."),
        sa.Column(
            "error_name",
            sa.Text(),
            nullable=False,
            comment="Exception class name, e.g. ValueError.",
        ),
        sa.Column(
            "is_pynenc_error",
            sa.Boolean(),
            nullable=False,
            comment="True when the exception is one of pynenc's own errors.",
        ),
        sa.Column(
            "serialized_exception",
            sa.Text(),
            nullable=False,
            comment="pynenc's JSON document: error_name, pynenc_error, error_data.",
        ),
        sa.Column(
            "stored_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the exception was stored (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "invocation_id", name=op.f("pk_pynenc_invocation_exception")
        ),
        comment="Exception raised by each invocation that failed, as pynenc serialized it.",
    )
    op.create_index(
        "ix_pynenc_invocation_exception_app_id_error_name",
        "pynenc_invocation_exception",
        ["app_id", "error_name"],
        unique=False,
    )
    op.create_table(
        "pynenc_invocation_history",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "invocation_id", sa.Text(), nullable=False, comment="Invocation the change belongs to."
        ),
        sa.Column(
            "recorded_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="When pynenc recorded the change (client clock, UTC, microseconds).",
        ),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="Status value as pynenc writes it: registered, running, success, failed, ...",
        ),
        sa.Column(
            "status_owner_id",
            sa.Text(),
            nullable=True,
            comment="Runner that owns the invocation in this status, if any.",
        ),
        sa.Column(
            "status_set_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="Timestamp carried by pynenc's status record.",
        ),
        sa.Column(
            "runner_id",
            sa.Text(),
            nullable=False,
            comment="Runner context that wrote the change (see pynenc_runner_context).",
        ),
        sa.Column(
            "registered_by_invocation_id",
            sa.Text(),
            nullable=True,
            comment="For REGISTERED rows: the parent invocation that registered it.",
        ),
        sa.PrimaryKeyConstraint(
            "app_id",
            "invocation_id",
            "recorded_at",
            "status",
            name=op.f("pk_pynenc_invocation_history"),
        ),
        comment="Append-only status history. The natural key makes a resent insert a no-op.",
    )
    op.create_index(
        "ix_pynenc_invocation_history_app_id_recorded_at",
        "pynenc_invocation_history",
        ["app_id", "recorded_at", "invocation_id", "status"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_invocation_history_app_id_runner_id",
        "pynenc_invocation_history",
        ["app_id", "runner_id"],
        unique=False,
    )
    op.create_table(
        "pynenc_invocation_result",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("invocation_id", sa.Text(), nullable=False, comment="Invocation that returned."),
        sa.Column(
            "serialized_result",
            sa.Text(),
            nullable=False,
            comment="Return value, as serialized by pynenc.",
        ),
        sa.Column(
            "stored_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the result was stored (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "invocation_id", name=op.f("pk_pynenc_invocation_result")
        ),
        comment="Result of each invocation that returned, as pynenc serialized it.",
    )
    op.create_table(
        "pynenc_runner_context",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("runner_id", sa.Text(), nullable=False, comment="Unique id of this context."),
        sa.Column(
            "runner_cls",
            sa.Text(),
            nullable=False,
            comment="Runner class name, e.g. ProcessRunner.",
        ),
        sa.Column(
            "parent_runner_id",
            sa.Text(),
            nullable=True,
            comment="Enclosing context (e.g. the runner of a worker process), if any.",
        ),
        sa.Column("pid", sa.BigInteger(), nullable=False, comment="Operating-system process id."),
        sa.Column("hostname", sa.Text(), nullable=False, comment="Host the context ran on."),
        sa.Column(
            "thread_id", sa.BigInteger(), nullable=False, comment="Python thread identifier."
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was first written (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "runner_id", name=op.f("pk_pynenc_runner_context")),
        comment="Execution contexts (runner, process, thread) that wrote history rows.",
    )
    op.create_table(
        "pynenc_workflow_data",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "workflow_id", sa.Text(), nullable=False, comment="Workflow run the data belongs to."
        ),
        sa.Column("data_key", sa.Text(), nullable=False, comment="Key chosen by the workflow."),
        sa.Column(
            "serialized_value", sa.Text(), nullable=False, comment="Value, as serialized by pynenc."
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the value was last written (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "workflow_id", "data_key", name=op.f("pk_pynenc_workflow_data")
        ),
        comment="Per-workflow key/value data, values as serialized by pynenc.",
    )
    op.create_table(
        "pynenc_workflow_run",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "workflow_id",
            sa.Text(),
            nullable=False,
            comment="Invocation id of the workflow's defining invocation.",
        ),
        sa.Column(
            "workflow_type_key",
            sa.Text(),
            nullable=False,
            comment="Task key of the workflow's defining task.",
        ),
        sa.Column(
            "parent_workflow_id", sa.Text(), nullable=True, comment="Enclosing workflow, if nested."
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was first written (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "workflow_id", name=op.f("pk_pynenc_workflow_run")),
        comment="Each run of a workflow, with its type and parent workflow.",
    )
    op.create_index(
        "ix_pynenc_workflow_run_app_id_workflow_type_key",
        "pynenc_workflow_run",
        ["app_id", "workflow_type_key"],
        unique=False,
    )
    op.create_table(
        "pynenc_workflow_sub_invocation",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("workflow_id", sa.Text(), nullable=False, comment="Enclosing workflow run."),
        sa.Column(
            "sub_invocation_id", sa.Text(), nullable=False, comment="Invocation run inside it."
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
            "workflow_id",
            "sub_invocation_id",
            name=op.f("pk_pynenc_workflow_sub_invocation"),
        ),
        comment="Invocations (tasks or sub-workflows) run inside a workflow.",
    )


def downgrade() -> None:
    # Dropping a table drops its indexes with it.
    for table in (
        "pynenc_workflow_sub_invocation",
        "pynenc_workflow_run",
        "pynenc_workflow_data",
        "pynenc_runner_context",
        "pynenc_invocation_result",
        "pynenc_invocation_history",
        "pynenc_invocation_exception",
        "pynenc_invocation",
        "pynenc_app_info",
    ):
        op.drop_table(table)
