"""Typed declarative models: the schema's source of truth.

Alembic's autogenerate compares these models with a migrated database, and
``alembic check`` must find no difference. The runtime never creates tables from
them; every DDL statement lives in a migration.

Rules every table follows:

* one set of tables shared by all apps; every row carries ``app_id`` and every
  primary key starts with it, so one app's rows are one index range;
* ``TEXT`` instead of ``VARCHAR(n)``, ``timestamptz`` in UTC with microseconds;
* serialized payloads are ``TEXT`` exactly as pynenc produced them (not JSONB:
  JSONB rejects ``\\u0000`` and reorders keys);
* the columns an auditor filters on are real, indexed columns;
* no foreign keys from history to invocations: pynenc may write a history row
  before the invocation row exists.

The relationships at the end of each class are for reading (the audit API,
:mod:`pynenc_postgres.models`): every one is ``viewonly`` and joins on ``app_id`` and an
id column marked with ``foreign()``, so they add no constraint to the schema.
"""

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Double,
    Identity,
    LargeBinary,
    MetaData,
    Text,
    and_,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    QueryableAttribute,
    foreign,
    mapped_column,
    relationship,
    remote,
)
from sqlalchemy.schema import Index

from pynenc_postgres.db import tables

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so every constraint has a stable name."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        str: Text(),
        datetime: Timestamp,
        int: BigInteger(),
        bool: Boolean(),
    }


def _created_at() -> Mapped[datetime]:
    return mapped_column(
        server_default=func.now(), comment="When the row was first written (server clock, UTC)."
    )


def history_write_order() -> list[QueryableAttribute[Any]]:
    """The order in which an invocation's history rows were written, for ``order_by``.

    ``Invocation.history`` uses it, and audit queries can too:
    ``select(InvocationHistory).order_by(*history_write_order())``. pynenc's
    ``recorded_at`` comes first; rows that share it to the microsecond are ordered by
    ``write_order``, the order the server inserted them in (rows written before
    revision 0005 share 0 and fall back to the status name).
    """
    return [
        InvocationHistory.recorded_at,
        InvocationHistory.write_order,
        InvocationHistory.status,
    ]


def _rows_of_invocation(
    table: type["InvocationHistory | InvocationResult | InvocationException"],
) -> ColumnElement[bool]:
    """Join of an invocation with its rows in ``table``, by app and invocation id, no FK."""
    return and_(
        foreign(table.app_id) == Invocation.app_id,
        foreign(table.invocation_id) == Invocation.invocation_id,
    )


RETAINED_STORAGE_PARAMETERS = {
    # Rows are inserted once and leave only by retention, which removes the oldest part
    # of what is kept (a day of 14 is 7 %). Vacuum after 2 % of the rows are dead rather
    # than the default 20 %, so that the space retention frees is reused by the next
    # rows instead of the table growing until a vacuum comes (migration 0011).
    "autovacuum_vacuum_scale_factor": "0.02",
}
"""Storage parameters of the invocation, history, result and client-data tables."""


