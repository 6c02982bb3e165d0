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
"""

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Identity,
    LargeBinary,
    MetaData,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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
        {"comment": "Every pynenc invocation: the task called and its serialized arguments."},
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


class InvocationHistory(Base):
    """Append-only status changes; the audit trail of every invocation."""

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
        {"comment": "Append-only status history. The natural key makes a resent insert a no-op."},
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


class InvocationResult(Base):
    """Serialized return value of each successful invocation."""

    __tablename__ = tables.INVOCATION_RESULT
    __table_args__ = (
        {"comment": "Result of each invocation that returned, as pynenc serialized it."},
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
            )
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
        server_default=func.now(), comment="When the value was first stored (server clock, UTC)."
    )


VERSION_TABLE = tables.VERSION_TABLE

"""Views created by migration 0002; not modelled, so autogenerate must skip them."""

# The state backend's tables, for code that walks them all (purges, audits, size reports).
STATE_TABLES: tuple[str, ...] = (
    tables.INVOCATION,
    tables.INVOCATION_HISTORY,
    tables.INVOCATION_RESULT,
    tables.INVOCATION_EXCEPTION,
    tables.RUNNER_CONTEXT,
    tables.APP_INFO,
    tables.WORKFLOW_RUN,
    tables.WORKFLOW_DATA,
    tables.WORKFLOW_SUB_INVOCATION,
)

# Every table of the schema: the state backend's, the broker's and the client data store's.
ALL_TABLES: tuple[str, ...] = tuple(Base.metadata.tables)
