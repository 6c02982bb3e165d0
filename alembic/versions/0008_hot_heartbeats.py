"""HOT heartbeats: no index on the column a heartbeat changes, room on each page.

Every heartbeat updates ``last_heartbeat_at``. With the index
``(app_id, last_heartbeat_at)`` each update wrote a new index entry and could never be
a heap-only tuple (HOT) update, so the table and the index grew with every beat until
VACUUM came. The index is dropped: the statements that read heartbeats find an app's
runners through the primary key ``(app_id, runner_id)``, one row per runner. A fill
factor of 50 keeps room on each page for the new row version, so the update stays on its
page and the old version is pruned there.

The fill factor applies to pages written from now on; existing rows move to roomier
pages as they are updated and VACUUM frees the old ones. Nothing is rewritten here.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "pynenc_runner_heartbeat"
INDEX = "ix_pynenc_runner_heartbeat_app_id_last_heartbeat_at"


def upgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    op.execute(f"ALTER TABLE {TABLE} SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute(f"ALTER TABLE {TABLE} RESET (fillfactor)")
    op.create_index(INDEX, TABLE, ["app_id", "last_heartbeat_at"], unique=False)
