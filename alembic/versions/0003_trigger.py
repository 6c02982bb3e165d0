"""Trigger tables: conditions, triggers, the valid-condition queue, cron ticks, run claims,
events and trigger runs, every row keyed by ``app_id``.

The cron compare-and-set and the trigger-run claim are single statements on
``pynenc_trigger_cron_execution`` and ``pynenc_trigger_run_claim``; the event and
trigger-run tables are monitoring records, purged by age and capacity.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pynenc_trigger_condition",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "condition_id",
            sa.Text(),
            nullable=False,
            comment="pynenc condition id (a hash of the condition's definition).",
        ),
        sa.Column(
            "condition_type",
            sa.Text(),
            nullable=False,
            comment="Condition class, e.g. CronCondition, EventCondition, StatusCondition.",
        ),
        sa.Column(
            "condition_json",
            sa.Text(),
            nullable=False,
            comment="The condition, as serialized by pynenc.",
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the condition was last registered (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "condition_id", name=op.f("pk_pynenc_trigger_condition")),
        comment="Trigger conditions registered by the app's tasks, as pynenc serialized them.",
    )
    op.create_table(
        "pynenc_trigger_cron_execution",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "condition_id",
            sa.Text(),
            nullable=False,
            comment="Cron condition (see pynenc_trigger_condition).",
        ),
        sa.Column(
            "last_execution",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="Tick time of the latest execution (client clock of the winner, UTC).",
        ),
        sa.Column(
            "claim_token",
            sa.Text(),
            nullable=False,
            comment=(
                "Random token of the call that set last_execution; makes a resent call idempotent."
            ),
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When last_execution was set (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "condition_id", name=op.f("pk_pynenc_trigger_cron_execution")
        ),
        comment=(
            "Last execution time of each cron condition. Changed by one compare-and-set "
            "statement, so only one process fires each tick."
        ),
    )
    op.create_table(
        "pynenc_trigger_definition",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("trigger_id", sa.Text(), nullable=False, comment="pynenc trigger id."),
        sa.Column(
            "task_id", sa.Text(), nullable=False, comment="Key of the task the trigger calls."
        ),
        sa.Column(
            "logic",
            sa.Text(),
            nullable=False,
            comment="How the conditions combine: and (all of them) or or (any of them).",
        ),
        sa.Column(
            "argument_provider_json",
            sa.Text(),
            nullable=True,
            comment="pynenc's serialized provider of the call's arguments, if any.",
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the trigger was last registered (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "trigger_id", name=op.f("pk_pynenc_trigger_definition")),
        comment="Each trigger: the task it calls, how its conditions combine, its arguments.",
    )
    op.create_index(
        "ix_pynenc_trigger_definition_app_id_task_id",
        "pynenc_trigger_definition",
        ["app_id", "task_id"],
        unique=False,
    )
    op.create_table(
        "pynenc_trigger_definition_condition",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "condition_id",
            sa.Text(),
            nullable=False,
            comment="Condition (see pynenc_trigger_condition).",
        ),
        sa.Column(
            "trigger_id",
            sa.Text(),
            nullable=False,
            comment="Trigger that waits for it (see pynenc_trigger_definition).",
        ),
        sa.Column(
            "position",
            sa.BigInteger(),
            nullable=False,
            comment="Place of the condition in the trigger's list, from 1.",
        ),
        sa.PrimaryKeyConstraint(
            "app_id",
            "condition_id",
            "trigger_id",
            name=op.f("pk_pynenc_trigger_definition_condition"),
        ),
        comment="Conditions of each trigger, in the order the trigger lists them.",
    )
    op.create_index(
        "ix_pynenc_trigger_definition_condition_app_id_trigger_id",
        "pynenc_trigger_definition_condition",
        ["app_id", "trigger_id", "position"],
        unique=False,
    )
    op.create_table(
        "pynenc_trigger_event",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("event_id", sa.Text(), nullable=False, comment="pynenc event id."),
        sa.Column(
            "event_code", sa.Text(), nullable=False, comment="Event code chosen by the emitter."
        ),
        sa.Column(
            "occurred_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="When the event was emitted (client clock, UTC, microseconds).",
        ),
        sa.Column(
            "matched_condition_count",
            sa.BigInteger(),
            nullable=False,
            comment="Number of event conditions the event satisfied.",
        ),
        sa.Column(
            "emitted_by_invocation_id",
            sa.Text(),
            nullable=True,
            comment="Invocation that emitted the event, if emitted inside a task.",
        ),
        sa.Column(
            "emitted_by_task_id",
            sa.Text(),
            nullable=True,
            comment="Key of that invocation's task, if any.",
        ),
        sa.Column(
            "emitted_by_runner_context_id",
            sa.Text(),
            nullable=True,
            comment="Runner context that emitted the event (see pynenc_runner_context).",
        ),
        sa.Column(
            "event_json",
            sa.Text(),
            nullable=False,
            comment=(
                "pynenc's EventRecord as JSON: payload values serialized by pynenc, matched and "
                "valid condition ids."
            ),
        ),
        sa.Column(
            "stored_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the event was last stored (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "event_id", name=op.f("pk_pynenc_trigger_event")),
        comment="Every event emitted with emit_event, with its payload and who emitted it.",
    )
    op.create_index(
        "ix_pynenc_trigger_event_app_id_emitted_by_invocation_id",
        "pynenc_trigger_event",
        ["app_id", "emitted_by_invocation_id"],
        unique=False,
        postgresql_where=sa.text("emitted_by_invocation_id IS NOT NULL"),
    )
    op.create_index(
        "ix_pynenc_trigger_event_app_id_event_code_occurred_at",
        "pynenc_trigger_event",
        ["app_id", "event_code", "occurred_at"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_trigger_event_app_id_occurred_at",
        "pynenc_trigger_event",
        ["app_id", "occurred_at"],
        unique=False,
    )
    op.create_table(
        "pynenc_trigger_event_invocation",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "event_id", sa.Text(), nullable=False, comment="Event (see pynenc_trigger_event)."
        ),
        sa.Column(
            "invocation_id",
            sa.Text(),
            nullable=False,
            comment="Invocation the event's trigger run created.",
        ),
        sa.Column(
            "trigger_run_id",
            sa.Text(),
            nullable=True,
            comment="Trigger run that created it (see pynenc_trigger_run), if known.",
        ),
        sa.Column(
            "linked_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="When the link was written (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "event_id", "invocation_id", name=op.f("pk_pynenc_trigger_event_invocation")
        ),
        comment="Invocations created by trigger runs that an event fired.",
    )
    op.create_table(
        "pynenc_trigger_run",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("trigger_run_id", sa.Text(), nullable=False, comment="pynenc trigger run id."),
        sa.Column(
            "trigger_id",
            sa.Text(),
            nullable=False,
            comment="Trigger that ran (see pynenc_trigger_definition).",
        ),
        sa.Column(
            "task_id", sa.Text(), nullable=False, comment="Key of the task the trigger called."
        ),
        sa.Column(
            "logic",
            sa.Text(),
            nullable=False,
            comment="How the trigger's conditions combine: and, or.",
        ),
        sa.Column(
            "triggered_invocation_id",
            sa.Text(),
            nullable=True,
            comment="Invocation the run created (see pynenc_invocation).",
        ),
        sa.Column(
            "atomic_service_run_id",
            sa.Text(),
            nullable=True,
            comment="Atomic-service cycle of the runner that executed the run, if any.",
        ),
        sa.Column(
            "claimed_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the run was claimed (client clock, UTC).",
        ),
        sa.Column(
            "executed_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment=(
                "When the run created its invocation (client clock, UTC); the claim time, or the "
                "time of storing, when pynenc gave none."
            ),
        ),
        sa.Column(
            "trigger_run_json",
            sa.Text(),
            nullable=False,
            comment="pynenc's TriggerRunRecord as JSON, participants included.",
        ),
        sa.Column(
            "stored_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the run was last stored (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "trigger_run_id", name=op.f("pk_pynenc_trigger_run")),
        comment="Every trigger run: the trigger, the invocation it created, and when.",
    )
    op.create_index(
        "ix_pynenc_trigger_run_app_id_atomic_service_run_id",
        "pynenc_trigger_run",
        ["app_id", "atomic_service_run_id"],
        unique=False,
        postgresql_where=sa.text("atomic_service_run_id IS NOT NULL"),
    )
    op.create_index(
        "ix_pynenc_trigger_run_app_id_executed_at",
        "pynenc_trigger_run",
        ["app_id", "executed_at"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_trigger_run_app_id_task_id_executed_at",
        "pynenc_trigger_run",
        ["app_id", "task_id", "executed_at"],
        unique=False,
    )
    op.create_index(
        "ix_pynenc_trigger_run_app_id_triggered_invocation_id",
        "pynenc_trigger_run",
        ["app_id", "triggered_invocation_id"],
        unique=False,
    )
    op.create_table(
        "pynenc_trigger_run_claim",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("trigger_run_id", sa.Text(), nullable=False, comment="pynenc trigger run id."),
        sa.Column(
            "claim_token",
            sa.Text(),
            nullable=False,
            comment="Random token of the winning call; makes a resent claim idempotent.",
        ),
        sa.Column(
            "claimed_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="When the claim was taken (server clock, UTC).",
        ),
        sa.Column(
            "expires_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="When the claim lapses and the run may be claimed again (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "trigger_run_id", name=op.f("pk_pynenc_trigger_run_claim")
        ),
        comment=(
            "Claims on trigger runs: one process executes a run; another may take the run over "
            "once the claim has expired by the server clock."
        ),
    )
    op.create_index(
        "ix_pynenc_trigger_run_claim_app_id_expires_at",
        "pynenc_trigger_run_claim",
        ["app_id", "expires_at"],
        unique=False,
    )
    op.create_table(
        "pynenc_trigger_run_participant",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "trigger_run_id",
            sa.Text(),
            nullable=False,
            comment="Trigger run (see pynenc_trigger_run).",
        ),
        sa.Column(
            "position",
            sa.BigInteger(),
            nullable=False,
            comment="Place of the participant in the run's list, from 1.",
        ),
        sa.Column(
            "context_type",
            sa.Text(),
            nullable=True,
            comment=(
                "What satisfied the condition: EventContext, StatusContext, ResultContext, "
                "ExceptionContext or CronContext."
            ),
        ),
        sa.Column(
            "condition_id",
            sa.Text(),
            nullable=True,
            comment="Condition satisfied (see pynenc_trigger_condition).",
        ),
        sa.Column(
            "valid_condition_id",
            sa.Text(),
            nullable=True,
            comment="pynenc id of the satisfied condition and its context.",
        ),
        sa.Column(
            "event_id",
            sa.Text(),
            nullable=True,
            comment="Event that satisfied it (see pynenc_trigger_event), if any.",
        ),
        sa.Column(
            "source_invocation_id",
            sa.Text(),
            nullable=True,
            comment="Invocation whose status, result or exception satisfied it, if any.",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "trigger_run_id", "position", name=op.f("pk_pynenc_trigger_run_participant")
        ),
        comment="The causes of each trigger run: one row per satisfied condition.",
    )
    op.create_index(
        "ix_pynenc_trigger_run_participant_app_id_event_id",
        "pynenc_trigger_run_participant",
        ["app_id", "event_id"],
        unique=False,
        postgresql_where=sa.text("event_id IS NOT NULL"),
    )
    op.create_index(
        "ix_pynenc_trigger_run_participant_app_id_source_invocation_id",
        "pynenc_trigger_run_participant",
        ["app_id", "source_invocation_id"],
        unique=False,
        postgresql_where=sa.text("source_invocation_id IS NOT NULL"),
    )
    op.create_index(
        "ix_pynenc_trigger_run_participant_app_id_valid_condition_id",
        "pynenc_trigger_run_participant",
        ["app_id", "valid_condition_id"],
        unique=False,
        postgresql_where=sa.text("valid_condition_id IS NOT NULL"),
    )
    op.create_table(
        "pynenc_trigger_source_task_condition",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "task_id",
            sa.Text(),
            nullable=False,
            comment="Key of the watched task, module.function.",
        ),
        sa.Column(
            "condition_id",
            sa.Text(),
            nullable=False,
            comment="Condition watching it (see pynenc_trigger_condition).",
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
            "task_id",
            "condition_id",
            name=op.f("pk_pynenc_trigger_source_task_condition"),
        ),
        comment="Conditions that watch a task's statuses, results or exceptions.",
    )
    op.create_table(
        "pynenc_trigger_valid_condition",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "valid_condition_id",
            sa.Text(),
            nullable=False,
            comment="pynenc id of this satisfied condition and context.",
        ),
        sa.Column(
            "condition_id",
            sa.Text(),
            nullable=False,
            comment="Condition that was met (see pynenc_trigger_condition).",
        ),
        sa.Column(
            "valid_condition_json",
            sa.Text(),
            nullable=False,
            comment=(
                "Condition and context (event, status, result, cron time), as serialized by pynenc."
            ),
        ),
        sa.Column(
            "recorded_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the condition was recorded as met (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "valid_condition_id", name=op.f("pk_pynenc_trigger_valid_condition")
        ),
        comment=(
            "Conditions met and not yet consumed by the trigger loop, with the context that met "
            "them. Rows are deleted once processed."
        ),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes with it.
    for table in (
        "pynenc_trigger_run_participant",
        "pynenc_trigger_run",
        "pynenc_trigger_event_invocation",
        "pynenc_trigger_event",
        "pynenc_trigger_run_claim",
        "pynenc_trigger_cron_execution",
        "pynenc_trigger_valid_condition",
        "pynenc_trigger_definition_condition",
        "pynenc_trigger_definition",
        "pynenc_trigger_source_task_condition",
        "pynenc_trigger_condition",
    ):
        op.drop_table(table)
