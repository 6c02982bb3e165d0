"""Connection pressure: a full pool, a server out of slots, and a transaction-mode pooler.

The server is this module's own, with ``max_connections`` set low.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from pynenc_postgres.db.engine import Database
from pynenc_postgres.db.errors import (
    PostgresPoolTimeoutError,
    PostgresTooManyConnectionsError,
    PostgresUnavailableError,
)
from pynenc_postgres.state_backend import PostgresStateBackend
from tests.reliability.conftest import APP_PASSWORD, APP_ROLE, Dedicated, build_app
from tests.reliability.server import free_port
from tests.reliability.tasks import new_invocation
from tests.waiting import DEFAULT_TIMEOUT, blocked_in_wait, wait_until

MAX_CONNECTIONS = 12  # one of them reserved for superusers
RETRY_LOG = "Transient Postgres error"


def db_of(app: Any) -> Database:
    backend = app.state_backend
    assert isinstance(backend, PostgresStateBackend)
    return backend.db


def sessions(dedicated: Dedicated, application_name: str) -> int:
    rows = dedicated.server.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
    )
    return int(rows[0][0])  # type: ignore[call-overload]


def wait_for_sessions(dedicated: Dedicated, application_name: str, count: int) -> None:
    """Poll until ``count`` sessions carry the name: a closed session's server process
    leaves ``pg_stat_activity`` on its own time, after the client has closed it."""
    wait_until(
        lambda: sessions(dedicated, application_name) == count,
        lambda: (
            f"{count} sessions named {application_name} "
            f"(found {sessions(dedicated, application_name)})"
        ),
    )


def other_client_sessions(dedicated: Dedicated) -> int:
    rows = dedicated.server.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    return int(rows[0][0])  # type: ignore[call-overload]


def test_full_pool_waits_for_a_slot_then_fails_clearly(dedicated: Dedicated) -> None:
    name = f"pool-{uuid.uuid4().hex[:8]}"
    app = build_app(
        dedicated.app_url(dedicated.new_database()),
        application_name=name,
        pool_size=2,
        max_overflow=0,
        pool_timeout=0.5,
    )
    invocation = new_invocation(app, "pool")
    db = db_of(app)
    with ExitStack() as held:
        for _ in range(2):
            held.enter_context(db.connection())
        started = time.perf_counter()
        with pytest.raises(PostgresPoolTimeoutError, match="postgres_pool_timeout") as info:
            app.state_backend.get_invocation(invocation.invocation_id)
        waited = time.perf_counter() - started
        assert waited >= 0.5  # it waited for the pool timeout before giving up
        assert "postgres_pool_size" in str(info.value)
        assert sessions(dedicated, name) == 2

        # A call waiting for a slot gets the first one released within the timeout.
        got: list[Any] = []
        waiter = threading.Thread(
            target=lambda: got.append(app.state_backend.get_invocation(invocation.invocation_id))
        )
        waiter.start()
        wait_until(lambda: blocked_in_wait(waiter), "the call waiting for a pooled connection")
        held.close()
        waiter.join(DEFAULT_TIMEOUT)
    assert got == [invocation]
    assert sessions(dedicated, name) == 2  # nothing leaked: still the pool's two sessions
    db.dispose()
    wait_for_sessions(dedicated, name, 0)


@contextmanager
def fillers(dedicated: Dedicated) -> Iterator[list[psycopg.Connection]]:
    """Open application sessions until the server refuses more.

    Sessions closed just before still hold their slots until their server processes
    exit, so filling starts once no other client session is left.
    """
    held: list[psycopg.Connection] = []
    url = dedicated.app_url("postgres")
    wait_until(lambda: other_client_sessions(dedicated) == 0, "every earlier session gone")
    try:
        while True:
            try:
                held.append(psycopg.connect(url, autocommit=True, application_name="filler"))
            except psycopg.OperationalError:
                break
        yield held
    finally:
        for conn in held:
            conn.close()


def test_server_out_of_slots_retries_then_fails_clearly_and_leaks_nothing(
    dedicated: Dedicated, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"slots-{uuid.uuid4().hex[:8]}"
    database = dedicated.new_database()
    app = build_app(
        dedicated.app_url(database),
        application_name=name,
        pool_size=2,
        max_overflow=0,
        retry_attempts=3,
        retry_initial_delay=0.05,
    )
    invocation = new_invocation(app, "slots")
    db_of(app).dispose()
    wait_for_sessions(dedicated, name, 0)
    caplog.set_level(logging.WARNING, logger="pynenc_postgres")
    with ExitStack() as stack:
        held = stack.enter_context(fillers(dedicated))
        assert len(held) == MAX_CONNECTIONS - 1  # all but the superuser slot
        with pytest.raises(PostgresTooManyConnectionsError) as info:
            app.state_backend.get_invocation(invocation.invocation_id)
        message = str(info.value)
        assert "no free connection slots" in message
        assert "max_connections" in message
        assert "gave up after 3 attempts" in message
        assert APP_PASSWORD not in message + caplog.text
        assert caplog.text.count(RETRY_LOG) == 2
        assert sessions(dedicated, name) == 0

        # Slots freed while a call is backing off: the call succeeds.
        slow = build_app(
            dedicated.app_url(database),
            app_id=app.app_id,
            application_name=name,
            retry_attempts=50,
            retry_initial_delay=0.05,
            retry_max_delay=0.1,
        )

        def release_once_backing_off() -> None:
            wait_until(lambda: caplog.text.count(RETRY_LOG) > 2, "the call backing off for a slot")
            for conn in held[:3]:
                conn.close()

        release = threading.Thread(target=release_once_backing_off)
        release.start()
        assert slow.state_backend.get_invocation(invocation.invocation_id) == invocation
        release.join(DEFAULT_TIMEOUT)
        assert caplog.text.count(RETRY_LOG) > 2  # it did wait for the freed slots
    # Both apps share one pool (same settings but pool size): at most their pool sizes.
    assert sessions(dedicated, name) <= 2 + 5
    db_of(app).dispose()
    db_of(slow).dispose()
    wait_for_sessions(dedicated, name, 0)


# -- a transaction-mode pooler -----------------------------------------------------

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


@pytest.fixture(scope="module")
def pgbouncer(dedicated: Dedicated) -> Iterator[int]:
    """PgBouncer in transaction mode in front of the module's server; yields its port."""
    if PGBOUNCER is None:
        # `make test` installs it (scripts/install-test-deps); CI must never skip this.
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed; scripts/install-test-deps installs it")
        pytest.skip("pgbouncer is not installed: run `make test-deps` (Debian's pgbouncer)")
    root = Path(tempfile.mkdtemp(prefix="pynenc-bouncer-"))
    port = free_port()
    (root / "users.txt").write_text(f'"{APP_ROLE}" ""\n')
    (root / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={dedicated.server.socket_dir} port={dedicated.server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root / "users.txt"}
pool_mode = transaction
default_pool_size = 1
max_client_conn = 100
logfile = {root / "pgbouncer.log"}
"""
    )
    command = [PGBOUNCER, str(root / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        entry = pwd.getpwnam(dedicated.server.system_user or "nobody")
        for path in [root, *root.iterdir()]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        command[1:1] = ["-u", entry.pw_name]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def accepts_connections() -> bool:
        assert process.poll() is None, (root / "pgbouncer.log").read_text()
        try:
            psycopg.connect(
                f"postgresql://{APP_ROLE}@127.0.0.1:{port}/postgres", prepare_threshold=None
            ).close()
        except psycopg.OperationalError:
            return False
        return True

    try:
        wait_until(accepts_connections, f"PgBouncer accepting connections on port {port}")
        yield port
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(root, ignore_errors=True)


def bouncer_url(port: int, database: str) -> str:
    return f"postgresql://{APP_ROLE}:{quote(APP_PASSWORD, safe='')}@127.0.0.1:{port}/{database}"


def test_startup_options_behind_pgbouncer_fail_clearly(
    dedicated: Dedicated, pgbouncer: int
) -> None:
    app = build_app(bouncer_url(pgbouncer, dedicated.new_database()), retry_attempts=2)
    with pytest.raises(PostgresUnavailableError, match="postgres_apply_settings=transaction"):
        app.state_backend.get_invocation("x")


def test_transaction_mode_pgbouncer_works_without_session_state(
    dedicated: Dedicated, pgbouncer: int
) -> None:
    database = dedicated.new_database()
    url = bouncer_url(pgbouncer, database)
    app = build_app(
        url,
        apply_settings="transaction",
        prepare_threshold=-1,
        statement_timeout_ms=1500,
        synchronous_commit="off",
    )
    backend = app.state_backend
    errors: list[BaseException] = []
    written: list[str] = []

    def work(number: int) -> None:
        try:
            for n in range(15):
                invocation = new_invocation(app, f"{number}-{n}")
                backend.set_result(invocation.invocation_id, n)
                assert backend.get_result(invocation.invocation_id) == n
                assert backend.get_invocation(invocation.invocation_id) == invocation
                written.append(invocation.invocation_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(written) == 60

    def settings(conn: psycopg.Connection[Any]) -> Any:
        return conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('synchronous_commit')"
        ).fetchone()

    # Each call runs with the configured settings ...
    assert db_of(app).run(settings) == ("1500ms", "off")
    # ... and leaves none behind on the one server connection that the pooler shares.
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as other:
        assert other.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert other.execute("SHOW synchronous_commit").fetchone() == ("on",)
