"""Blocking control of :class:`PostgresOrchestrator`: who waits for whose result."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pynenc.identifiers.invocation_id import InvocationId
from pynenc.invocation.status import InvocationStatus
from pynenc.orchestrator.base_orchestrator import BaseBlockingControl

if TYPE_CHECKING:
    from pynenc_postgres.orchestrator.postgres_orchestrator import PostgresOrchestrator

_AVAILABLE_FOR_RUN = sorted(s.value for s in InvocationStatus.get_available_for_run_statuses())


class PostgresBlockingControl(BaseBlockingControl):
    """
    Waiting edges between invocations, stored in ``pynenc_orchestrator_waiting``.

    An invocation that waits for others is not offered to run; one that others wait
    for, and that waits for nothing itself, is offered first, oldest registration
    first.

    :param PostgresOrchestrator orchestrator: the orchestrator whose tables are used.
    """

    def __init__(self, orchestrator: PostgresOrchestrator) -> None:
        self.orchestrator = orchestrator

    def waiting_for_results(
        self,
        caller_invocation_id: InvocationId,
        result_invocation_ids: list[InvocationId],
    ) -> None:
        orch = self.orchestrator
        orch.db.execute(
            orch.sql.waiting_for_results,
            (orch.app_id, caller_invocation_id, sorted(set(result_invocation_ids))),
        )

    def release_waiters(self, waited_invocation_id: InvocationId) -> None:
        orch = self.orchestrator
        orch.db.execute(
            orch.sql.release_waiters, (orch.app_id, waited_invocation_id, waited_invocation_id)
        )

    def get_blocking_invocations(self, max_num_invocations: int) -> Iterator[InvocationId]:
        """Waited-for invocations that wait for nothing and may run, oldest first."""
        orch = self.orchestrator
        rows = orch.db.fetchall(
            orch.sql.blocking_invocations,
            (orch.app_id, orch.app_id, _AVAILABLE_FOR_RUN, max(max_num_invocations, 0)),
        )
        return iter([InvocationId(row[0]) for row in rows])
