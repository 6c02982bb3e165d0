"""What an idle fleet costs its server: sessions held, and transactions per second.

The formula behind the capacity table of docs/operations.md. Each host runs one runner
process (pynenc's ``PersistentProcessRunner``) with ``workers`` worker processes. While
nothing arrives:

* each worker holds one pooled session; the runner holds one (heartbeats); in ``listen``
  mode one process of the host holds the host's ``LISTEN`` session;
* each worker sends a claim and a blocking-control query once per
  ``postgres_broker_recheck_interval_sec`` in ``listen`` mode; in ``poll`` mode a claim
  once per ``postgres_broker_poll_max_interval_sec`` (once idle for a few seconds) and
  the blocking-control query once per re-check interval;
* the runner writes its workers' heartbeats, in one statement, once per heartbeat
  interval; the ``LISTEN`` session sends a keepalive every 10 s;
* the runner checks its atomic-service slot once per
  ``atomic_service_check_interval_minutes``: its own heartbeat and the list of live
  runners, two statements (the trigger and recovery work of the holder of the slot
  comes on top, a few statements per ``atomic_service_interval_minutes``).

Every statement is its own transaction in autocommit. Behind a transaction-mode pooler
with ``postgres_apply_settings=transaction`` each one is four statements (``BEGIN``, the
``SET LOCAL``, itself, ``COMMIT``) in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

KEEPALIVE_SEC = 10.0
ATOMIC_SERVICE_STATEMENTS = 2


@dataclass(frozen=True)
class IdleFleet:
    """An idle fleet's load on the server.

    :param sessions: server sessions the hosts hold (without a pooler in between).
    :param transactions_per_second: committed transactions per second, all hosts.
    """

    sessions: int
    transactions_per_second: float


def idle_fleet(
    hosts: int,
    workers: int,
    *,
    wakeup: str = "listen",
    recheck_interval: float = 5.0,
    poll_max_interval: float = 2.0,
    heartbeat_interval: float = 5.0,
    atomic_service_check_interval: float = 30.0,
) -> IdleFleet:
    """The load of ``hosts`` idle hosts with ``workers`` worker processes each.

    :param wakeup: ``listen`` or ``poll``.
    :param recheck_interval: ``postgres_broker_recheck_interval_sec``.
    :param poll_max_interval: ``postgres_broker_poll_max_interval_sec``.
    :param heartbeat_interval: seconds between two heartbeat writes of the runner (the
        smaller of ``postgres_heartbeat_interval_sec`` and a sixth of
        ``runner_considered_dead_after_minutes``).
    :param atomic_service_check_interval: ``atomic_service_check_interval_minutes`` in
        seconds.
    """
    if wakeup not in ("listen", "poll"):
        raise ValueError(f"wakeup is {wakeup!r}: listen or poll")
    listen = wakeup == "listen"
    claims = 1 / recheck_interval if listen else 1 / poll_max_interval
    per_worker = claims + 1 / recheck_interval
    per_runner = 1 / heartbeat_interval + ATOMIC_SERVICE_STATEMENTS / atomic_service_check_interval
    per_host = workers * per_worker + per_runner + (1 / KEEPALIVE_SEC if listen else 0.0)
    sessions = workers + 1 + (1 if listen else 0)
    return IdleFleet(hosts * sessions, hosts * per_host)
