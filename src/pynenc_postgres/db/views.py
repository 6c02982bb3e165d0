"""The audit views of the migrations, mapped as read-only classes.

``pynenc_invocation_status`` and ``pynenc_invocation_timeline`` (migration 0002) and
``pynenc_runner_status`` (0004) are created by migrations, like every other object of
the schema. They are mapped on a
:class:`ViewBase` whose metadata is separate from the tables'
(:class:`~pynenc_postgres.db.models.Base`), so Alembic's autogenerate, which compares
``Base.metadata`` with the database, never proposes to create them as tables, and
``alembic check`` stays clean.

A view has no primary key in the catalog; each class names the columns that identify
a row as its mapper's primary key, so the ORM's identity map works. A column that a
later migration adds to a view is one more ``Mapped`` line here; a test compares these
classes with the views' columns in the catalog.

Rows of a view cannot be written: the session refuses to flush one, before it reaches
the database (which would refuse too, the views not being updatable).
"""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Connection, MetaData, Text, event
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

from pynenc_postgres.db import tables
from pynenc_postgres.db.errors import PostgresPluginError
from pynenc_postgres.db.models import Base


class ReadOnlyViewError(PostgresPluginError):
    """A row of an audit view was added, changed or deleted through an ORM session."""


class ViewBase(DeclarativeBase):
    """Base of the mapped views: its own metadata, never compared with the database."""

    metadata = MetaData()
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        **Base.type_annotation_map,
        timedelta: INTERVAL(),
    }


def _refuse_write(mapper: Mapper[Any], connection: Connection, target: ViewBase) -> None:
    view = mapper.local_table.name  # type: ignore[attr-defined]
    raise ReadOnlyViewError(
        f"{type(target).__name__} maps the view {view}, which pynenc-postgres computes "
        "from its tables; its rows cannot be written. Leave the object out of the session "
        "(session.expunge(obj)); pynenc's state changes only through pynenc itself."
    )


for _event in ("before_insert", "before_update", "before_delete"):
    event.listen(ViewBase, _event, _refuse_write, propagate=True)


class InvocationStatus(ViewBase):
    """One row per invocation with its current status (``pynenc_invocation_status``).

    The current status is that of the invocation's latest history row. Filter on
    ``app_id`` (and ``invocation_id`` or ``task_id``) to stay index-backed.
    """

    __tablename__ = tables.INVOCATION_STATUS_VIEW

    app_id: Mapped[str] = mapped_column()
    invocation_id: Mapped[str] = mapped_column()
    task_id: Mapped[str] = mapped_column()
    status: Mapped[str | None] = mapped_column()
    """Status of the latest history row; None if no history was written yet."""
    is_final: Mapped[bool | None] = mapped_column()
    registered_at: Mapped[datetime | None] = mapped_column()
    status_changed_at: Mapped[datetime | None] = mapped_column()
    runner_id: Mapped[str | None] = mapped_column()
    owner_runner_id: Mapped[str | None] = mapped_column()
    has_result: Mapped[bool] = mapped_column()
    exception_name: Mapped[str | None] = mapped_column()
    parent_invocation_id: Mapped[str | None] = mapped_column()
    workflow_id: Mapped[str | None] = mapped_column()

    __mapper_args__: Mapping[str, Any] = {"primary_key": (app_id, invocation_id)}


class InvocationTimeline(ViewBase):
    """One row per status change, numbered per invocation (``pynenc_invocation_timeline``).

    Filter on ``app_id`` and ``invocation_id``, and order by ``step``.
    """

    __tablename__ = tables.INVOCATION_TIMELINE_VIEW

    app_id: Mapped[str] = mapped_column()
    invocation_id: Mapped[str] = mapped_column()
    task_id: Mapped[str | None] = mapped_column()
    """None when the invocation's own row is not written (yet)."""
    step: Mapped[int] = mapped_column()
    status: Mapped[str] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column()
    previous_status: Mapped[str | None] = mapped_column()
    since_previous: Mapped[timedelta | None] = mapped_column()
    since_first: Mapped[timedelta] = mapped_column()
    owner_runner_id: Mapped[str | None] = mapped_column()
    runner_id: Mapped[str] = mapped_column()
    runner_cls: Mapped[str | None] = mapped_column()
    hostname: Mapped[str | None] = mapped_column()
    pid: Mapped[int | None] = mapped_column()
    registered_by_invocation_id: Mapped[str | None] = mapped_column()

    __mapper_args__: Mapping[str, Any] = {"primary_key": (app_id, invocation_id, step)}


class RunnerStatus(ViewBase):
    """One row per runner (and worker) with its heartbeat's age (``pynenc_runner_status``).

    Written by ``PostgresOrchestrator``: the age is measured on the server's clock, with
    the PENDING and RUNNING invocations the runner owns and the atomic-service execution
    it holds, if any. Filter on ``app_id``.
    """

    __tablename__ = tables.RUNNER_STATUS_VIEW

    app_id: Mapped[str] = mapped_column()
    runner_id: Mapped[str] = mapped_column()
    runner_cls: Mapped[str | None] = mapped_column()
    """None when the runner's context is not stored; so are ``hostname`` and ``pid``."""
    hostname: Mapped[str | None] = mapped_column()
    pid: Mapped[int | None] = mapped_column()
    can_run_atomic_service: Mapped[bool] = mapped_column()
    consumed_queues: Mapped[list[str]] = mapped_column(ARRAY(Text()))
    first_heartbeat_at: Mapped[datetime] = mapped_column()
    last_heartbeat_at: Mapped[datetime] = mapped_column()
    heartbeat_age: Mapped[timedelta] = mapped_column()
    """``now() - last_heartbeat_at``; pynenc considers the runner dead past
    ``runner_considered_dead_after_minutes``."""
    pending_invocations: Mapped[int] = mapped_column()
    running_invocations: Mapped[int] = mapped_column()
    holds_atomic_service: Mapped[bool] = mapped_column()
    atomic_service_run_id: Mapped[str | None] = mapped_column()
    atomic_service_started_at: Mapped[datetime | None] = mapped_column()

    __mapper_args__: Mapping[str, Any] = {"primary_key": (app_id, runner_id)}


# The classes above, by view name, for code that walks every mapped view.
VIEW_CLASSES: dict[str, type[ViewBase]] = {
    mapper.local_table.name: mapper.class_  # type: ignore[attr-defined]
    for mapper in ViewBase.registry.mappers
}
