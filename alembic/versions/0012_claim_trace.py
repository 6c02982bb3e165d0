"""Claim trace: an invocation taken from the queue and not moved on leaves a time.

A worker takes an invocation from the queue by deleting its queue row. For a task without
concurrency control, the same statement moves it to PENDING; otherwise (or when the state
backend is elsewhere) the status change follows as a separate statement, and a worker that
stops in between leaves the invocation runnable and in no queue row. The atomic service
routes such invocations again. It used to find them by reading every runnable invocation
of the app and looking each up in the queue: with a backlog of 100,000 queued
invocations, about 2,700 buffers per search. The claim now stamps ``taken_at`` in that
case, every status change clears it, and a partial index holds only the stamped rows, so
the search reads only invocations taken and not moved on.

``ADD COLUMN`` without a default changes the catalog only. The index is on a column that
is NULL everywhere, so it holds no entry; the build still reads the table once while it
blocks writes to it (reads go on); docs/migrations.md gives the time at 1 and 10 million
rows.
Invocations taken by a runner of an older version before the upgrade carry no stamp: the
search does not see those.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "pynenc_orchestrator_invocation"
INDEX = "ix_pynenc_orchestrator_invocation_app_id_taken_at"


def upgrade() -> None:
    op.add_column(
        TABLE,
        sa.Column(
            "taken_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment=(
                "When a worker took the invocation from the queue without moving it on in "
                "the same statement (server clock); NULL again at its next status change. "
                "Set for long only if that worker stopped in between."
            ),
        ),
    )
    op.create_index(
        INDEX,
        TABLE,
        ["app_id", "taken_at"],
        unique=False,
        postgresql_where=sa.text("taken_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE, postgresql_where=sa.text("taken_at IS NOT NULL"))
    op.drop_column(TABLE, "taken_at")
