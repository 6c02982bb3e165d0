"""A user's audit script, type-checked with ``mypy --strict`` by test_cookbook_python.py.

It is not run: it holds the types a user relies on (``assert_type`` fails the check
when one changes), through queries, relationships and the mapped views.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import assert_type

from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, selectinload

from pynenc_postgres.models import (
    Invocation,
    InvocationException,
    InvocationHistory,
    InvocationResult,
    InvocationStatus,
    InvocationTimeline,
    RunnerContext,
    WorkflowData,
    WorkflowRun,
    history_write_order,
)


def latest_invocations(engine: Engine, app_id: str) -> list[str]:
    lines: list[str] = []
    query = (
        select(Invocation)
        .where(Invocation.app_id == app_id)
        .order_by(Invocation.created_at.desc())
        .limit(10)
        .options(
            selectinload(Invocation.history)
            .selectinload(InvocationHistory.runner_context)
            .selectinload(RunnerContext.parent),
            selectinload(Invocation.result),
            selectinload(Invocation.exception),
            selectinload(Invocation.children),
            selectinload(Invocation.workflow).selectinload(WorkflowRun.sub_invocations),
        )
    )
    with Session(engine) as session:
        for invocation in session.scalars(query):
            assert_type(invocation, Invocation)
            assert_type(invocation.history, list[InvocationHistory])
            assert_type(invocation.result, InvocationResult | None)
            assert_type(invocation.exception, InvocationException | None)
            assert_type(invocation.parent, Invocation | None)
            assert_type(invocation.children, list[Invocation])
            assert_type(invocation.parent_invocation_id, str | None)
            workflow = invocation.workflow
            assert_type(workflow, WorkflowRun | None)
            if workflow is not None:
                assert_type(workflow.sub_invocations, list[Invocation])
                assert_type(workflow.data, list[WorkflowData])
                assert_type(workflow.invocation, Invocation | None)
            for change in invocation.history:
                assert_type(change.recorded_at, datetime)
                assert_type(change.invocation, Invocation | None)
                context = change.runner_context
                while context is not None:
                    assert_type(context.pid, int)
                    lines.append(f"{change.status} {context.runner_cls}@{context.hostname}")
                    context = context.parent
    return lines


def status_of(engine: Engine, app_id: str, invocation_id: str) -> str | None:
    with Session(engine) as session:
        row = session.get(InvocationStatus, (app_id, invocation_id))
        if row is None:
            return None
        assert_type(row.is_final, bool | None)
        assert_type(row.has_result, bool)
        assert_type(row.registered_at, datetime | None)
        return row.status


def slowest_steps(engine: Engine, app_id: str) -> list[tuple[str | None, timedelta | None]]:
    t = InvocationTimeline
    query = (
        select(t.task_id, func.max(t.since_previous))
        .where(t.app_id == app_id, t.previous_status == "running")
        .group_by(t.task_id)
    )
    with Session(engine) as session:
        return [(task_id, longest) for task_id, longest in session.execute(query)]


def history_in_order(engine: Engine, app_id: str, invocation_id: str) -> Sequence[str]:
    query = (
        select(InvocationHistory.status)
        .where(
            InvocationHistory.app_id == app_id,
            InvocationHistory.invocation_id == invocation_id,
        )
        .order_by(*history_write_order())
    )
    with Session(engine) as session:
        return session.scalars(query).all()


async def timeline_async(engine: AsyncEngine, app_id: str, invocation_id: str) -> list[int]:
    async with AsyncSession(engine) as session:
        rows = await session.scalars(
            select(InvocationTimeline)
            .where(
                InvocationTimeline.app_id == app_id,
                InvocationTimeline.invocation_id == invocation_id,
            )
            .order_by(InvocationTimeline.step)
        )
        return [row.step for row in rows]
