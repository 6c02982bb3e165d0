"""History counters: running totals of finished, failed, retried and recovered invocations.

A metrics exporter must report how many invocations finished, failed or were retried as
counters that only go up, and a scrape must stay cheap however much history is kept.
Counting history rows would read one index entry per row (millions of them), and the
count would drop whenever retention deletes old history.

``pynenc_history_counter`` keeps the totals instead. A row-level trigger on
``pynenc_invocation_history``, ``pynenc_history_counter_count``, adds 1 to a total for
every history row inserted with a counted status (the final ones, ``retry`` and the two
recovery statuses). Its ``WHEN`` clause is evaluated without calling the trigger's
function, so inserting a row of any other status (most of them) costs nothing more. A
resent history row that ``ON CONFLICT DO NOTHING`` skips is not counted, nor is one
whose transaction rolls back. Deleting history (retention) fires nothing, so the totals
survive retention; ``app.purge()`` deletes the app's totals with its rows, which a
Prometheus counter reads as a reset.

Each total is split over rows (``shard``) that readers sum:

* the server process's pid modulo 16, so workers finishing tasks of one app at the
  same moment rarely wait for the same row lock, which is held until each commit;
* plus 16 for every 64 counted rows the transaction has already inserted (a count kept
  in the transaction-local setting ``pynenc_postgres.history_rows_counted``). A
  transaction that inserts many counted rows (an import, a seeding script) thus updates
  each row at most 64 times. Updating one row once per inserted row would make such a
  transaction quadratic: every update of a row leaves a version that the next update
  in the same transaction has to step over. The price is ``N / 64`` rows per status for
  the largest such transaction of N rows, reused by later ones.

The trigger function is ``SECURITY DEFINER``, owned by the role that runs this
migration: a runtime role that may insert history needs no grant on the new table for
that (its ``app.purge()`` needs ``DELETE`` on it, as on every table; see the runtime
role's grants in docs/audit.md). Its ``search_path`` is the schema being migrated
(``SET search_path FROM CURRENT``), so a caller's search path cannot redirect it.

The totals start at 0 when this revision is applied: existing history is not counted,
which would lock the history table against inserts for as long as it takes to read it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "pynenc_history_counter"
HISTORY = "pynenc_invocation_history"
COUNT = "pynenc_history_counter_count"
COUNTED_IN_TRANSACTION = "pynenc_postgres.history_rows_counted"

# The statuses counted. pynenc_postgres.metrics.sql.COUNTED_STATUSES holds the same
# list; a test compares them.
COUNTED_STATUSES = (
    "success",
    "failed",
    "concurrency_controlled_final",
    "retry",
    "pending_recovery",
    "running_recovery",
)
SHARDS = 16
UPDATES_PER_ROW = 64

CREATE_FUNCTION = f"""
CREATE FUNCTION {COUNT}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    counted bigint := coalesce(
        nullif(current_setting('{COUNTED_IN_TRANSACTION}', true), ''), '0')::bigint;
BEGIN
    PERFORM set_config('{COUNTED_IN_TRANSACTION}', (counted + 1)::text, true);
    INSERT INTO {TABLE} AS c (app_id, status, shard, total)
    VALUES (NEW.app_id, NEW.status,
            pg_backend_pid() % {SHARDS} + {SHARDS} * (counted / {UPDATES_PER_ROW}), 1)
    ON CONFLICT (app_id, status, shard) DO UPDATE SET total = c.total + 1;
    RETURN NULL;
END
$$"""

_COUNTED = "NEW.status IN (" + ", ".join(f"'{status}'" for status in COUNTED_STATUSES) + ")"
CREATE_TRIGGER = f"""
CREATE TRIGGER {COUNT} AFTER INSERT ON {HISTORY}
FOR EACH ROW WHEN ({_COUNTED}) EXECUTE FUNCTION {COUNT}()"""


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("app_id", sa.Text(), nullable=False, comment="pynenc application id."),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="Status counted: success, failed, concurrency_controlled_final, retry, "
            "pending_recovery or running_recovery.",
        ),
        sa.Column(
            "shard",
            sa.BigInteger(),
            nullable=False,
            comment="Which row of the total: the writer's server pid modulo 16, plus 16 "
            "per 64 counted rows already inserted by its transaction. Sum the shards.",
        ),
        sa.Column(
            "total",
            sa.BigInteger(),
            nullable=False,
            comment="History rows of this app and status inserted since the counter was "
            "installed (revision 0009); retention never lowers it.",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "status", "shard", name=op.f("pk_pynenc_history_counter")
        ),
        comment="Running totals of history rows per app and status, kept by a trigger on "
        "pynenc_invocation_history; deleting history never lowers them.",
        postgresql_with={
            # Every increment updates one of a few rows: leave room on the page for the
            # new versions (HOT updates), and vacuum them away early.
            "fillfactor": "50",
            "autovacuum_vacuum_scale_factor": "0",
            "autovacuum_vacuum_threshold": "1000",
            "autovacuum_vacuum_cost_delay": "0",
        },
    )
    op.execute(CREATE_FUNCTION)
    op.execute(CREATE_TRIGGER)


def downgrade() -> None:
    op.execute(f"DROP TRIGGER {COUNT} ON {HISTORY}")
    op.execute(f"DROP FUNCTION {COUNT}()")
    op.drop_table(TABLE)
