"""pynenc's status state machine, as the parameters of one conditional ``UPDATE``.

pynenc validates a transition in Python (``status_record_transition``) against the
record it read; across hosts the record may change between that read and the write.
Here each target status is turned, once, into what the ``UPDATE`` needs to check the
same rules against the row itself: the statuses it may come from, which of those
require the caller to own the invocation, and who owns it afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pynenc.invocation.status import InvocationStatus, get_status_definition


@dataclass(frozen=True)
class TransitionRule:
    """How the row must look for a move to ``target``, and the owner it gets.

    :param target: the status being entered.
    :param allowed_from: statuses that may move to ``target``.
    :param overrides_ownership: the move ignores who owns the invocation (recovery).
    :param acquires_ownership: the caller becomes the owner; it must name itself.
    :param keeps_owner: the current owner stays (neither acquired nor released).
    """

    target: InvocationStatus
    allowed_from: tuple[str, ...]
    overrides_ownership: bool
    acquires_ownership: bool
    keeps_owner: bool

    def new_owner(self, runner_id: str | None) -> str | None:
        """The owner written by the ``UPDATE`` unless :attr:`keeps_owner`."""
        return runner_id if self.acquires_ownership else None


@cache
def rule_for(target: InvocationStatus) -> TransitionRule:
    """The rule of a move to ``target``, from pynenc's own status definitions."""
    definition = get_status_definition(target)
    return TransitionRule(
        target=target,
        allowed_from=tuple(
            sorted(status.value for status in InvocationStatus if status.can_transition_to(target))
        ),
        overrides_ownership=definition.overrides_ownership,
        acquires_ownership=definition.acquires_ownership,
        keeps_owner=not (definition.acquires_ownership or definition.releases_ownership),
    )


@cache
def statuses_requiring_owner() -> list[str]:
    """Statuses in which only the owner may change an invocation's status."""
    return sorted(
        status.value
        for status in InvocationStatus
        if get_status_definition(status).requires_ownership
    )
