"""The Postgres server restarts while runners on two hosts are busy: they ride it out.

Runners on both simulated hosts (pynenc's ``PersistentProcessRunner``, all five
components on Postgres, configured by ``PYNENC__*`` variables with the default retry
settings) are working through a batch of tasks. Mid-run the server is stopped with
``pg_ctl stop -m fast``, which terminates every session (pooled connections, the
broker's ``LISTEN`` connection, the task's own), and started again on the same port and
data directory about five seconds later, once every runner has met the outage. The
runners must carry on: the same processes, no worker replaced, each host running tasks
again after the restart, every task completed with its result, none lost. Only a task
that was running when the server went down may have run twice (at-least-once); the
assertions name any that did.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynenc import Pynenc

from tests.multihost import tasks
from tests.multihost.conftest import Cluster
from tests.multihost.netns import Host
from tests.multihost.test_hosts import (
    RUN_SECONDS,
    TASKS,
    check_results,
    held_on,
    hold,
    release,
    report,
    status_counts,
    submit,
    wait_for_all_successful,
)
from tests.waiting import wait_until

# The engine's warning for each retried call; a runner that logs it has met the outage.
RETRY_LOG = "Transient Postgres error"
# A production restart (shutdown checkpoint, start-up) takes a few seconds.
DOWN_SECONDS = 5.0


@dataclass(frozen=True)
class Run:
    """One row of the side-effect table: one real execution of the task."""

    n: int
    invocation_id: str
    hostname: str
    pid: int
    ran_at: datetime
    held: bool


def runs(cluster: Cluster) -> list[Run]:
    rows = cluster.query(
        f"SELECT n, invocation_id, hostname, pid, ran_at, held FROM {tasks.SIDE_EFFECT_TABLE} "
        "ORDER BY seq"
    )
    return [Run(*row) for row in rows]


def server_clock(cluster: Cluster) -> datetime:
    ((now,),) = cluster.query("SELECT clock_timestamp()")
    assert isinstance(now, datetime)
    return now


def retries_logged(cluster: Cluster, host: Host) -> int:
    path = cluster.log(host)
    return path.read_text(errors="replace").count(RETRY_LOG) if path.exists() else 0


def workers(cluster: Cluster) -> set[tuple[str, str, int]]:
    """Worker runner contexts (runner id, hostname, pid) that pynenc registered."""
    rows = cluster.query(
        "SELECT runner_id, hostname, pid FROM pynenc_runner_context "
        "WHERE app_id = %s AND runner_cls = 'PPRWorker'",
        (cluster.app_id,),
    )
    return {(str(runner_id), str(hostname), int(pid)) for runner_id, hostname, pid in rows}


def success_set_at(cluster: Cluster) -> dict[str, datetime]:
    """When each successful invocation's SUCCESS was committed (server clock)."""
    rows = cluster.query(
        "SELECT invocation_id, status_set_at FROM pynenc_orchestrator_invocation "
        "WHERE app_id = %s AND task_id = %s AND status = 'success'",
        (cluster.app_id, tasks.record.task_id.key),
    )
    return {str(invocation_id): set_at for invocation_id, set_at in rows}


