"""History write order: a tiebreaker for status changes recorded in the same microsecond.

``recorded_at`` comes from pynenc's clock at microsecond precision, and two status
changes of one invocation can share it. Ordered by status name, ``pending`` came
before ``registered``, so the views and retention took the wrong row as current.
``write_order`` numbers the rows as the server inserts them, and every reader orders
by ``(recorded_at, write_order, status)``.

No step rewrites the history table, which is the largest one:

* the column is added with the constant default 0 and NOT NULL, which Postgres (11+)
  records in the catalog without touching existing rows; they keep 0 and fall back to
  the old order among themselves, and sort before any row written after the upgrade;
* the default is then dropped and the column becomes a ``BY DEFAULT`` identity, so only
  new rows draw a number. An identity, unlike a sequence default, needs no privilege on
  its sequence: a role that may insert history rows still may.

No index is added, so the migration holds the ``ALTER TABLE`` lock only for catalog
changes. Readers of one invocation's rows find them through the primary key
``(app_id, invocation_id, recorded_at, status)`` and sort those few rows by
``(recorded_at, write_order, status)``; an index with ``write_order`` in it would save
that small sort at the price of one more index to maintain on every history insert.

The views are replaced in place (``CREATE OR REPLACE VIEW``): their columns do not
change, so grants on them and views that auditors built on top of them survive.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "pynenc_invocation_history"
COLUMN_COMMENT = (
    "Order in which the server inserted the rows (an identity): breaks ties between rows "
    "of one invocation with the same recorded_at. 0 for rows written before revision 0005."
)

STATUS_VIEW = """
CREATE OR REPLACE VIEW pynenc_invocation_status AS
SELECT i.app_id,
       i.invocation_id,
       i.task_id,
       cur.status,
       cur.status IN ('success', 'failed', 'concurrency_controlled_final') AS is_final,
       first_row.recorded_at AS registered_at,
       cur.recorded_at AS status_changed_at,
       cur.runner_id,
       cur.status_owner_id AS owner_runner_id,
       EXISTS (
           SELECT 1 FROM pynenc_invocation_result r
           WHERE r.app_id = i.app_id AND r.invocation_id = i.invocation_id
       ) AS has_result,
       e.error_name AS exception_name,
       i.parent_invocation_id,
       i.workflow_id
FROM pynenc_invocation i
LEFT JOIN LATERAL (
    SELECT h.status, h.recorded_at, h.runner_id, h.status_owner_id
    FROM pynenc_invocation_history h
    WHERE h.app_id = i.app_id AND h.invocation_id = i.invocation_id
    ORDER BY h.recorded_at DESC, h.write_order DESC, h.status DESC
    LIMIT 1
) cur ON true
LEFT JOIN LATERAL (
    SELECT h.recorded_at
    FROM pynenc_invocation_history h
    WHERE h.app_id = i.app_id AND h.invocation_id = i.invocation_id
    ORDER BY h.recorded_at, h.write_order, h.status
    LIMIT 1
) first_row ON true
LEFT JOIN pynenc_invocation_exception e
    ON e.app_id = i.app_id AND e.invocation_id = i.invocation_id
"""

TIMELINE_VIEW = """
CREATE OR REPLACE VIEW pynenc_invocation_timeline AS
SELECT h.app_id,
       h.invocation_id,
       i.task_id,
       row_number() OVER w AS step,
       h.status,
       h.recorded_at,
       lag(h.status) OVER w AS previous_status,
       h.recorded_at - lag(h.recorded_at) OVER w AS since_previous,
       h.recorded_at - first_value(h.recorded_at) OVER w AS since_first,
       h.status_owner_id AS owner_runner_id,
       h.runner_id,
       c.runner_cls,
       c.hostname,
       c.pid,
       h.registered_by_invocation_id
FROM pynenc_invocation_history h
LEFT JOIN pynenc_invocation i
    ON i.app_id = h.app_id AND i.invocation_id = h.invocation_id
LEFT JOIN pynenc_runner_context c
    ON c.app_id = h.app_id AND c.runner_id = h.runner_id
WINDOW w AS (PARTITION BY h.app_id, h.invocation_id
             ORDER BY h.recorded_at, h.write_order, h.status)
