"""Broker queue and client data store: pynenc's queue and argument cache in Postgres.

``pynenc_broker_message`` is a queue table: a row is inserted when an invocation is
routed and deleted by the one statement that claims it, so it holds only waiting work.
Its per-table autovacuum settings vacuum it after a fixed number of dead rows, whatever
its size (see docs/operations.md, "Broker queue table").

``pynenc_client_data`` holds values too large to inline, keyed by the hash of their
content; ``bytea`` keeps any string, a NUL character included.

Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pynenc_broker_message",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "message_id",
            sa.BigInteger(),
            sa.Identity(always=True),
            nullable=False,
            comment="Routing order: within one priority, lower ids are taken first.",
        ),
        sa.Column(
            "queue_name",
            sa.Text(),
            nullable=False,
            comment="Broker queue the invocation was routed to.",
        ),
        sa.Column(
            "priority",
            sa.Double(),
            nullable=False,
            comment="Queue priority from -100 to 100; higher is taken first.",
        ),
        sa.Column("invocation_id", sa.Text(), nullable=False, comment="Invocation waiting to run."),
        sa.Column(
            "routed_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the invocation was routed (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "message_id", name=op.f("pk_pynenc_broker_message")),
        comment="Broker queue: one row per routed invocation, deleted when a runner takes it.",
        postgresql_with={
            "autovacuum_vacuum_scale_factor": "0",
            "autovacuum_vacuum_threshold": "1000",
            "autovacuum_vacuum_cost_delay": "0",
        },
    )
    op.create_index(
        "ix_pynenc_broker_message_app_id_queue_name_priority_message_id",
        "pynenc_broker_message",
        ["app_id", "queue_name", sa.literal_column("priority DESC"), "message_id"],
        unique=False,
    )
    op.create_table(
        "pynenc_client_data",
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "data_key",
            sa.Text(),
            nullable=False,
            comment="Reference key pynenc stores in place of the value (hash of its content).",
        ),
        sa.Column(
            "data_value",
            postgresql.BYTEA(),
            nullable=False,
            comment="The serialized value as UTF-8 bytes (bytea, so a NUL character survives).",
        ),
        sa.Column(
            "stored_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the value was first stored (server clock, UTC).",
        ),
        sa.PrimaryKeyConstraint("app_id", "data_key", name=op.f("pk_pynenc_client_data")),
        comment=(
            "pynenc client data store: serialized values too large to inline, "
            "keyed by the hash of their content."
        ),
    )


def downgrade() -> None:
    op.drop_table("pynenc_client_data")
    op.drop_index(
        "ix_pynenc_broker_message_app_id_queue_name_priority_message_id",
        table_name="pynenc_broker_message",
    )
    op.drop_table("pynenc_broker_message")
