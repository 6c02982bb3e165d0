"""Retry count safe to resend: the id of the last increment is kept with the count.

``increment_invocation_retries`` adds one to ``retries`` and stamps the row with its own
id; a statement resent after a lost reply finds its id already there and adds nothing, so
a connection blip never costs a task one of its retries.

Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "pynenc_orchestrator_invocation",
        sa.Column(
            "retries_change_id",
            sa.Text(),
            nullable=True,
            comment="Id of the last retry increment; a resent increment recognises itself "
            "by it and counts once. NULL before the first.",
        ),
    )


def downgrade() -> None:
    op.drop_column("pynenc_orchestrator_invocation", "retries_change_id")
