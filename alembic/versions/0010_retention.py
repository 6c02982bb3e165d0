"""Retention that runs itself: its schedule, the record of its runs, client data kept in use.

``pynenc_retention_schedule`` holds one row per app: when its retention is next due. A
runner claims the due run in one statement (``UPDATE ... WHERE due_at <= now()``
through ``INSERT ... ON CONFLICT``), which moves ``due_at`` one interval ahead, so one
runner of the cluster runs each interval's retention, by the server's clock.

``pynenc_retention_run`` records every run, scheduled or from ``pynenc-postgres purge``:
when, which app, the policy, the outcome and the rows removed per table, for operators
(``pynenc-postgres inspect retention``) and the metrics exporter.

``pynenc_client_data.stored_at`` changes meaning, not type: storing a value again now
moves it forward (once it is a minute old), so retention, which removes client data no
remaining row refers to, never takes a value that a new invocation is about to use.
Only the column's comment changes here.

Both tables are new and empty: nothing existing is locked beyond the catalog.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEDULE = "pynenc_retention_schedule"
RUN = "pynenc_retention_run"
CLIENT_DATA = "pynenc_client_data"
STORED_AT_BEFORE = "When the value was first stored (server clock, UTC)."
STORED_AT_AFTER = (
    "When the value was last stored (server clock, UTC): storing it again moves this "
    "forward once it is a minute old, so retention keeps a value that a new invocation "
    "is about to use."
)


def upgrade() -> None:
    op.create_table(
        SCHEDULE,
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "due_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=False,
            comment="When the next run is due (server clock, UTC).",
        ),
        sa.Column(
            "last_run_id",
            sa.Text(),
            nullable=True,
            comment="The latest run claimed (see pynenc_retention_run).",
        ),
        sa.Column(
            "last_claimed_by",
            sa.Text(),
            nullable=True,
            comment="Runner that claimed the latest run.",
        ),
        sa.Column(
            "last_claimed_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the latest run was claimed (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", name=op.f("pk_pynenc_retention_schedule")),
        comment="Retention schedule: one row per app. A runner claims a due run by moving "
        "due_at one interval ahead in one statement, so one runner of the cluster runs "
        "each interval's retention.",
    )
    op.create_table(
        RUN,
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column("run_id", sa.Text(), nullable=False, comment="Unique id of the run."),
        sa.Column(
            "kind",
            sa.Text(),
            nullable=False,
            comment="scheduled (claimed by a runner) or command (pynenc-postgres purge, or a "
            "call of purge_invocations or auto_purge).",
        ),
        sa.Column(
            "runner_id",
            sa.Text(),
            nullable=True,
            comment="Runner that claimed a scheduled run; NULL for a command.",
        ),
        sa.Column(
            "policy",
            sa.Text(),
            nullable=False,
            comment="What was in scope, e.g. 'failed=30d, success=7d' or the command's options.",
        ),
        sa.Column(
            "started_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the run started (server clock, UTC).",
        ),
        sa.Column(
            "finished_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the run ended (server clock, UTC); NULL while running or if its "
            "process died.",
        ),
        sa.Column(
            "outcome",
            sa.Text(),
            nullable=False,
            comment="running, completed, blocked (some batches waited too long for a lock "
            "and were left for the next run) or failed.",
        ),
        sa.Column(
            "invocations",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Invocations removed.",
        ),
        sa.Column(
            "batches",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Batches committed (one transaction each).",
        ),
        sa.Column(
            "batches_blocked",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Batches rolled back because a lock was not granted within the lock timeout.",
        ),
        sa.Column(
            "rows_removed",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
            comment="Rows removed per table, as a JSON object of table name to count.",
        ),
        sa.Column(
            "error",
            sa.Text(),
            nullable=True,
            comment="Why the run failed or what blocked it; NULL when it completed.",
        ),
        sa.PrimaryKeyConstraint("app_id", "run_id", name=op.f("pk_pynenc_retention_run")),
        comment="One row per retention run: when, which app, the policy applied, its "
        "outcome and the rows removed per table.",
    )
    op.create_index(
        "ix_pynenc_retention_run_app_id_started_at", RUN, ["app_id", "started_at"], unique=False
    )
    op.alter_column(
        CLIENT_DATA,
        "stored_at",
        existing_type=postgresql.TIMESTAMP(timezone=True),
        comment=STORED_AT_AFTER,
        existing_comment=STORED_AT_BEFORE,
        existing_nullable=False,
        existing_server_default=sa.text("now()"),
    )


def downgrade() -> None:
    op.alter_column(
        CLIENT_DATA,
        "stored_at",
        existing_type=postgresql.TIMESTAMP(timezone=True),
        comment=STORED_AT_BEFORE,
        existing_comment=STORED_AT_AFTER,
        existing_nullable=False,
        existing_server_default=sa.text("now()"),
    )
    op.drop_index("ix_pynenc_retention_run_app_id_started_at", table_name=RUN)
    op.drop_table(RUN)
    op.drop_table(SCHEDULE)
