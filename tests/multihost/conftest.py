"""Fixtures of the multi-host tests: two simulated hosts, Postgres on their links, runners.

Each host is a network namespace with its own hostname (:mod:`tests.multihost.netns`);
a private PostgreSQL 18 listens on the root side of both links
(:mod:`tests.multihost.server`). A :class:`Cluster` is one test's database and the
runner processes it starts on the hosts: pynenc's ``PersistentProcessRunner``
configured by ``PYNENC__*`` variables alone, all five components on Postgres, each
host reaching the database through its own link. The test process is the client, in
the root namespace.

Where namespaces cannot be created (not root, no ``ip`` or ``unshare``) the tests
skip with the reason; with ``CI`` set they fail instead, since the project's machines
must run them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pynenc import Pynenc

from pynenc_postgres.db.engine import dispose_all
from tests.multihost import netns, tasks
from tests.multihost.netns import Host
from tests.multihost.server import APP_ROLE, LinkPostgres

REPO = Path(__file__).resolve().parents[2]
HOSTNAMES = {"a": "pynenc-host-a", "b": "pynenc-host-b"}
WORKERS_PER_HOST = 2
RUNNER = "from tests.multihost.tasks import app; app.runner.run()"
# Runner processes import the package and spawn their workers in a few seconds; on a
# shared, loaded machine it can take much longer, but not this long.
STARTUP_SECONDS = 120.0

COMPONENTS = {
    "PYNENC__STATE_BACKEND_CLS": "PostgresStateBackend",
    "PYNENC__BROKER_CLS": "PostgresBroker",
    "PYNENC__ORCHESTRATOR_CLS": "PostgresOrchestrator",
    "PYNENC__TRIGGER_CLS": "PostgresTrigger",
    "PYNENC__CLIENT_DATA_STORE_CLS": "PostgresClientDataStore",
}

# Short recovery: a runner without a heartbeat for 15 s is dead (live runners beat at
# least every 0.3 s; the margin is for a loaded machine); both recovery services are due
# every minute (cron's finest step); each runner gets a slot of a 6 s atomic-service
# cycle and looks for it every 0.3 s.
RECOVERY = {
    "PYNENC__RUNNER_CONSIDERED_DEAD_AFTER_MINUTES": "0.25",
    "PYNENC__RECOVER_RUNNING_INVOCATIONS_CRON": "* * * * *",
    "PYNENC__RECOVER_PENDING_INVOCATIONS_CRON": "* * * * *",
    "PYNENC__ATOMIC_SERVICE_INTERVAL_MINUTES": "0.1",
    "PYNENC__ATOMIC_SERVICE_CHECK_INTERVAL_MINUTES": "0.005",
    "PYNENC__ATOMIC_SERVICE_SPREAD_MARGIN_MINUTES": "0",
    "PYNENC__ATOMIC_SERVICE_MAX_START_SLOT_FRACTION": "1.0",
}


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember a failure, so the fixtures keep the runners' logs for it."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


def wait_until(
    condition: Callable[[], bool], timeout: float, message: Callable[[], str], step: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; fail with ``message()`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s: {message()}")
        time.sleep(step)


@pytest.fixture(scope="package")
def hosts() -> Iterator[list[Host]]:
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


@pytest.fixture(scope="package")
def link_postgres(hosts: list[Host]) -> Iterator[LinkPostgres]:
    server = LinkPostgres(hosts)
    try:
        server.start()
        server.prepare()
        yield server
    finally:
        dispose_all()
        server.destroy()


@dataclass
class Cluster:
    """One test's database, and the runners it starts on the hosts."""

    server: LinkPostgres
    hosts: list[Host]
    database: str
    app_id: str
    log_dir: Path
    runners: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workers_per_host: int = WORKERS_PER_HOST

    @property
    def by_label(self) -> dict[str, Host]:
        return {host.label: host for host in self.hosts}

    def url(self, host: Host) -> str:
        return self.server.url_via(host, self.database)

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        """Superuser connection over the server's private socket, for the test's queries."""
        return self.server.admin(self.database)

    def query(self, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self.admin() as conn:
            return conn.execute(statement, params).fetchall()

    def env(self, host: Host, *, runner: bool = True) -> dict[str, str]:
        """The environment of a process on ``host``: pynenc configured by it alone."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")}
        env.update(COMPONENTS)
        env.update(RECOVERY)
        env.update(
            {
                "PYNENC__APP_ID": self.app_id,
                "PYNENC__POSTGRES_URL": self.url(host),
                # The runners' logs go to files; the client's would flood the test output.
                "PYNENC__LOGGING_LEVEL": "info" if runner else "warning",
                "PYNENC__LOG_USE_COLORS": "False",
            }
        )
        if runner:
            env.update(
                {
                    "PYNENC__RUNNER_CLS": "PersistentProcessRunner",
                    "PYNENC__NUM_PROCESSES": str(self.workers_per_host),
                    "PYNENC__RUNNER_LOOP_SLEEP_TIME_SEC": "0.05",
                }
            )
        return env

    def log(self, host: Host) -> Path:
        return self.log_dir / f"{host.hostname}.log"

    def start_runner(self, host: Host) -> None:
        with self.log(host).open("ab") as log:
            self.runners[host.label] = subprocess.Popen(
                host.command([sys.executable, "-c", RUNNER]),
                cwd=REPO,
                env=self.env(host),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def workers(self) -> dict[str, int]:
        """Worker processes that have registered their runner context, per hostname."""
        rows = self.query(
            "SELECT hostname, count(*) FROM pynenc_runner_context "
            "WHERE app_id = %s AND runner_cls = 'PPRWorker' GROUP BY hostname",
            (self.app_id,),
        )
        return {str(hostname): int(count) for hostname, count in rows}

    def start(self) -> None:
        """Start a runner on every host and wait until all their workers are up."""
        for host in self.hosts:
            self.start_runner(host)
        wanted = {host.hostname: self.workers_per_host for host in self.hosts}

        def up() -> bool:
            self.check_runners_alive()
            workers = self.workers()
            return all(workers.get(name, 0) >= count for name, count in wanted.items())

        wait_until(
            up, STARTUP_SECONDS, lambda: f"workers up {self.workers()}, wanted {wanted}", 0.25
        )

    def check_runners_alive(self, *, except_labels: tuple[str, ...] = ()) -> None:
        for label, process in self.runners.items():
            if label not in except_labels and process.poll() is not None:
                host = self.by_label[label]
                pytest.fail(
                    f"the runner on {host.hostname} exited with {process.returncode}:\n"
                    f"{self.log_tail(host)}"
                )

    def log_tail(self, host: Host, lines: int = 40) -> str:
        path = self.log(host)
        text = path.read_text(errors="replace") if path.exists() else "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self, host: Host) -> list[int]:
        """SIGKILL every process of ``host`` (runner, workers, pynenc's manager)."""
        pids = host.kill_all(signal.SIGKILL)
        if process := self.runners.get(host.label):
            process.wait(timeout=30)
        return pids

    def stop(self) -> None:
        for host in self.hosts:
            self.kill(host)


@pytest.fixture
def cluster(
    link_postgres: LinkPostgres, hosts: list[Host], request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """A fresh database (migrated, with the task's side-effect tables) and its runners."""
    token = uuid.uuid4().hex[:8]
    database = f"multihost_{token}"
    link_postgres.new_database(database)
    # Owned by the application role, which the task connects as.
    link_postgres.execute(f"SET ROLE {APP_ROLE};{tasks.DDL}", database=database)
    log_dir = Path(tempfile.mkdtemp(prefix="pynenc-multihost-"))
    handle = Cluster(link_postgres, hosts, database, f"multihost-{token}", log_dir)
    try:
        yield handle
    finally:
        handle.stop()
        dispose_all()
        link_postgres.drop_database(database)
        if request.node.stash.get(FAILED, False):
            print(f"runner logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture
def client(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Pynenc:
    """The app of this process (the root namespace), configured as the runners are.

    It reaches Postgres at the root side of the first host's link, and the task is
    bound to it for the test.
    """
    for name in os.environ:
        if name.startswith("PYNENC__"):
            monkeypatch.delenv(name)
    for name, value in cluster.env(cluster.hosts[0], runner=False).items():
        if name.startswith("PYNENC__"):
            monkeypatch.setenv(name, value)
    app = Pynenc()
    monkeypatch.setattr(tasks.record, "app", app)
    return app
