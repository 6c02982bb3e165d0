"""pynenc on PostgreSQL alone, across hosts, and when one host dies.

Two simulated hosts (network namespaces, each with its own hostname and its own link
to Postgres) each run pynenc's ``PersistentProcessRunner`` with two workers; broker,
orchestrator, trigger, client data store and state backend are all the Postgres
ones, selected by ``PYNENC__*`` variables. The test process submits 500 tasks from
the root namespace. The task writes one row per execution into a side-effect table,
so the tests count real executions rather than trusting pynenc's bookkeeping.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pynenc import Pynenc

from tests.multihost import tasks
from tests.multihost.conftest import WORKERS_PER_HOST, Cluster, wait_until
from tests.multihost.netns import Host

TASKS = 500
# The whole run finishes in seconds; recovery after a kill waits for the next minute.
RUN_SECONDS = 180.0
# The victim is held (and killed) once this many executions are recorded: mid-run.
HOLD_AFTER = 100
RECOVERY_STATUSES = ("running_recovery", "pending_recovery")


@dataclass(frozen=True)
class Execution:
    """One row of the side-effect table: one real execution of the task."""

    seq: int
    n: int
    invocation_id: str
    runner_id: str
    hostname: str
    client_addr: str
    held: bool


def executions(cluster: Cluster) -> list[Execution]:
    rows = cluster.query(
        f"SELECT seq, n, invocation_id, runner_id, hostname, host(client_addr), held "
        f"FROM {tasks.SIDE_EFFECT_TABLE} ORDER BY seq"
    )
    return [Execution(*row) for row in rows]


def status_counts(cluster: Cluster) -> Counter[str]:
    rows = cluster.query(
        "SELECT status, count(*) FROM pynenc_orchestrator_invocation "
        "WHERE app_id = %s AND task_id = %s GROUP BY status",
        (cluster.app_id, tasks.record.task_id.key),
    )
    return Counter({str(status): int(count) for status, count in rows})


def wait_for_all_successful(cluster: Cluster, timeout: float, *, dead: str = "") -> None:
    def done() -> bool:
        cluster.check_runners_alive(except_labels=(dead,))
        counts = status_counts(cluster)
        assert counts["failed"] == 0, counts
        return counts["success"] == TASKS

    def why() -> str:
        tails = "\n".join(f"--- {h.hostname}\n{cluster.log_tail(h, 15)}" for h in cluster.hosts)
        return f"statuses {dict(status_counts(cluster))} of {TASKS} tasks\n{tails}"

    wait_until(done, timeout, why, 0.25)


def submit(client: Pynenc) -> dict[int, Any]:
    """Submit the 500 calls in one batch, as pynenc's ``parallelize`` does."""
    assert tasks.record.app is client
    group = tasks.record.parallelize([(n,) for n in range(TASKS)])
    invocations = list(group.invocations)
    assert [invocation.arguments.kwargs["n"] for invocation in invocations] == list(range(TASKS))
    return dict(enumerate(invocations))


def check_results(invocations: dict[int, Any]) -> None:
    results = {n: invocation.result for n, invocation in invocations.items()}
    assert results == {n: tasks.expected(n) for n in range(TASKS)}


def running_hostnames(cluster: Cluster) -> set[str]:
    """Hosts of the runner contexts that pynenc recorded setting an invocation RUNNING."""
    rows = cluster.query(
        "SELECT DISTINCT rc.hostname FROM pynenc_invocation_history h "
        "JOIN pynenc_runner_context rc ON rc.app_id = h.app_id AND rc.runner_id = h.runner_id "
        "WHERE h.app_id = %s AND h.status = 'running'",
        (cluster.app_id,),
    )
    return {str(row[0]) for row in rows}


def recovered(cluster: Cluster) -> set[str]:
    """Invocations with a recovery status in their history."""
    rows = cluster.query(
        "SELECT DISTINCT invocation_id FROM pynenc_invocation_history "
        "WHERE app_id = %s AND status = ANY(%s)",
        (cluster.app_id, list(RECOVERY_STATUSES)),
    )
    return {str(row[0]) for row in rows}


