"""How often one process writes the heartbeats of its runners.

pynenc reports heartbeats from every runner loop iteration, several times a second per
worker, while a runner is dead only after ``runner_considered_dead_after_minutes``. A
write closer than the interval to the previous write of the same runners, with the
same flags, adds nothing a reader could see: it is skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

DEAD_AFTER_FRACTION = 6
"""The interval is never more than this fraction of the time after which a runner is dead."""


def heartbeat_interval(configured: float, dead_after_seconds: float) -> float:
    """Seconds between two writes of one runner's heartbeat.

    :param configured: ``postgres_heartbeat_interval_sec``.
    :param dead_after_seconds: ``runner_considered_dead_after_minutes`` in seconds.
    """
    return max(0.0, min(configured, dead_after_seconds / DEAD_AFTER_FRACTION))


class HeartbeatThrottle:
    """The last write of each runner's heartbeat from this process, by this process's clock.

    Only durations on this process's monotonic clock are used (never compared across
    hosts): the server stamps every heartbeat it stores with its own clock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: dict[str, tuple[float, bool, tuple[str, ...] | None]] = {}

    def due(
        self,
        runner_ids: Sequence[str],
        can_run_atomic_service: bool,
        queues: tuple[str, ...] | None,
        interval: float,
    ) -> bool:
        """True when a runner has no recent write, or one with other flags or queues."""
        now = time.monotonic()
        with self._lock:
            for runner_id in runner_ids:
                last = self._written.get(runner_id)
                if last is None:
                    return True
                at, flag, written_queues = last
                if now - at >= interval or flag != can_run_atomic_service:
                    return True
                if queues is not None and queues != written_queues:
                    return True
        return False

    def written(
        self,
        runner_ids: Sequence[str],
        can_run_atomic_service: bool,
        queues: tuple[str, ...] | None,
        started: float,
    ) -> None:
        """Record a committed write that began at ``started`` (``time.monotonic()``)."""
        with self._lock:
            for runner_id in runner_ids:
                previous = self._written.get(runner_id)
                kept = queues if queues is not None else (previous[2] if previous else None)
                self._written[runner_id] = (started, can_run_atomic_service, kept)
            if len(self._written) > 10_000:
                # Runners come and go (a replaced worker has a new id): forget the oldest.
                for runner_id, _ in sorted(self._written.items(), key=lambda i: i[1][0])[:5_000]:
                    del self._written[runner_id]

    def forget(self) -> None:
        """Write the next heartbeat of every runner whatever its age (after a purge)."""
        with self._lock:
            self._written.clear()