"""

# The views as revision 0002 created them, restored by the downgrade.
STATUS_VIEW_0002 = """
CREATE OR REPLACE VIEW pynenc_invocation_status AS
SELECT i.app_id,
       i.invocation_id,
       i.task_id,
       cur.status,
       cur.status IN ('success', 'failed', 'concurrency_controlled_final') AS is_final,
       first_row.recorded_at AS registered_at,
       cur.recorded_at AS status_changed_at,
       cur.runner_id,
       cur.status_owner_id AS owner_runner_id,
       EXISTS (
           SELECT 1 FROM pynenc_invocation_result r
           WHERE r.app_id = i.app_id AND r.invocation_id = i.invocation_id
       ) AS has_result,
       e.error_name AS exception_name,
       i.parent_invocation_id,
       i.workflow_id
FROM pynenc_invocation i
LEFT JOIN LATERAL (
    SELECT h.status, h.recorded_at, h.runner_id, h.status_owner_id
    FROM pynenc_invocation_history h
    WHERE h.app_id = i.app_id AND h.invocation_id = i.invocation_id
    ORDER BY h.recorded_at DESC, h.status DESC
    LIMIT 1
) cur ON true
LEFT JOIN LATERAL (
    SELECT h.recorded_at
    FROM pynenc_invocation_history h
    WHERE h.app_id = i.app_id AND h.invocation_id = i.invocation_id
    ORDER BY h.recorded_at, h.status
    LIMIT 1
) first_row ON true
LEFT JOIN pynenc_invocation_exception e
    ON e.app_id = i.app_id AND e.invocation_id = i.invocation_id
"""

TIMELINE_VIEW_0002 = """
CREATE OR REPLACE VIEW pynenc_invocation_timeline AS
SELECT h.app_id,
       h.invocation_id,
       i.task_id,
       row_number() OVER w AS step,
       h.status,
       h.recorded_at,
       lag(h.status) OVER w AS previous_status,
       h.recorded_at - lag(h.recorded_at) OVER w AS since_previous,
       h.recorded_at - first_value(h.recorded_at) OVER w AS since_first,
       h.status_owner_id AS owner_runner_id,
       h.runner_id,
       c.runner_cls,
       c.hostname,
       c.pid,
       h.registered_by_invocation_id
FROM pynenc_invocation_history h
LEFT JOIN pynenc_invocation i
    ON i.app_id = h.app_id AND i.invocation_id = h.invocation_id
LEFT JOIN pynenc_runner_context c
    ON c.app_id = h.app_id AND c.runner_id = h.runner_id
WINDOW w AS (PARTITION BY h.app_id, h.invocation_id ORDER BY h.recorded_at, h.status)
"""

# (view, column or None for the view itself) -> (comment from 0005, comment of 0002).
# Replacing a view keeps its comments; only these change.
COMMENTS: dict[tuple[str, str | None], tuple[str, str]] = {
    ("pynenc_invocation_status", None): (
        "Current status of each invocation: its latest history row (latest recorded_at, "
        "then last written), one index probe each. Filter on app_id (and invocation_id "
        "or task_id) to stay index-backed.",
        "Current status of each invocation: its latest history row, one index probe each. "
        "Filter on app_id (and invocation_id or task_id) to stay index-backed.",
    ),
    ("pynenc_invocation_timeline", None): (
        "Every status change of every invocation, numbered in the order recorded (changes "
        "recorded in the same microsecond in the order written), with the time since the "
        "previous change and since the first. Filter on app_id and invocation_id.",
        "Every status change of every invocation, numbered, with the time since the "
        "previous change and since the first. Filter on app_id and invocation_id.",
    ),
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _comment(view: str, column: str | None, text: str) -> None:
    target = f"VIEW {view}" if column is None else f"COLUMN {view}.{column}"
    op.execute(f"COMMENT ON {target} IS {_literal(text)}")


def upgrade() -> None:
    op.execute(f"ALTER TABLE {TABLE} ADD COLUMN write_order BIGINT DEFAULT 0 NOT NULL")
    op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN write_order DROP DEFAULT")
    op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN write_order ADD GENERATED BY DEFAULT AS IDENTITY")
    op.execute(f"COMMENT ON COLUMN {TABLE}.write_order IS {_literal(COLUMN_COMMENT)}")
    op.execute(STATUS_VIEW)
    op.execute(TIMELINE_VIEW)
    for (view, column), (comment, _before) in COMMENTS.items():
        _comment(view, column, comment)


def downgrade() -> None:
    # The views stop depending on write_order before the column goes.
    op.execute(STATUS_VIEW_0002)
    op.execute(TIMELINE_VIEW_0002)
    for (view, column), (_after, comment) in COMMENTS.items():
        _comment(view, column, comment)
    # Dropping the column drops its identity sequence.
    op.drop_column(TABLE, "write_order")