def test_postgres_restarted_mid_run_runners_ride_it_out(
    cluster: Cluster, client: Pynenc, record_property: Any
) -> None:
    cluster.start()
    hosts = cluster.hosts
    server = cluster.server
    # One worker on each host is held inside a task once 100 executions are recorded,
    # so each host has a task running across the restart, and a free worker.
    # (tests.multihost.tasks explains the hold.)
    for host in hosts:
        hold(cluster, host, 1)
    processes = {host.hostname: sorted(host.pids()) for host in hosts}
    started = time.monotonic()
    invocations = submit(client)
    wait_until(
        lambda: all(len(held_on(cluster, host)) == 1 for host in hosts),
        lambda: f"a task held on each host: { {h.hostname: held_on(cluster, h) for h in hosts} }",
        RUN_SECONDS,
    )
    cluster.check_runners_alive()
    workers_before = workers(cluster)
    retries_before = {host.hostname: retries_logged(cluster, host) for host in hosts}
    successful_before = status_counts(cluster)["success"]

    # The first task that each host's free worker starts after the restart is held too,
    # so that neither host can run the whole rest of the batch while the other's worker
    # still backs off: each host must show its own worker working again.
    cluster.query(
        f"UPDATE {tasks.HOLD_TABLE} SET restarted_after = pg_postmaster_start_time(), "
        "extra_after_restart = 1 RETURNING hostname"
    )
    # Whatever finished before this instant is not "running at the restart".
    stop_began = server_clock(cluster)
    stopped_at = time.monotonic()
    restarted = False
    try:
        server.stop("fast")
        # Down until every runner has met the outage (a call failed and is retried).
        wait_until(
            lambda: all(retries_logged(cluster, h) > retries_before[h.hostname] for h in hosts),
            lambda: (
                "each runner retrying a call while the server is down; retry warnings "
                f"{ {h.hostname: retries_logged(cluster, h) for h in hosts} }, before "
                f"{retries_before}"
            ),
            RUN_SECONDS,
            0.05,
        )
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - stopped_at)))
        server.start()
        restarted = True
    finally:
        if not restarted:
            server.start()  # the package's other tests share this server
    outage = time.monotonic() - stopped_at
    ((back_at,),) = cluster.query("SELECT pg_postmaster_start_time()")

    def held_after_restart() -> dict[str, list[Run]]:
        cluster.check_runners_alive()
        found: dict[str, list[Run]] = {host.hostname: [] for host in hosts}
        for run in runs(cluster):
            if run.held and run.ran_at > back_at:
                found[run.hostname].append(run)
        return found

    wait_until(
        lambda: all(held_after_restart().values()),
        lambda: (
            f"a task started and held on each host after the restart: {held_after_restart()}\n"
            + "\n".join(f"--- {h.hostname}\n{cluster.log_tail(h, 15)}" for h in hosts)
        ),
        RUN_SECONDS,
        0.25,
    )
    for host in hosts:
        release(cluster, host)
    wait_for_all_successful(cluster, RUN_SECONDS)
    finished = time.monotonic()

    # The same processes rode it out: the runners, their workers and pynenc's manager
    # are the ones from before, no worker was replaced, and on each host a worker from
    # before started a task after the restart, another than the one held across it.
    cluster.check_runners_alive()
    assert {host.hostname: sorted(host.pids()) for host in hosts} == processes, (
        "processes of the hosts changed across the restart"
    )
    assert workers(cluster) == workers_before, "a worker was replaced after the restart"
    worker_pids = {(hostname, pid) for _, hostname, pid in workers_before}
    all_runs = runs(cluster)
    after = [run for run in all_runs if run.ran_at > back_at]
    assert {(run.hostname, run.pid) for run in after} <= worker_pids
    assert {run.hostname for run in after} == {host.hostname for host in hosts}
    held_runs = [run for run in all_runs if run.held]
    held_across = {run.hostname: run for run in held_runs if run.ran_at < back_at}
    held_after = {run.hostname: run for run in held_runs if run.ran_at > back_at}
    assert len(held_runs) == 2 * len(hosts), held_runs
    assert set(held_across) == set(held_after) == {host.hostname for host in hosts}
    for hostname, run in held_after.items():
        assert run.pid != held_across[hostname].pid, (hostname, run, held_across[hostname])

    # Every task ran, as the invocation the client submitted, with the right result.
    check_results(invocations)
    per_n = Counter(run.n for run in all_runs)
    lost = sorted(set(range(TASKS)) - set(per_n))
    assert not lost, f"tasks that never ran: {lost}"
    ids = {n: str(invocation.invocation_id) for n, invocation in invocations.items()}
    assert {(run.n, run.invocation_id) for run in all_runs} == set(ids.items())

    # Running at the restart: began before the server went down (the table could not
    # change while it was down) and had not succeeded before the stop began. Only these
    # may have run twice.
    succeeded = success_set_at(cluster)
    running_at_restart = {
        run.n for run in all_runs if run.ran_at < back_at and succeeded[ids[run.n]] >= stop_began
    }
    twice = {n: count for n, count in per_n.items() if count > 1}
    described = {
        n: [
            f"{run.hostname} pid {run.pid} at {run.ran_at:%H:%M:%S.%f}"
            for run in all_runs
            if run.n == n
        ]
        for n in sorted(twice)
    }
    assert set(twice) <= running_at_restart, (
        f"tasks that ran twice but were not running at the restart: "
        f"{ {n: described[n] for n in sorted(set(twice) - running_at_restart)} }; "
        f"running at the restart: {sorted(running_at_restart)}"
    )
    assert max(per_n.values()) <= 2, f"tasks that ran more than twice: {described}"
    assert {run.n for run in held_across.values()} <= running_at_restart

    report(record_property, "ran_twice", described or "none")
    report(record_property, "running_at_restart", sorted(running_at_restart))
    report(record_property, "successful_before_restart", successful_before)
    report(
        record_property, "retry_warnings", {h.hostname: retries_logged(cluster, h) for h in hosts}
    )
    report(record_property, "outage_seconds", round(outage, 1))
    report(
        record_property,
        "first_task_after_restart_seconds",
        {h: round((run.ran_at - back_at).total_seconds(), 1) for h, run in held_after.items()},
    )
    report(record_property, "submit_to_all_done_seconds", round(finished - started, 1))