def report(record_property: Any, name: str, value: object) -> None:
    print(f"{name}: {value}")
    record_property(name, value)


def test_two_hosts_run_500_tasks_each_exactly_once(
    cluster: Cluster, client: Pynenc, record_property: Any
) -> None:
    began = time.monotonic()
    cluster.start()
    a, b = cluster.hosts
    started = time.monotonic()
    invocations = submit(client)
    wait_for_all_successful(cluster, RUN_SECONDS)
    finished = time.monotonic()

    check_results(invocations)
    runs = executions(cluster)
    # Each task ran exactly once, as the invocation that the client submitted for it.
    assert Counter(run.n for run in runs) == Counter(range(TASKS))
    assert {run.n: run.invocation_id for run in runs} == {
        n: str(invocation.invocation_id) for n, invocation in invocations.items()
    }
    # Both hosts ran tasks, each reaching Postgres from its own address on its link.
    per_host = Counter(run.hostname for run in runs)
    assert set(per_host) == {a.hostname, b.hostname}, per_host
    assert {(run.hostname, run.client_addr) for run in runs} == {
        (a.hostname, a.address),
        (b.hostname, b.address),
    }
    # pynenc's own records say the same: runner contexts of both hosts set RUNNING, and
    # the context of the worker that ran each task names the host it really ran on.
    assert running_hostnames(cluster) == {a.hostname, b.hostname}
    contexts = {
        str(runner_id): str(hostname)
        for runner_id, hostname in cluster.query(
            "SELECT runner_id, hostname FROM pynenc_runner_context WHERE app_id = %s",
            (cluster.app_id,),
        )
    }
    assert {run.runner_id: contexts.get(run.runner_id) for run in runs} == {
        run.runner_id: run.hostname for run in runs
    }
    assert recovered(cluster) == set()

    report(record_property, "executions_per_host", dict(per_host))
    report(record_property, "startup_seconds", round(started - began, 1))
    report(record_property, "submit_to_all_done_seconds", round(finished - started, 1))


def hold(cluster: Cluster, host: Host, max_held: int) -> None:
    """Hold up to ``max_held`` tasks on ``host`` once HOLD_AFTER executions are recorded."""
    cluster.query(
        f"INSERT INTO {tasks.HOLD_TABLE} (hostname, after_executions, max_held) "
        "VALUES (%s, %s, %s) RETURNING hostname",
        (host.hostname, HOLD_AFTER, max_held),
    )


def release(cluster: Cluster, host: Host) -> None:
    cluster.query(
        f"UPDATE {tasks.HOLD_TABLE} SET released = true WHERE hostname = %s RETURNING hostname",
        (host.hostname,),
    )


def held_on(cluster: Cluster, host: Host) -> dict[int, str]:
    """The tasks held on ``host``: invocation id by argument."""
    return {
        run.n: run.invocation_id
        for run in executions(cluster)
        if run.held and run.hostname == host.hostname
    }


def statuses_of(cluster: Cluster, invocation_ids: Iterable[str]) -> dict[str, str]:
    rows = cluster.query(
        "SELECT invocation_id, status FROM pynenc_orchestrator_invocation "
        "WHERE app_id = %s AND invocation_id = ANY(%s)",
        (cluster.app_id, list(invocation_ids)),
    )
    return {str(invocation_id): str(status) for invocation_id, status in rows}


