"""History counters: running totals of finished, failed, retried and recovered invocations.

A metrics exporter must report how many invocations finished, failed or were retried as
counters that only go up, and a scrape must stay cheap however much history is kept.
Counting history rows would read one index entry per row (millions of them), and the
count would drop whenever retention deletes old history.

``pynenc_history_counter`` keeps the totals instead, added by two row-level triggers on
``pynenc_invocation_history`` whose ``WHEN`` clause selects the counted statuses (the
final ones, ``retry`` and the two recovery statuses). A ``WHEN`` clause is evaluated
without calling the trigger's function, so inserting a row of any other status (most
of them) costs nothing more.

* ``pynenc_history_counter_collect`` adds each counted row to a per-transaction tally, a
  JSON object kept in the transaction-local setting ``pynenc_postgres.history_counts``;
* ``pynenc_history_counter_flush``, a constraint trigger deferred to the commit, adds
  the tally to the totals once and empties it (its later firings in that transaction
  find it empty and return at once).

Updating a total once per row instead would make a transaction that inserts many
counted rows (an import, a seeding script) quadratic: each update of the same row in one
transaction leaves a version that the next update has to step over. With the tally, a
transaction updates each total once. A resent history row that ``ON CONFLICT DO
NOTHING`` skips is not counted, and a rolled-back one neither (its tally goes with it).
Deleting history (retention) fires nothing, so the totals survive retention;
``app.purge()`` deletes the app's totals with its rows, which a Prometheus counter reads
as a reset.

Each app and status has up to 16 rows (``shard``, the backend's pid modulo 16), so
workers finishing tasks of one app at the same moment rarely wait for the same row lock,
which is held until each commit. Readers sum the shards.

The flush function is ``SECURITY DEFINER``, owned by the role that runs this migration:
a runtime role that may insert history needs no grant on the new table for that (its
``app.purge()`` needs ``DELETE`` on it, as on every table; see the runtime role's grants
in docs/audit.md). Its ``search_path`` is the schema being migrated (``SET search_path
FROM CURRENT``), so a caller's search path cannot redirect it.

The totals start at 0 when this revision is applied: existing history is not counted,
which would lock the history table against inserts for as long as it takes to read it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "pynenc_history_counter"
HISTORY = "pynenc_invocation_history"
COLLECT = "pynenc_history_counter_collect"
FLUSH = "pynenc_history_counter_flush"
TALLY = "pynenc_postgres.history_counts"

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

# The tally's keys are "<status>:<app_id>": a status never contains ':'.
CREATE_COLLECT_FUNCTION = f"""
CREATE FUNCTION {COLLECT}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tally jsonb := coalesce(nullif(current_setting('{TALLY}', true), ''), '{{}}')::jsonb;
    key text := NEW.status || ':' || NEW.app_id;
BEGIN
    PERFORM set_config('{TALLY}',
        jsonb_set(tally, ARRAY[key], to_jsonb(coalesce((tally ->> key)::bigint, 0) + 1))::text,
        true);
    RETURN NULL;
END
$$"""

CREATE_FLUSH_FUNCTION = f"""
CREATE FUNCTION {FLUSH}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    tally text := current_setting('{TALLY}', true);
BEGIN
    IF tally IS NULL OR tally = '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('{TALLY}', '', true);
    INSERT INTO {TABLE} AS c (app_id, status, shard, total)
    SELECT substr(t.key, strpos(t.key, ':') + 1), split_part(t.key, ':', 1),
           pg_backend_pid() % {SHARDS}, t.value::bigint
    FROM jsonb_each_text(tally::jsonb) AS t
    ON CONFLICT (app_id, status, shard) DO UPDATE SET total = c.total + excluded.total;
    RETURN NULL;
END
$$"""

_COUNTED = "NEW.status IN (" + ", ".join(f"'{status}'" for status in COUNTED_STATUSES) + ")"
CREATE_COLLECT_TRIGGER = f"""
CREATE TRIGGER {COLLECT} AFTER INSERT ON {HISTORY}
FOR EACH ROW WHEN ({_COUNTED}) EXECUTE FUNCTION {COLLECT}()"""
CREATE_FLUSH_TRIGGER = f"""
CREATE CONSTRAINT TRIGGER {FLUSH} AFTER INSERT ON {HISTORY}
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW WHEN ({_COUNTED}) EXECUTE FUNCTION {FLUSH}()"""


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
            comment="Server process id of the writer modulo 16: spreads concurrent "
            "increments over 16 rows. Sum the shards.",
        ),
        sa.Column(
            "total",
            sa.BigInteger(),
            nullable=False,
            comment="History rows of this app and status inserted since the counter was "
            "installed (revision 0007); retention never lowers it.",
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
    op.execute(CREATE_COLLECT_FUNCTION)
    op.execute(CREATE_FLUSH_FUNCTION)
    op.execute(CREATE_COLLECT_TRIGGER)
    op.execute(CREATE_FLUSH_TRIGGER)


def downgrade() -> None:
    op.execute(f"DROP TRIGGER {FLUSH} ON {HISTORY}")
    op.execute(f"DROP TRIGGER {COLLECT} ON {HISTORY}")
    op.execute(f"DROP FUNCTION {FLUSH}()")
    op.execute(f"DROP FUNCTION {COLLECT}()")
    op.drop_table(TABLE)
