"""A fleet of four hosts with four workers each: every task once, one LISTEN per host.

Four simulated hosts (network namespaces, each with its own hostname and link) each run
pynenc's ``PersistentProcessRunner`` with four worker processes on the Postgres-only
stack. The abstract socket name that elects a host's notifier lives in the network
namespace, so each host elects its own: four ``LISTEN`` sessions, one per link, and
each host holds at most its workers + 2 sessions. A burst of tasks, submitted in one
batch, runs on every host and each task exactly once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynenc import Pynenc

from pynenc_postgres.db.engine import dispose_all
from tests.multihost import netns, tasks
from tests.multihost.conftest import FAILED, Cluster, wait_until
from tests.multihost.netns import Host
from tests.multihost.server import APP_ROLE, LinkPostgres
from tests.multihost.test_hosts import executions, status_counts

HOSTNAMES = {label: f"pynenc-fleet-{label}" for label in "cdef"}
WORKERS = 4
TASKS = 400
RUN_SECONDS = 300.0


@pytest.fixture(scope="module")
def fleet_hosts() -> Iterator[list[Host]]:
    try:
        created = netns.create_hosts(HOSTNAMES)
    except netns.NamespacesUnavailable as exc:
        reason = f"network namespaces cannot be created here: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}. CI is set: the project's machines must run these tests.")
        pytest.skip(reason)
    try:
        yield created
    finally:
        netns.destroy(created)


@pytest.fixture(scope="module")
def fleet_postgres(fleet_hosts: list[Host]) -> Iterator[LinkPostgres]:
    server = LinkPostgres(fleet_hosts)
    try:
        server.start()
        server.prepare()
        yield server
    finally:
        dispose_all()
        server.destroy()


@pytest.fixture
def fleet(
    fleet_postgres: LinkPostgres, fleet_hosts: list[Host], request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    token = uuid.uuid4().hex[:8]
    database = f"fleet_{token}"
    fleet_postgres.new_database(database)
    fleet_postgres.execute(f"SET ROLE {APP_ROLE};{tasks.DDL}", database=database)
    log_dir = Path(tempfile.mkdtemp(prefix="pynenc-fleet-"))
    handle = Cluster(
        fleet_postgres, fleet_hosts, database, f"fleet-{token}", log_dir, workers_per_host=WORKERS
    )
    try:
        yield handle
    finally:
        handle.stop()
        dispose_all()
        fleet_postgres.drop_database(database)
        if request.node.stash.get(FAILED, False):
            print(f"runner logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture
def fleet_client(fleet: Cluster, monkeypatch: pytest.MonkeyPatch) -> Pynenc:
    for name in os.environ:
        if name.startswith("PYNENC__"):
            monkeypatch.delenv(name)
    for name, value in fleet.env(fleet.hosts[0], runner=False).items():
        if name.startswith("PYNENC__"):
            monkeypatch.setenv(name, value)
    app = Pynenc()
    monkeypatch.setattr(tasks.record, "app", app)
    return app


def sessions_by_address(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """Per client address: the sessions the plugin holds, and the LISTEN ones among them
    (the task's own side-effect sessions are the test's, not the plugin's)."""
    rows = cluster.query(
        "SELECT host(client_addr), count(*), "
        "count(*) FILTER (WHERE application_name LIKE '%%(listen)') "
        "FROM pg_stat_activity WHERE datname = current_database() AND client_addr IS NOT NULL "
        "AND application_name <> %s GROUP BY 1",
        (tasks.TASK_SESSION,),
    )
    return {str(address): (int(total), int(listen)) for address, total, listen in rows}


def test_four_hosts_run_a_burst_each_task_once_with_one_listener_per_host(
    fleet: Cluster, fleet_client: Pynenc, record_property: Any
) -> None:
    fleet.start()
    group = tasks.record.parallelize([(n,) for n in range(TASKS)])
    invocations = list(group.invocations)

    def done() -> bool:
        fleet.check_runners_alive()
        counts = status_counts(fleet)
        assert counts["failed"] == 0, counts
        return counts["success"] == TASKS

    wait_until(done, RUN_SECONDS, lambda: f"statuses {dict(status_counts(fleet))}", 0.25)

    runs = executions(fleet)
    assert Counter(run.n for run in runs) == Counter(range(TASKS))
    assert {run.n: run.invocation_id for run in runs} == {
        n: str(invocation.invocation_id) for n, invocation in enumerate(invocations)
    }
    per_host = Counter(run.hostname for run in runs)
    assert set(per_host) == set(HOSTNAMES.values()), per_host
    # Each host reached Postgres over its own link, and elected its own notifier.
    dispose_all()  # the client's sessions come from the first host's link too
    sessions = sessions_by_address(fleet)
    assert set(sessions) == {host.address for host in fleet.hosts}
    for address, (total, listening) in sessions.items():
        assert listening == 1, (address, sessions)
        assert total <= WORKERS + 2, (address, sessions)
    record_property("executions_per_host", dict(per_host))
    record_property("sessions_per_host", sessions)
