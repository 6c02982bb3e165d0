"""Table storage: autovacuum settings for the tables that every task or retention shrinks.

Measured on the Postgres-only stack (``benchmarks/soak.py``, docs/benchmarks.md) and
after retention runs (``benchmarks/retention_autovacuum.py``); the reasons are in
docs/operations.md ("Table storage"):

* ``pynenc_orchestrator_invocation``: three status updates per task, none of them HOT
  (``status`` and ``status_set_at`` are indexed, so every update writes new index
  entries; a fill factor cannot help), and the row is deleted by retention. By default
  autovacuum waits for 20 % of the rows to be dead: with a million invocations a day
  kept for 14 days, 2.8 million dead rows and their index entries. It now vacuums
  after 2 % (and at least 1,000 rows).
* ``pynenc_invocation``, ``pynenc_invocation_history``, ``pynenc_invocation_result``
  and ``pynenc_client_data``: rows are inserted once and leave only by retention, which
  removes the oldest part of what is kept (a day of 14 is 7 %). Below the default 20 %
  no vacuum follows, and the freed space cannot be reused until one does; the tables
  then grow by the rows of the days that pass before it. They now vacuum after 2 %.

``ALTER TABLE ... SET`` of these parameters takes a ``SHARE UPDATE EXCLUSIVE`` lock:
reads and writes of the table go on, and it rewrites nothing. The downgrade resets
them to the server's settings.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pynenc_postgres.db.models declares the same parameters on each model; a test holds
# the migrated database to them.
STORAGE: dict[str, dict[str, str]] = {
    "pynenc_orchestrator_invocation": {
        "autovacuum_vacuum_scale_factor": "0.02",
        "autovacuum_vacuum_threshold": "1000",
    },
    "pynenc_invocation": {"autovacuum_vacuum_scale_factor": "0.02"},
    "pynenc_invocation_history": {"autovacuum_vacuum_scale_factor": "0.02"},
    "pynenc_invocation_result": {"autovacuum_vacuum_scale_factor": "0.02"},
    "pynenc_client_data": {"autovacuum_vacuum_scale_factor": "0.02"},
}


def upgrade_statements() -> list[str]:
    return [
        f"ALTER TABLE {table} SET ({', '.join(f'{k} = {v}' for k, v in params.items())})"
        for table, params in STORAGE.items()
    ]


def downgrade_statements() -> list[str]:
    return [f"ALTER TABLE {table} RESET ({', '.join(params)})" for table, params in STORAGE.items()]


def upgrade() -> None:
    for statement in upgrade_statements():
        op.execute(statement)


def downgrade() -> None:
    for statement in downgrade_statements():
        op.execute(statement)
