"""Sharing a database with an application's own Alembic history, and a custom schema."""

from __future__ import annotations

import textwrap
from pathlib import Path

import psycopg
from alembic.config import Config
from pynenc import PynencBuilder
from pynenc.call import Call
from pynenc.invocation import DistributedInvocation
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from alembic import command
from pynenc_postgres.db import schema
from pynenc_postgres.db.models import VERSION_TABLE, Base
from pynenc_postgres.db.settings import DatabaseSettings, parse_url
from tests.migrations import race_child
from tests.migrations.conftest import catalog, pynenc_relations

APP_ENV = """\
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""

APP_REVISION = '''\
"""{doc}"""
from alembic import op

revision = "{revision}"
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("{up}")


def downgrade() -> None:
    op.execute("{down}")
'''


class OtherApplication:
    """A throwaway application with its own Alembic environment and history.

    It uses Alembic's defaults: the ``alembic_version`` table in ``public``.
    """

    def __init__(self, folder: Path, url: str) -> None:
        self.url = url
        (folder / "versions").mkdir(parents=True)
        (folder / "env.py").write_text(APP_ENV)
        revisions = [
            ("a1b2c3d4e5f6", None, "CREATE TABLE orders (id bigint PRIMARY KEY, note text)",
             "DROP TABLE orders"),
            ("f6e5d4c3b2a1", "a1b2c3d4e5f6", "CREATE INDEX ix_orders_note ON orders (note)",
             "DROP INDEX ix_orders_note"),
            ("0a0b0c0d0e0f", "f6e5d4c3b2a1", "ALTER TABLE orders ADD COLUMN total numeric",
             "ALTER TABLE orders DROP COLUMN total"),
        ]  # fmt: skip
        for revision, down, up, undo in revisions:
            (folder / "versions" / f"{revision}_step.py").write_text(
                textwrap.dedent(
                    APP_REVISION.format(
                        doc=f"application step {revision}",
                        revision=revision,
                        down_revision=down,
                        up=up,
                        down=undo,
                    )
                )
            )
        self.config = Config()
        self.config.set_main_option("script_location", str(folder))

    def upgrade(self, revision: str) -> None:
        engine = create_engine(parse_url(self.url), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                self.config.attributes["connection"] = conn
                command.upgrade(self.config, revision)
        finally:
            engine.dispose()

    def version(self) -> list[tuple[str, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute("SELECT version_num FROM public.alembic_version").fetchall()


def _application_state(url: str) -> dict[str, object]:
    """Everything of the application: its objects, its rows, its version row."""
    objects = {
        name: {row for row in rows if not any("pynenc" in value for value in row)}
        for name, rows in catalog(url).items()
    }
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT * FROM orders ORDER BY id").fetchall()
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return {"objects": objects, "rows": rows, "version": version}


def test_an_application_history_is_neither_read_nor_written(
    empty_database_url: str, tmp_path: Path
) -> None:
    app = OtherApplication(tmp_path / "app_migrations", empty_database_url)
    app.upgrade("f6e5d4c3b2a1")
    with psycopg.connect(empty_database_url) as conn:
        conn.execute("INSERT INTO orders VALUES (1, 'first'), (2, 'second')")
    before = _application_state(empty_database_url)
    settings = DatabaseSettings(url=empty_database_url)

    # The application's version row names a revision we do not know; we never look at it.
    assert schema.current(settings) is None
    schema.upgrade(settings)
    assert schema.current(settings) == schema.head_revision()
    assert _application_state(empty_database_url) == before
    schema.check_autogenerate(settings)  # the application's tables are not "drift"

    schema.downgrade(settings, "base")
    assert pynenc_relations(empty_database_url) <= {
        ("public", VERSION_TABLE),
        ("public", f"{VERSION_TABLE}_pkc"),
    }
    assert _application_state(empty_database_url) == before

    # The application migrates on, unaware of us, and we upgrade again beside it.
    app.upgrade("head")
    assert app.version() == [("0a0b0c0d0e0f",)]
    schema.upgrade(settings)
    assert app.version() == [("0a0b0c0d0e0f",)]
    assert schema.current(settings) == schema.head_revision()


def test_a_custom_schema_holds_every_object_the_version_table_included(
    empty_database_url: str,
) -> None:
    public_before = {row for row in catalog(empty_database_url)["relations"] if row[0] == "public"}
    settings = DatabaseSettings(url=empty_database_url, schema="pynenc")
    schema.upgrade(settings)

    relations = catalog(empty_database_url)["relations"]
    ours = {(nsp, rel) for nsp, rel, _ in relations if nsp == "pynenc"}
    assert ("pynenc", VERSION_TABLE) in ours
    assert {rel for _, rel in ours} >= {table.name for table in Base.metadata.sorted_tables}
    assert {row for row in relations if row[0] == "public"} == public_before
    assert {nsp for nsp, _ in pynenc_relations(empty_database_url)} == {"pynenc"}
    assert schema.current(settings) == schema.head_revision()
    assert schema.current(DatabaseSettings(url=empty_database_url)) is None

    app = (
        PynencBuilder()
        .app_id("custom-schema")
        .memory()
        .postgres_state_backend(url=empty_database_url, schema="pynenc")
        .build()
    )
    race_child.add.app = app
    invocation: DistributedInvocation = DistributedInvocation.isolated(
        Call(race_child.add, race_child.arguments())
    )
    app.state_backend.upsert_invocations([invocation])
    assert app.state_backend.get_invocation(invocation.invocation_id) == invocation
    with psycopg.connect(empty_database_url) as conn:
        count = conn.execute("SELECT count(*) FROM pynenc.pynenc_invocation").fetchone()
    assert count == (1,)

    schema.downgrade(settings, "base")
    assert {(nsp, rel) for nsp, rel, _ in catalog(empty_database_url)["relations"]} <= {
        ("pynenc", VERSION_TABLE),
        ("pynenc", f"{VERSION_TABLE}_pkc"),
    } | {(nsp, rel) for nsp, rel, _ in public_before}