def test_a_host_killed_mid_run_only_its_running_tasks_run_twice(
    cluster: Cluster, client: Pynenc, record_property: Any
) -> None:
    began = time.monotonic()
    cluster.start()
    survivor, victim = cluster.hosts
    # Mid-run (after HOLD_AFTER executions) each of the victim's workers and one of the
    # survivor's are held inside a task, their side effects written. The victim is
    # killed then, in the middle of running work; the survivor's held task stays
    # running, under a live runner, while recovery runs, which must leave it alone.
    hold(cluster, victim, WORKERS_PER_HOST)
    hold(cluster, survivor, 1)
    started = time.monotonic()
    invocations = submit(client)
    wait_until(
        lambda: (
            (len(held_on(cluster, victim)), len(held_on(cluster, survivor)))
            == (WORKERS_PER_HOST, 1)
        ),
        RUN_SECONDS,
        lambda: (
            f"held: {victim.hostname} {held_on(cluster, victim)}, "
            f"{survivor.hostname} {held_on(cluster, survivor)}"
        ),
        0.05,
    )
    killed_pids = cluster.kill(victim)
    killed = time.monotonic()
    assert victim.pids() == []
    assert cluster.runners[victim.label].returncode == -9
    held = held_on(cluster, victim)
    ((kept_n, kept_id),) = held_on(cluster, survivor).items()

    # The victim's rows can no longer change: what it was running when it died.
    running_there = {
        str(row[0])
        for row in cluster.query(
            "SELECT i.invocation_id FROM pynenc_orchestrator_invocation i "
            "JOIN pynenc_runner_context rc "
            "  ON rc.app_id = i.app_id AND rc.runner_id = i.status_owner_id "
            "WHERE i.app_id = %s AND i.status = 'running' AND rc.hostname = %s",
            (cluster.app_id, victim.hostname),
        )
    }
    assert running_there == set(held.values())
    done_at_kill = status_counts(cluster)["success"]

    # Recovery re-runs the victim's tasks on the survivor's free worker ...
    wait_until(
        lambda: set(statuses_of(cluster, held.values()).values()) == {"success"},
        RUN_SECONDS,
        lambda: f"the dead host's tasks: {statuses_of(cluster, held.values())}",
        0.25,
    )
    recovered_at = time.monotonic()
    # ... while the survivor's held task, running all along, is left alone.
    assert statuses_of(cluster, [kept_id]) == {kept_id: "running"}
    release(cluster, survivor)
    wait_for_all_successful(cluster, RUN_SECONDS, dead=victim.label)
    finished = time.monotonic()

    check_results(invocations)
    runs = executions(cluster)
    per_n = Counter(run.n for run in runs)
    assert set(per_n) == set(range(TASKS)), "some tasks never ran"
    twice = {n for n, count in per_n.items() if count > 1}
    assert max(per_n.values()) == 2, per_n.most_common(3)
    # Only the tasks running on the dead host ran twice: first there, then on the survivor.
    assert twice == set(held)
    for n in sorted(twice):
        first, second = (run for run in runs if run.n == n)
        assert (first.hostname, first.held) == (victim.hostname, True)
        assert (second.hostname, second.held) == (survivor.hostname, False)
        assert first.invocation_id == second.invocation_id == str(invocations[n].invocation_id)
    assert [(run.hostname, run.held) for run in runs if run.n == kept_n] == [
        (survivor.hostname, True)
    ]
    # pynenc's running-invocation recovery is what re-ran them, and nothing else.
    assert recovered(cluster) == set(held.values())
    assert {run.hostname for run in runs if run.n not in twice} == {
        survivor.hostname,
        victim.hostname,
    }

    report(
        record_property,
        "ran_twice",
        {
            n: f"invocation {held[n]}: {victim.hostname} (killed), then {survivor.hostname}"
            for n in sorted(twice)
        },
    )
    report(record_property, "running_on_survivor_during_recovery_ran_once", {kept_n: kept_id})
    report(record_property, "killed_pids", killed_pids)
    report(record_property, "successful_when_killed", done_at_kill)
    report(record_property, "startup_seconds", round(started - began, 1))
    report(record_property, "kill_to_recovered_seconds", round(recovered_at - killed, 1))
    report(record_property, "submit_to_all_done_seconds", round(finished - started, 1))
