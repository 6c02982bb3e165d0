"""The audit API: pynenc-postgres's tables and views as typed SQLAlchemy 2 classes.

Import from here, not from ``pynenc_postgres.db``: the names below are the public,
stable API for reading pynenc's state (notebooks, scripts, admin tools). A release
may add classes, columns and relationships; removing or renaming one is a breaking
change.

Tables (one class each; every primary key starts with ``app_id``):

* :class:`Invocation`: the call of each invocation, and its place in the call tree
  and in its workflow;
* :class:`InvocationHistory`: every status change, append-only;
* :class:`InvocationResult`, :class:`InvocationException`: the outcome, as pynenc
  serialized it;
* :class:`RunnerContext`: the runners, processes and threads that wrote history;
* :class:`AppInfo`, :class:`WorkflowRun`, :class:`WorkflowData`,
  :class:`WorkflowSubInvocation`;
* ``PostgresTrigger``'s tables: :class:`TriggerCondition`,
  :class:`TriggerSourceTaskCondition`, :class:`TriggerDefinition`,
  :class:`TriggerDefinitionCondition`, :class:`TriggerValidCondition`,
  :class:`TriggerCronExecution`, :class:`TriggerRunClaim`, :class:`TriggerEvent`,
  :class:`TriggerEventInvocation`, :class:`TriggerRun`, :class:`TriggerRunParticipant`;
* ``PostgresOrchestrator``'s tables: :class:`OrchestratorInvocation` (the status each
  invocation is in), :class:`OrchestratorArgument`, :class:`OrchestratorWaiting`,
  :class:`RunnerHeartbeat`, :class:`AtomicServiceExecution`;
* ``PostgresBroker``'s queue, :class:`BrokerMessage` (invocations routed and not yet
  taken), and ``PostgresClientDataStore``'s :class:`ClientData`;
* :class:`HistoryCounter`: running totals of finished, failed, retried and recovered
  invocations per app, kept by a trigger on the history; retention never lowers them;
* :class:`RetentionSchedule` (when each app's retention is next due) and
  :class:`RetentionRun` (every retention run: when, outcome, rows removed per table).

Views (read-only; the session refuses to write their rows):

* :class:`InvocationStatus` (``pynenc_invocation_status``): current status of each
  invocation;
* :class:`InvocationTimeline` (``pynenc_invocation_timeline``): every status change,
  numbered, with durations and the runner that wrote it;
* :class:`RunnerStatus` (``pynenc_runner_status``): each runner with its heartbeat's
  age on the server's clock, the invocations it owns and whether it holds the atomic
  service.

Relationships, all read-only (``viewonly``) and backed by no foreign key in the
database, since pynenc may write history before the invocation's row:

* ``Invocation.history`` (in write order, see :func:`history_write_order`),
  ``.result``, ``.exception``, ``.parent``, ``.children`` and ``.workflow``;
* ``InvocationHistory.invocation`` and ``.runner_context``;
  ``RunnerContext.parent`` (the enclosing runner, up the chain);
* ``WorkflowRun.invocation``, ``.sub_invocations`` and ``.data``.

Accessing a relationship that was not loaded runs one query per object; in a loop,
load it with the query instead (``selectinload``), which costs one more statement
whatever the number of rows::

    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session, selectinload

    from pynenc_postgres.models import Invocation

    engine = create_engine("postgresql+psycopg://auditor@db/app")
    with Session(engine) as session:
        query = (
            select(Invocation)
            .where(Invocation.app_id == "orders")
            .options(selectinload(Invocation.history), selectinload(Invocation.exception))
        )
        for invocation in session.scalars(query):
            print(invocation.task_id, [row.status for row in invocation.history])

The classes name no schema. When the tables are not in ``public``, translate it:
``engine.execution_options(schema_translate_map={None: "your_schema"})``.
docs/audit.md has a cookbook of audit questions, each in SQL and as a ``select()``.

pynenc's runtime never imports this module: runners use plain SQL.
"""

from pynenc_postgres.db.models import (
    AppInfo,
    AtomicServiceExecution,
    Base,
    BrokerMessage,
    ClientData,
    HistoryCounter,
    Invocation,
    InvocationException,
    InvocationHistory,
    InvocationResult,
    OrchestratorArgument,
    OrchestratorInvocation,
    OrchestratorWaiting,
    RetentionRun,
    RetentionSchedule,
    RunnerContext,
    RunnerHeartbeat,
    TriggerCondition,
    TriggerCronExecution,
    TriggerDefinition,
    TriggerDefinitionCondition,
    TriggerEvent,
    TriggerEventInvocation,
    TriggerRun,
    TriggerRunClaim,
    TriggerRunParticipant,
    TriggerSourceTaskCondition,
    TriggerValidCondition,
    WorkflowData,
    WorkflowRun,
    WorkflowSubInvocation,
    history_write_order,
)
from pynenc_postgres.db.views import (
    InvocationStatus,
    InvocationTimeline,
    ReadOnlyViewError,
    RunnerStatus,
    ViewBase,
)

__all__ = [
    "AppInfo",
    "AtomicServiceExecution",
    "Base",
    "BrokerMessage",
    "ClientData",
    "HistoryCounter",
    "Invocation",
    "InvocationException",
    "InvocationHistory",
    "InvocationResult",
    "InvocationStatus",
    "InvocationTimeline",
    "OrchestratorArgument",
    "OrchestratorInvocation",
    "OrchestratorWaiting",
    "ReadOnlyViewError",
    "RetentionRun",
    "RetentionSchedule",
    "RunnerContext",
    "RunnerHeartbeat",
    "RunnerStatus",
    "TriggerCondition",
    "TriggerCronExecution",
    "TriggerDefinition",
    "TriggerDefinitionCondition",
    "TriggerEvent",
    "TriggerEventInvocation",
    "TriggerRun",
    "TriggerRunClaim",
    "TriggerRunParticipant",
    "TriggerSourceTaskCondition",
    "TriggerValidCondition",
    "ViewBase",
    "WorkflowData",
    "WorkflowRun",
    "WorkflowSubInvocation",
    "history_write_order",
]