class Invocation(Base):
    """One row per invocation: its call, its place in the workflow and family tree."""

    __tablename__ = tables.INVOCATION
    __table_args__ = (
        Index("ix_pynenc_invocation_app_id_task_id", "app_id", "task_id"),
        Index(
            "ix_pynenc_invocation_app_id_parent_invocation_id",
            "app_id",
            "parent_invocation_id",
            postgresql_where=text("parent_invocation_id IS NOT NULL"),
        ),
        Index(
            "ix_pynenc_invocation_app_id_parent_event_id",
            "app_id",
            "parent_event_id",
            postgresql_where=text("parent_event_id IS NOT NULL"),
        ),
        Index("ix_pynenc_invocation_app_id_workflow_id", "app_id", "workflow_id"),
        Index("ix_pynenc_invocation_app_id_workflow_type_key", "app_id", "workflow_type_key"),
        {
            "comment": "Every pynenc invocation: the task called and its serialized arguments.",
            "postgresql_with": RETAINED_STORAGE_PARAMETERS,
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    invocation_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc invocation id.")
    task_id: Mapped[str] = mapped_column(comment="Task key, module.function.")
    call_id: Mapped[str] = mapped_column(comment="Call key: task key plus the arguments id.")
    arguments_id: Mapped[str] = mapped_column(comment="Hash identifying the call's arguments.")
    serialized_arguments: Mapped[str] = mapped_column(
        comment="JSON object of argument name to value, each as serialized by pynenc."
    )
    parent_invocation_id: Mapped[str | None] = mapped_column(
        comment="Invocation that called this one, if any."
    )
    parent_event_id: Mapped[str | None] = mapped_column(
        comment="Trigger event whose firing created this invocation, if any."
    )
    workflow_id: Mapped[str | None] = mapped_column(
        comment="Invocation id of the workflow this invocation belongs to."
    )
    workflow_type_key: Mapped[str | None] = mapped_column(
        comment="Task key of the workflow's defining task."
    )
    parent_workflow_id: Mapped[str | None] = mapped_column(
        comment="Workflow that started this invocation's workflow, if nested."
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the row was last upserted (server clock, UTC)."
    )

    history: Mapped[list["InvocationHistory"]] = relationship(
        primaryjoin=lambda: _rows_of_invocation(InvocationHistory),
        order_by=lambda: history_write_order(),
        viewonly=True,
    )
    """Status changes of this invocation, in the order they were written."""
    result: Mapped["InvocationResult | None"] = relationship(
        primaryjoin=lambda: _rows_of_invocation(InvocationResult), viewonly=True
    )
    """Its serialized return value, if it returned."""
    exception: Mapped["InvocationException | None"] = relationship(
        primaryjoin=lambda: _rows_of_invocation(InvocationException), viewonly=True
    )
    """The exception it raised, if it failed."""
    parent: Mapped["Invocation | None"] = relationship(
        primaryjoin=lambda: and_(
            remote(Invocation.app_id) == Invocation.app_id,
            remote(Invocation.invocation_id) == foreign(Invocation.parent_invocation_id),
        ),
        viewonly=True,
    )
    """The invocation that called this one, if any (and if its row is still there)."""
    children: Mapped[list["Invocation"]] = relationship(
        primaryjoin=lambda: and_(
            remote(Invocation.app_id) == Invocation.app_id,
            foreign(remote(Invocation.parent_invocation_id)) == Invocation.invocation_id,
        ),
        order_by=lambda: (Invocation.created_at, Invocation.invocation_id),
        viewonly=True,
    )
    """Invocations this one called, oldest row first."""
    workflow: Mapped["WorkflowRun | None"] = relationship(
        primaryjoin=lambda: and_(
            foreign(Invocation.app_id) == WorkflowRun.app_id,
            foreign(Invocation.workflow_id) == WorkflowRun.workflow_id,
        ),
        viewonly=True,
    )
    """The workflow run this invocation belongs to (its own, for a workflow's invocation)."""


class InvocationHistory(Base):
    """Append-only status changes; the audit trail of every invocation.

    Rows of one invocation are ordered by ``(recorded_at, write_order, status)``:
    ``recorded_at`` is pynenc's clock, which two changes can share to the microsecond,
    and ``write_order`` then keeps the order they were written in. No index holds that
    order: readers reach an invocation's few rows through the primary key and sort them,
    which is cheaper than maintaining one more index on every insert.
    """

    __tablename__ = tables.INVOCATION_HISTORY
    __table_args__ = (
        Index(
            "ix_pynenc_invocation_history_app_id_recorded_at",
            "app_id",
            "recorded_at",
            "invocation_id",
            "status",
        ),
        Index("ix_pynenc_invocation_history_app_id_runner_id", "app_id", "runner_id"),
        {
            "comment": (
                "Append-only status history. The natural key makes a resent insert a no-op."
            ),
            "postgresql_with": RETAINED_STORAGE_PARAMETERS,
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    invocation_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Invocation the change belongs to."
    )
    recorded_at: Mapped[datetime] = mapped_column(
        primary_key=True,
        comment="When pynenc recorded the change (client clock, UTC, microseconds).",
    )
    status: Mapped[str] = mapped_column(
        primary_key=True,
        comment="Status value as pynenc writes it: registered, running, success, failed, ...",
    )
    status_owner_id: Mapped[str | None] = mapped_column(
        comment="Runner that owns the invocation in this status, if any."
    )
    status_set_at: Mapped[datetime] = mapped_column(
        comment="Timestamp carried by pynenc's status record."
    )
    runner_id: Mapped[str] = mapped_column(
        comment="Runner context that wrote the change (see pynenc_runner_context)."
    )
    registered_by_invocation_id: Mapped[str | None] = mapped_column(
        comment="For REGISTERED rows: the parent invocation that registered it."
    )
    write_order: Mapped[int] = mapped_column(
        Identity(always=False),
        comment=(
            "Order in which the server inserted the rows (an identity): breaks ties between "
            "rows of one invocation with the same recorded_at. 0 for rows written before "
            "revision 0005."
        ),
    )

    invocation: Mapped[Invocation | None] = relationship(
        primaryjoin=lambda: _rows_of_invocation(InvocationHistory), viewonly=True
    )
    """The invocation the change belongs to (None while its row is not written yet)."""
    runner_context: Mapped["RunnerContext | None"] = relationship(
        primaryjoin=lambda: and_(
            foreign(InvocationHistory.app_id) == RunnerContext.app_id,
            foreign(InvocationHistory.runner_id) == RunnerContext.runner_id,
        ),
        viewonly=True,
    )
    """The runner context that wrote the change; ``.parent`` leads to its enclosing runner."""


class InvocationResult(Base):
    """Serialized return value of each successful invocation."""

    __tablename__ = tables.INVOCATION_RESULT
    __table_args__ = (
        {
            "comment": "Result of each invocation that returned, as pynenc serialized it.",
            "postgresql_with": RETAINED_STORAGE_PARAMETERS,
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    invocation_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Invocation that returned."
    )
    serialized_result: Mapped[str] = mapped_column(comment="Return value, as serialized by pynenc.")
    stored_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the result was stored (server clock, UTC)."
    )


class InvocationException(Base):
    """Exception raised by each failed invocation."""

    __tablename__ = tables.INVOCATION_EXCEPTION
    __table_args__ = (
        Index("ix_pynenc_invocation_exception_app_id_error_name", "app_id", "error_name"),
        {"comment": "Exception raised by each invocation that failed, as pynenc serialized it."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    invocation_id: Mapped[str] = mapped_column(primary_key=True, comment="Invocation that raised.")
    error_name: Mapped[str] = mapped_column(comment="Exception class name, e.g. ValueError.")
    is_pynenc_error: Mapped[bool] = mapped_column(
        comment="True when the exception is one of pynenc's own errors."
    )
    serialized_exception: Mapped[str] = mapped_column(
        comment="pynenc's JSON document: error_name, pynenc_error, error_data."
    )
    stored_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the exception was stored (server clock, UTC)."
    )


class RunnerContext(Base):
    """Runners, worker processes and threads that wrote history."""

    __tablename__ = tables.RUNNER_CONTEXT
    __table_args__ = (
        {"comment": "Execution contexts (runner, process, thread) that wrote history rows."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    runner_id: Mapped[str] = mapped_column(primary_key=True, comment="Unique id of this context.")
    runner_cls: Mapped[str] = mapped_column(comment="Runner class name, e.g. ProcessRunner.")
    parent_runner_id: Mapped[str | None] = mapped_column(
        comment="Enclosing context (e.g. the runner of a worker process), if any."
    )
    # BIGINT: a Windows process id is an unsigned 32-bit number.
    pid: Mapped[int] = mapped_column(comment="Operating-system process id.")
    hostname: Mapped[str] = mapped_column(comment="Host the context ran on.")
    thread_id: Mapped[int] = mapped_column(comment="Python thread identifier.")
    created_at: Mapped[datetime] = _created_at()

    parent: Mapped["RunnerContext | None"] = relationship(
        primaryjoin=lambda: and_(
            remote(RunnerContext.app_id) == RunnerContext.app_id,
            remote(RunnerContext.runner_id) == foreign(RunnerContext.parent_runner_id),
        ),
        viewonly=True,
    )
    """The enclosing context (a worker's runner, that runner's own parent...), if any."""


class AppInfo(Base):
    """Apps registered in this database, for discovery by monitors and the CLI."""

    __tablename__ = tables.APP_INFO
    __table_args__ = (
        {"comment": "One row per pynenc app, for discovery. Never holds a database password."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    module: Mapped[str] = mapped_column(comment="Python module that defines the app.")
    app_info_json: Mapped[str] = mapped_column(
        comment="pynenc AppInfo as JSON, with the database password removed."
    )
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the app last registered (server clock, UTC)."
    )


class WorkflowRun(Base):
    """Workflow runs, by workflow type."""

    __tablename__ = tables.WORKFLOW_RUN
    __table_args__ = (
        Index("ix_pynenc_workflow_run_app_id_workflow_type_key", "app_id", "workflow_type_key"),
        {"comment": "Each run of a workflow, with its type and parent workflow."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    workflow_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Invocation id of the workflow's defining invocation."
    )
    workflow_type_key: Mapped[str] = mapped_column(
        comment="Task key of the workflow's defining task."
    )
    parent_workflow_id: Mapped[str | None] = mapped_column(comment="Enclosing workflow, if nested.")
    created_at: Mapped[datetime] = _created_at()

    invocation: Mapped[Invocation | None] = relationship(
        primaryjoin=lambda: and_(
            foreign(WorkflowRun.app_id) == Invocation.app_id,
            foreign(WorkflowRun.workflow_id) == Invocation.invocation_id,
        ),
        viewonly=True,
    )
    """The workflow's defining invocation."""
    sub_invocations: Mapped[list[Invocation]] = relationship(
        secondary=lambda: WorkflowSubInvocation.__table__,
        primaryjoin=lambda: and_(
            foreign(WorkflowSubInvocation.app_id) == WorkflowRun.app_id,
            foreign(WorkflowSubInvocation.workflow_id) == WorkflowRun.workflow_id,
        ),
        secondaryjoin=lambda: and_(
            foreign(WorkflowSubInvocation.app_id) == Invocation.app_id,
            foreign(WorkflowSubInvocation.sub_invocation_id) == Invocation.invocation_id,
        ),
        order_by=lambda: (Invocation.created_at, Invocation.invocation_id),
        viewonly=True,
    )
    """Invocations (tasks and sub-workflows) run inside this workflow, oldest row first."""
    data: Mapped[list["WorkflowData"]] = relationship(
        primaryjoin=lambda: and_(
            foreign(WorkflowData.app_id) == WorkflowRun.app_id,
            foreign(WorkflowData.workflow_id) == WorkflowRun.workflow_id,
        ),
        order_by=lambda: WorkflowData.data_key,
        viewonly=True,
    )
    """The key/value data the workflow kept, by key."""


class WorkflowData(Base):
    """Key-value data that a workflow run keeps between its steps."""

    __tablename__ = tables.WORKFLOW_DATA
    __table_args__ = ({"comment": "Per-workflow key/value data, values as serialized by pynenc."},)

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    workflow_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Workflow run the data belongs to."
    )
    data_key: Mapped[str] = mapped_column(primary_key=True, comment="Key chosen by the workflow.")
    serialized_value: Mapped[str] = mapped_column(comment="Value, as serialized by pynenc.")
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the value was last written (server clock, UTC)."
    )


class WorkflowSubInvocation(Base):
    """Invocations that ran inside a workflow."""

    __tablename__ = tables.WORKFLOW_SUB_INVOCATION
    __table_args__ = (
        # Retention finds an invocation's workflow membership by its own id.
        Index(
            "ix_pynenc_workflow_sub_invocation_app_id_sub_invocation_id",
            "app_id",
            "sub_invocation_id",
        ),
        {"comment": "Invocations (tasks or sub-workflows) run inside a workflow."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    workflow_id: Mapped[str] = mapped_column(primary_key=True, comment="Enclosing workflow run.")
    sub_invocation_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Invocation run inside it."
    )
    created_at: Mapped[datetime] = _created_at()


HISTORY_COUNTER_STORAGE_PARAMETERS = {
    # Every increment writes a new version of one of a few rows: leave room on the page
    # for it (a HOT update), and vacuum the old versions early.
    "fillfactor": "50",
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_cost_delay": "0",
}
"""Per-table settings of ``pynenc_history_counter``."""


class HistoryCounter(Base):
    """Totals of history rows per app and status, for counters that retention never lowers.

    A trigger on ``pynenc_invocation_history`` (migration 0007) adds 1 for every row
    inserted with a counted status: the final ones, ``retry``, ``pending_recovery`` and
    ``running_recovery``. A total is spread over rows (``shard``: concurrent writers,
    and every 64 rows of a transaction that inserts many); sum them::

        select(HistoryCounter.status, func.sum(HistoryCounter.total))
        .where(HistoryCounter.app_id == app_id).group_by(HistoryCounter.status)
    """

    __tablename__ = tables.HISTORY_COUNTER
    __table_args__ = (
        {
            "comment": "Running totals of history rows per app and status, kept by a "
            "trigger on pynenc_invocation_history; deleting history never lowers them.",
            "postgresql_with": HISTORY_COUNTER_STORAGE_PARAMETERS,
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    status: Mapped[str] = mapped_column(
        primary_key=True,
        comment="Status counted: success, failed, concurrency_controlled_final, retry, "
        "pending_recovery or running_recovery.",
    )
    shard: Mapped[int] = mapped_column(
        primary_key=True,
        comment="Which row of the total: the writer's server pid modulo 16, plus 16 "
        "per 64 counted rows already inserted by its transaction. Sum the shards.",
    )
    total: Mapped[int] = mapped_column(
        comment="History rows of this app and status inserted since the counter was "
        "installed (revision 0009); retention never lowers it."
    )


QUEUE_STORAGE_PARAMETERS = {
    # Vacuum after a fixed number of dead rows, whatever the table's size: after a
    # backlog of a million rows the default (20 % of the rows) would let 200,000 dead
    # rows pile up before the next vacuum, and every claim would step over them.
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "1000",
    # A vacuum of a few pages is cheap; never make it sleep behind the cost limit.
    "autovacuum_vacuum_cost_delay": "0",
}
"""Per-table autovacuum settings of ``pynenc_broker_message`` (see docs/operations.md)."""


class BrokerMessage(Base):
    """Invocations routed to a queue and not yet taken by a runner."""

    __tablename__ = tables.BROKER_MESSAGE
    __table_args__ = (
        {
            "comment": (
                "Broker queue: one row per routed invocation, deleted when a runner takes it."
            ),
            "postgresql_with": QUEUE_STORAGE_PARAMETERS,
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    message_id: Mapped[int] = mapped_column(
        Identity(always=True),
        primary_key=True,
        comment="Routing order: within one priority, lower ids are taken first.",
    )
    queue_name: Mapped[str] = mapped_column(comment="Broker queue the invocation was routed to.")
    priority: Mapped[float] = mapped_column(
        Double(), comment="Queue priority from -100 to 100; higher is taken first."
    )
    invocation_id: Mapped[str] = mapped_column(comment="Invocation waiting to run.")
    routed_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the invocation was routed (server clock, UTC)."
    )


# The claim reads the head of one app's queue: highest priority, then routing order.
Index(
    "ix_pynenc_broker_message_app_id_queue_name_priority_message_id",
    BrokerMessage.app_id,
    BrokerMessage.queue_name,
    BrokerMessage.priority.desc(),
    BrokerMessage.message_id,
)


class ClientData(Base):
    """Large arguments and results that pynenc stores once and refers to by content hash."""

    __tablename__ = tables.CLIENT_DATA
    __table_args__ = (
        {
            "comment": (
                "pynenc client data store: serialized values too large to inline, "
                "keyed by the hash of their content."
            ),
            "postgresql_with": RETAINED_STORAGE_PARAMETERS,
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    data_key: Mapped[str] = mapped_column(
        primary_key=True,
        comment="Reference key pynenc stores in place of the value (hash of its content).",
    )
    data_value: Mapped[bytes] = mapped_column(
        LargeBinary(),
        comment="The serialized value as UTF-8 bytes (bytea, so a NUL character survives).",
    )
    stored_at: Mapped[datetime] = mapped_column(
        server_default=func.now(),
        comment="When the value was last stored (server clock, UTC): storing it again "
        "moves this forward once it is a minute old, so retention keeps a value that a "
        "new invocation is about to use.",
    )


ORCHESTRATOR_INVOCATION_STORAGE_PARAMETERS = {
    # Three status updates per task, none of them HOT (status and status_set_at are
    # indexed, so a fill factor would not help), then the retention delete. Vacuum
    # after 2 % of the rows (at least 1,000) are dead, not the default 20 %: with 14
    # million rows kept that would be 2.8 million dead rows and their index entries.
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
}
"""Storage parameters of ``pynenc_orchestrator_invocation`` (migration 0011)."""


class OrchestratorInvocation(Base):
    """The orchestrator's view of each invocation: its current status and owner.

    Status changes are compare-and-set ``UPDATE`` statements on this row, so two runners
    racing for the same invocation cannot both win. Times are the server's clock.
    """

    __tablename__ = tables.ORCHESTRATOR_INVOCATION
    __table_args__ = (
        Index(
            "ix_pynenc_orchestrator_invocation_app_id_task_id_status",
            "app_id",
            "task_id",
            "status",
        ),
        Index(
            "ix_pynenc_orchestrator_invocation_app_id_status_status_set_at",
            "app_id",
            "status",
            "status_set_at",
        ),
        Index(
            "ix_pynenc_orchestrator_invocation_app_id_registered_at",
            "app_id",
            "registered_at",
        ),
        Index("ix_pynenc_orchestrator_invocation_app_id_call_id", "app_id", "call_id"),
        Index(
            "ix_pynenc_orchestrator_invocation_app_id_purgeable_since",
            "app_id",
            "purgeable_since",
            postgresql_where=text("purgeable_since IS NOT NULL"),
        ),
        # Only invocations taken from the queue and not yet moved on are in it: the
        # search for those a dead worker left behind reads a handful of entries however
        # long the queue is (migration 0012).
        Index(
            "ix_pynenc_orchestrator_invocation_app_id_taken_at",
            "app_id",
            "taken_at",
            postgresql_where=text("taken_at IS NOT NULL"),
        ),
        {
            "comment": "Current status, owner and retry count of each invocation, as the "
            "orchestrator enforces them (server clock).",
            "postgresql_with": ORCHESTRATOR_INVOCATION_STORAGE_PARAMETERS,
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    invocation_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc invocation id.")
    task_id: Mapped[str] = mapped_column(comment="Task key, module.function.")
    call_id: Mapped[str] = mapped_column(comment="Call key: task key plus the arguments id.")
    status: Mapped[str] = mapped_column(
        comment="Current status: registered, pending, running, success, failed, ..."
    )
    status_owner_id: Mapped[str | None] = mapped_column(
        comment="Runner that owns the invocation in its current status, if any."
    )
    status_set_at: Mapped[datetime] = mapped_column(
        comment="When the current status was set (server clock, UTC)."
    )
    status_change_id: Mapped[str | None] = mapped_column(
        comment="Id of the status change that set the current status; a change resent "
        "after a lost reply recognises itself by it. NULL after registration."
    )
    retries: Mapped[int] = mapped_column(
        server_default=text("0"), comment="Times the invocation was retried."
    )
    registered_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the invocation was registered (server clock)."
    )
    purgeable_since: Mapped[datetime | None] = mapped_column(
        comment="When the invocation reached a final status and became subject to "
        "auto_final_invocation_purge_hours (server clock); NULL before."
    )
    retries_change_id: Mapped[str | None] = mapped_column(
        comment="Id of the last retry increment; a resent increment recognises itself "
        "by it and counts once. NULL before the first."
    )
    taken_at: Mapped[datetime | None] = mapped_column(
        comment="When a worker took the invocation from the queue without moving it on in "
        "the same statement (server clock); NULL again at its next status change. Set "
        "for long only if that worker stopped in between."
    )


class OrchestratorArgument(Base):
    """Serialized arguments of invocations whose task uses concurrency control."""

    __tablename__ = tables.ORCHESTRATOR_ARGUMENT
    __table_args__ = (
        # The digest keeps index entries small whatever the size of a serialized value.
        Index(
            "ix_pynenc_orchestrator_argument_app_id_argument_name_value_md5",
            "app_id",
            "argument_name",
            "value_md5",
        ),
        {
            "comment": "Arguments of invocations of tasks with registration or running "
            "concurrency control, to find invocations with the same (key) arguments."
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    invocation_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc invocation id.")
    argument_name: Mapped[str] = mapped_column(primary_key=True, comment="Argument name.")
    serialized_value: Mapped[str] = mapped_column(comment="Value, as serialized by pynenc.")
    value_md5: Mapped[str] = mapped_column(
        comment="md5 of serialized_value (hex), the indexed form of the value."
    )


class OrchestratorWaiting(Base):
    """Blocking control: which invocation waits for the result of which."""

    __tablename__ = tables.ORCHESTRATOR_WAITING
    __table_args__ = (
        Index(
            "ix_pynenc_orchestrator_waiting_app_id_waited_invocation_id",
            "app_id",
            "waited_invocation_id",
        ),
        {
            "comment": "Blocking control: an invocation waiting for the results of others. "
            "Rows go when the waited invocation finishes."
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    waiter_invocation_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Invocation that waits."
    )
    waited_invocation_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Invocation whose result it waits for."
    )
    created_at: Mapped[datetime] = _created_at()


HEARTBEAT_STORAGE_PARAMETERS = {
    # Half of each page is left free, so a heartbeat's new row version fits on its page:
    # with no index on the columns a heartbeat changes, the update is HOT (no index entry
    # written, the old version pruned on the page without waiting for VACUUM).
    "fillfactor": "50",
}
"""Storage parameters of ``pynenc_runner_heartbeat`` (see docs/operations.md)."""


class RunnerHeartbeat(Base):
    """Runners and their latest heartbeat, as the server's clock measured it.

    No index covers a column that a heartbeat changes, so heartbeat updates are HOT.
    """

    __tablename__ = tables.RUNNER_HEARTBEAT
    __table_args__ = (
        {
            "comment": "One row per runner (and worker) of an app with its latest heartbeat. "
            "A runner is dead once now() - last_heartbeat_at exceeds "
            "runner_considered_dead_after_minutes.",
            "postgresql_with": HEARTBEAT_STORAGE_PARAMETERS,
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    runner_id: Mapped[str] = mapped_column(primary_key=True, comment="Runner context id.")
    can_run_atomic_service: Mapped[bool] = mapped_column(
        comment="True when the runner may hold the atomic service (triggers, recovery)."
    )
    consumed_queues: Mapped[list[str]] = mapped_column(
        ARRAY(Text()),
        server_default=text("'{}'"),
        comment="Broker queues the runner consumes; empty when not reported.",
    )
    first_heartbeat_at: Mapped[datetime] = mapped_column(
        server_default=func.now(),
        comment="First heartbeat (server clock); orders runners for atomic-service slots.",
    )
    last_heartbeat_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="Latest heartbeat (server clock, UTC)."
    )


class AtomicServiceExecution(Base):
    """Every attempt to run the atomic service, and who holds it now."""

    __tablename__ = tables.ATOMIC_SERVICE_EXECUTION
    __table_args__ = (
        # The cluster-wide slot: at most one RUNNING execution per app.
        Index(
            "uq_pynenc_atomic_service_execution_app_id_running",
            "app_id",
            unique=True,
            postgresql_where=text("status = 'running'"),
        ),
        Index(
            "ix_pynenc_atomic_service_execution_app_id_start_time",
            "app_id",
            "start_time",
        ),
        {
            "comment": "Atomic-service executions (trigger processing and recovery). At most "
            "one per app is running; a dead holder's run is abandoned and the slot taken."
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    atomic_service_run_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Id of this execution attempt."
    )
    runner_id: Mapped[str] = mapped_column(comment="Runner that made the attempt.")
    status: Mapped[str] = mapped_column(comment="running, completed, abandoned or blocked.")
    reason: Mapped[str] = mapped_column(
        server_default=text("''"),
        comment="Why it was blocked or abandoned (e.g. prior_running:..., holder dead).",
    )
    start_time: Mapped[datetime] = mapped_column(
        comment="Start as reported by the runner, or the server clock when not reported."
    )
    end_time: Mapped[datetime | None] = mapped_column(
        comment="End as reported by the runner (server clock when abandoned); NULL while running."
    )
    recorded_at: Mapped[datetime] = mapped_column(
        server_default=func.now(),
        comment="When the attempt was written (server clock); a new holder is never "
        "considered dead before runner_considered_dead_after_minutes from here.",
    )


class TriggerCondition(Base):
    """Conditions that triggers wait for: cron schedules, events, task statuses, results."""

    __tablename__ = tables.TRIGGER_CONDITION
    __table_args__ = (
        {"comment": "Trigger conditions registered by the app's tasks, as pynenc serialized them."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    condition_id: Mapped[str] = mapped_column(
        primary_key=True, comment="pynenc condition id (a hash of the condition's definition)."
    )
    condition_type: Mapped[str] = mapped_column(
        comment="Condition class, e.g. CronCondition, EventCondition, StatusCondition."
    )
    condition_json: Mapped[str] = mapped_column(comment="The condition, as serialized by pynenc.")
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(),
        comment="When the condition was last registered (server clock, UTC).",
    )


class TriggerSourceTaskCondition(Base):
    """Which conditions watch which task: looked up on every status, result and failure."""

    __tablename__ = tables.TRIGGER_SOURCE_TASK_CONDITION
    __table_args__ = (
        {"comment": "Conditions that watch a task's statuses, results or exceptions."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    task_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Key of the watched task, module.function."
    )
    condition_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Condition watching it (see pynenc_trigger_condition)."
    )
    created_at: Mapped[datetime] = _created_at()


class TriggerDefinition(Base):
    """Triggers: a task to call when its conditions are met."""

    __tablename__ = tables.TRIGGER_DEFINITION
    __table_args__ = (
        Index("ix_pynenc_trigger_definition_app_id_task_id", "app_id", "task_id"),
        {"comment": "Each trigger: the task it calls, how its conditions combine, its arguments."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    trigger_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc trigger id.")
    task_id: Mapped[str] = mapped_column(comment="Key of the task the trigger calls.")
    logic: Mapped[str] = mapped_column(
        comment="How the conditions combine: and (all of them) or or (any of them)."
    )
    argument_provider_json: Mapped[str | None] = mapped_column(
        comment="pynenc's serialized provider of the call's arguments, if any."
    )
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(),
        comment="When the trigger was last registered (server clock, UTC).",
    )


class TriggerDefinitionCondition(Base):
    """The conditions of each trigger, keyed for the lookup by condition."""

    __tablename__ = tables.TRIGGER_DEFINITION_CONDITION
    __table_args__ = (
        Index(
            "ix_pynenc_trigger_definition_condition_app_id_trigger_id",
            "app_id",
            "trigger_id",
            "position",
        ),
        {"comment": "Conditions of each trigger, in the order the trigger lists them."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    condition_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Condition (see pynenc_trigger_condition)."
    )
    trigger_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Trigger that waits for it (see pynenc_trigger_definition)."
    )
    position: Mapped[int] = mapped_column(
        comment="Place of the condition in the trigger's list, from 1."
    )


class TriggerValidCondition(Base):
    """Satisfied conditions waiting for the trigger loop: a small, hot queue."""

    __tablename__ = tables.TRIGGER_VALID_CONDITION
    __table_args__ = (
        {
            "comment": "Conditions met and not yet consumed by the trigger loop, with the "
            "context that met them. Rows are deleted once processed."
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    valid_condition_id: Mapped[str] = mapped_column(
        primary_key=True, comment="pynenc id of this satisfied condition and context."
    )
    condition_id: Mapped[str] = mapped_column(
        comment="Condition that was met (see pynenc_trigger_condition)."
    )
    valid_condition_json: Mapped[str] = mapped_column(
        comment="Condition and context (event, status, result, cron time), as serialized by pynenc."
    )
    recorded_at: Mapped[datetime] = mapped_column(
        server_default=func.now(),
        comment="When the condition was recorded as met (server clock, UTC).",
    )


class TriggerCronExecution(Base):
    """Last tick of each cron condition, changed by compare-and-set."""

    __tablename__ = tables.TRIGGER_CRON_EXECUTION
    __table_args__ = (
        {
            "comment": "Last execution time of each cron condition. Changed by one "
            "compare-and-set statement, so only one process fires each tick."
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    condition_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Cron condition (see pynenc_trigger_condition)."
    )
    last_execution: Mapped[datetime] = mapped_column(
        comment="Tick time of the latest execution (client clock of the winner, UTC)."
    )
    claim_token: Mapped[str] = mapped_column(
        comment="Random token of the call that set last_execution; makes a resent call idempotent."
    )
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When last_execution was set (server clock, UTC)."
    )


class TriggerRunClaim(Base):
    """Who may execute each trigger run, until when."""

    __tablename__ = tables.TRIGGER_RUN_CLAIM
    __table_args__ = (
        Index("ix_pynenc_trigger_run_claim_app_id_expires_at", "app_id", "expires_at"),
        {
            "comment": "Claims on trigger runs: one process executes a run; another may take "
            "the run over once the claim has expired by the server clock."
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    trigger_run_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc trigger run id.")
    claim_token: Mapped[str] = mapped_column(
        comment="Random token of the winning call; makes a resent claim idempotent."
    )
    claimed_at: Mapped[datetime] = mapped_column(
        comment="When the claim was taken (server clock, UTC)."
    )
    expires_at: Mapped[datetime] = mapped_column(
        comment="When the claim lapses and the run may be claimed again (server clock, UTC)."
    )


class TriggerEvent(Base):
    """Events emitted to the trigger system, whether or not a condition matched them."""

    __tablename__ = tables.TRIGGER_EVENT
    __table_args__ = (
        Index("ix_pynenc_trigger_event_app_id_occurred_at", "app_id", "occurred_at"),
        Index(
            "ix_pynenc_trigger_event_app_id_event_code_occurred_at",
            "app_id",
            "event_code",
            "occurred_at",
        ),
        Index(
            "ix_pynenc_trigger_event_app_id_emitted_by_invocation_id",
            "app_id",
            "emitted_by_invocation_id",
            postgresql_where=text("emitted_by_invocation_id IS NOT NULL"),
        ),
        {"comment": "Every event emitted with emit_event, with its payload and who emitted it."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    event_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc event id.")
    event_code: Mapped[str] = mapped_column(comment="Event code chosen by the emitter.")
    occurred_at: Mapped[datetime] = mapped_column(
        comment="When the event was emitted (client clock, UTC, microseconds)."
    )
    matched_condition_count: Mapped[int] = mapped_column(
        comment="Number of event conditions the event satisfied."
    )
    emitted_by_invocation_id: Mapped[str | None] = mapped_column(
        comment="Invocation that emitted the event, if emitted inside a task."
    )
    emitted_by_task_id: Mapped[str | None] = mapped_column(
        comment="Key of that invocation's task, if any."
    )
    emitted_by_runner_context_id: Mapped[str | None] = mapped_column(
        comment="Runner context that emitted the event (see pynenc_runner_context)."
    )
    event_json: Mapped[str] = mapped_column(
        comment="pynenc's EventRecord as JSON: payload values serialized by pynenc, "
        "matched and valid condition ids."
    )
    stored_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the event was last stored (server clock, UTC)."
    )


class TriggerEventInvocation(Base):
    """Invocations that events caused, written when the trigger run executes."""

    __tablename__ = tables.TRIGGER_EVENT_INVOCATION
    __table_args__ = ({"comment": "Invocations created by trigger runs that an event fired."},)

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    event_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Event (see pynenc_trigger_event)."
    )
    invocation_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Invocation the event's trigger run created."
    )
    trigger_run_id: Mapped[str | None] = mapped_column(
        comment="Trigger run that created it (see pynenc_trigger_run), if known."
    )
    linked_at: Mapped[datetime] = mapped_column(
        comment="When the link was written (server clock, UTC)."
    )


class TriggerRun(Base):
    """Each execution of a trigger: what it called and why."""

    __tablename__ = tables.TRIGGER_RUN
    __table_args__ = (
        Index("ix_pynenc_trigger_run_app_id_executed_at", "app_id", "executed_at"),
        Index(
            "ix_pynenc_trigger_run_app_id_task_id_executed_at", "app_id", "task_id", "executed_at"
        ),
        Index(
            "ix_pynenc_trigger_run_app_id_triggered_invocation_id",
            "app_id",
            "triggered_invocation_id",
        ),
        Index(
            "ix_pynenc_trigger_run_app_id_atomic_service_run_id",
            "app_id",
            "atomic_service_run_id",
            postgresql_where=text("atomic_service_run_id IS NOT NULL"),
        ),
        {"comment": "Every trigger run: the trigger, the invocation it created, and when."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    trigger_run_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc trigger run id.")
    trigger_id: Mapped[str] = mapped_column(
        comment="Trigger that ran (see pynenc_trigger_definition)."
    )
    task_id: Mapped[str] = mapped_column(comment="Key of the task the trigger called.")
    logic: Mapped[str] = mapped_column(comment="How the trigger's conditions combine: and, or.")
    triggered_invocation_id: Mapped[str | None] = mapped_column(
        comment="Invocation the run created (see pynenc_invocation)."
    )
    atomic_service_run_id: Mapped[str | None] = mapped_column(
        comment="Atomic-service cycle of the runner that executed the run, if any."
    )
    claimed_at: Mapped[datetime | None] = mapped_column(
        comment="When the run was claimed (client clock, UTC)."
    )
    executed_at: Mapped[datetime] = mapped_column(
        comment="When the run created its invocation (client clock, UTC); the claim time, "
        "or the time of storing, when pynenc gave none."
    )
    trigger_run_json: Mapped[str] = mapped_column(
        comment="pynenc's TriggerRunRecord as JSON, participants included."
    )
    stored_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the run was last stored (server clock, UTC)."
    )


class TriggerRunParticipant(Base):
    """What satisfied each condition of a trigger run: an event, a source invocation, a tick."""

    __tablename__ = tables.TRIGGER_RUN_PARTICIPANT
    __table_args__ = (
        Index(
            "ix_pynenc_trigger_run_participant_app_id_event_id",
            "app_id",
            "event_id",
            postgresql_where=text("event_id IS NOT NULL"),
        ),
        Index(
            "ix_pynenc_trigger_run_participant_app_id_source_invocation_id",
            "app_id",
            "source_invocation_id",
            postgresql_where=text("source_invocation_id IS NOT NULL"),
        ),
        Index(
            "ix_pynenc_trigger_run_participant_app_id_valid_condition_id",
            "app_id",
            "valid_condition_id",
            postgresql_where=text("valid_condition_id IS NOT NULL"),
        ),
        {"comment": "The causes of each trigger run: one row per satisfied condition."},
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    trigger_run_id: Mapped[str] = mapped_column(
        primary_key=True, comment="Trigger run (see pynenc_trigger_run)."
    )
    position: Mapped[int] = mapped_column(
        primary_key=True, comment="Place of the participant in the run's list, from 1."
    )
    context_type: Mapped[str | None] = mapped_column(
        comment="What satisfied the condition: EventContext, StatusContext, ResultContext, "
        "ExceptionContext or CronContext."
    )
    condition_id: Mapped[str | None] = mapped_column(
        comment="Condition satisfied (see pynenc_trigger_condition)."
    )
    valid_condition_id: Mapped[str | None] = mapped_column(
        comment="pynenc id of the satisfied condition and its context."
    )
    event_id: Mapped[str | None] = mapped_column(
        comment="Event that satisfied it (see pynenc_trigger_event), if any."
    )
    source_invocation_id: Mapped[str | None] = mapped_column(
        comment="Invocation whose status, result or exception satisfied it, if any."
    )


class RetentionSchedule(Base):
    """When each app's retention is next due, claimed by one runner per interval."""

    __tablename__ = tables.RETENTION_SCHEDULE
    __table_args__ = (
        {
            "comment": "Retention schedule: one row per app. A runner claims a due run by "
            "moving due_at one interval ahead in one statement, so one runner of the "
            "cluster runs each interval's retention."
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    due_at: Mapped[datetime] = mapped_column(
        comment="When the next run is due (server clock, UTC)."
    )
    last_run_id: Mapped[str | None] = mapped_column(
        comment="The latest run claimed (see pynenc_retention_run)."
    )
    last_claimed_by: Mapped[str | None] = mapped_column(
        comment="Runner that claimed the latest run."
    )
    last_claimed_at: Mapped[datetime | None] = mapped_column(
        comment="When the latest run was claimed (server clock, UTC)."
    )


class RetentionRun(Base):
    """Every retention run, scheduled or from the command line, and what it removed."""

    __tablename__ = tables.RETENTION_RUN
    __table_args__ = (
        Index("ix_pynenc_retention_run_app_id_started_at", "app_id", "started_at"),
        {
            "comment": "One row per retention run: when, which app, the policy applied, "
            "its outcome and the rows removed per table."
        },
    )

    app_id: Mapped[str] = mapped_column(primary_key=True, comment="pynenc application id.")
    run_id: Mapped[str] = mapped_column(primary_key=True, comment="Unique id of the run.")
    kind: Mapped[str] = mapped_column(
        comment="scheduled (claimed by a runner) or command (pynenc-postgres purge, or a "
        "call of purge_invocations or auto_purge)."
    )
    runner_id: Mapped[str | None] = mapped_column(
        comment="Runner that claimed a scheduled run; NULL for a command."
    )
    policy: Mapped[str] = mapped_column(
        comment="What was in scope, e.g. 'failed=30d, success=7d' or the command's options."
    )
    started_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), comment="When the run started (server clock, UTC)."
    )
    finished_at: Mapped[datetime | None] = mapped_column(
        comment="When the run ended (server clock, UTC); NULL while running or if its process died."
    )
    outcome: Mapped[str] = mapped_column(
        comment="running, completed, blocked (some batches waited too long for a lock "
        "and were left for the next run) or failed."
    )
    invocations: Mapped[int] = mapped_column(
        server_default=text("0"), comment="Invocations removed."
    )
    batches: Mapped[int] = mapped_column(
        server_default=text("0"), comment="Batches committed (one transaction each)."
    )
    batches_blocked: Mapped[int] = mapped_column(
        server_default=text("0"),
        comment="Batches rolled back because a lock was not granted within the lock timeout.",
    )
    rows_removed: Mapped[dict[str, int]] = mapped_column(
        JSONB(),
        server_default=text("'{}'::jsonb"),
        comment="Rows removed per table, as a JSON object of table name to count.",
    )
    error: Mapped[str | None] = mapped_column(
        comment="Why the run failed or what blocked it; NULL when it completed."
    )


VERSION_TABLE = tables.VERSION_TABLE

# Each component's tables; each component's purge() empties its own for one app.
TRIGGER_TABLES: tuple[str, ...] = tables.TRIGGER_TABLES
ORCHESTRATOR_TABLES: tuple[str, ...] = tables.ORCHESTRATOR_TABLES
STATE_TABLES: tuple[str, ...] = tables.STATE_TABLES
RETENTION_TABLES: tuple[str, ...] = tables.RETENTION_TABLES

# Every table of the schema, every component's.
ALL_TABLES: tuple[str, ...] = tuple(Base.metadata.tables)
