"""Helpers of the migration tests: catalog snapshots, clean environments, a test-only revision."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from pynenc_postgres.db import schema
from pynenc_postgres.db.engine import dispose_all

if TYPE_CHECKING:
    from tests.conftest import PostgresServer

REPO = Path(__file__).resolve().parents[2]
VERSIONS = REPO / "alembic" / "versions"

# Relations, columns, indexes, constraints, view definitions and comments outside the
# system schemas.
_CATALOG = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%%'""",
    "columns": """
        SELECT table_schema, table_name, column_name, data_type, is_nullable,
               coalesce(column_default, '')
        FROM information_schema.columns
        WHERE table_schema NOT IN ('pg_catalog', 'information_schema')""",
    "indexes": """
        SELECT schemaname, indexname, indexdef FROM pg_indexes
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema')""",
    "constraints": """
        SELECT n.nspname, con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')""",
    "schemas": """
        SELECT nspname, '', '' FROM pg_namespace
        WHERE nspname NOT IN ('pg_catalog', 'information_schema')
          AND nspname NOT LIKE 'pg_toast%%' AND nspname NOT LIKE 'pg_temp%%'""",
    "views": """
        SELECT schemaname, viewname, definition FROM pg_views
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema')""",
    # Per-table storage parameters (fill factor, autovacuum settings).
    "storage": """
        SELECT n.nspname, c.relname, array_to_string(c.reloptions, ',')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.reloptions IS NOT NULL
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal""",
    # Comments on relations and on their columns (by name: a column dropped and added
    # again gets a new number).
    "comments": """
        SELECT n.nspname, c.relname, coalesce(a.attname, ''), d.description
        FROM pg_description d
        JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
                                AND d.objsubid > 0
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')""",
}


def catalog(url: str, *, exclude_version_table: bool = False) -> dict[str, set[tuple[str, ...]]]:
    """Every user-visible object of the database, for before/after comparisons.

    :param exclude_version_table: leave out ``pynenc_alembic_version``, which Alembic keeps
        (empty) after ``downgrade base``.
    """
    with psycopg.connect(url) as conn:
        snapshot = {
            name: {tuple(str(v) for v in row) for row in conn.execute(query).fetchall()}
            for name, query in _CATALOG.items()
        }
    if exclude_version_table:
        snapshot = {
            name: {row for row in rows if not any("pynenc_alembic_version" in v for v in row)}
            for name, rows in snapshot.items()
        }
    return snapshot


def pynenc_relations(url: str) -> set[tuple[str, str]]:
    """(schema, name) of every table and index whose name starts with ``pynenc_``."""
    return {
        (nsp, rel)
        for nsp, rel, _kind in catalog(url)["relations"]
        if rel.startswith(("pynenc_", "pk_pynenc_", "ix_pynenc_"))
    }


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without pynenc config, so a child reads only what the test sets."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYNENC__")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


EXTRA_REVISION = '''\
"""Test-only revision: one more table, so that 0001 is an older revision than head.

Revision ID: {revision}
Revises: {down_revision}
"""

from alembic import op
import sqlalchemy as sa

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pynenc_test_only_extra",
        sa.Column("app_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", name="pk_pynenc_test_only_extra"),
    )


def downgrade() -> None:
    op.drop_table("pynenc_test_only_extra")
'''


@dataclass
class NewerScripts:
    """A copy of the shipped scripts plus one test-only revision on top of their head.

    :param path: the copy's folder (env.py, script.py.mako, versions/).
    :param old_head: the shipped head, now an ancestor.
    :param new_head: the test-only revision.
    """

    path: Path
    old_head: str
    new_head: str


@pytest.fixture
def newer_scripts(tmp_path: Path) -> NewerScripts:
    """What the scripts of a future pynenc-postgres release look like to this one.

    With only one shipped revision, "behind" and "ahead" cannot be produced from the
    shipped scripts alone, and a test revision must never ship. So the tests copy the
    shipped scripts byte for byte into a temporary folder, add one revision there, and
    point :func:`pynenc_postgres.db.schema.migrations_path` at that copy (the one place
    every schema function finds the scripts). A database migrated with the shipped
    scripts is then really behind the copy; one migrated with the copy is really ahead
    of the shipped scripts.
    """
    copy = tmp_path / "migrations"
    shutil.copytree(schema.migrations_path(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    old_head = schema.head_revision()
    new_head = f"{int(old_head) + 1:04d}"
    (copy / "versions" / f"{new_head}_test_only_extra.py").write_text(
        textwrap.dedent(EXTRA_REVISION.format(revision=new_head, down_revision=old_head))
    )
    return NewerScripts(path=copy, old_head=old_head, new_head=new_head)


@dataclass
class PasswordDatabase:
    """A database owned by a role that has a password, and a URL carrying that password."""

    url: str
    password: str
    role: str


@pytest.fixture
def password_database(postgres_server: PostgresServer) -> Iterator[PasswordDatabase]:
    """An empty database owned by a new role whose password is in the URL.

    Messages are checked against this URL: the password must never appear in them.
    """
    role = f"pynenc_owner_{uuid.uuid4().hex[:8]}"
    password = f"S3cret-{uuid.uuid4().hex}"
    name = postgres_server.create_database()
    with postgres_server.admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(name), sql.Identifier(role)
            )
        )
    url = (
        make_url(postgres_server.url_for(name))
        .set(username=role, password=password)
        .render_as_string(hide_password=False)
    )
    yield PasswordDatabase(url=url, password=password, role=role)
    dispose_all()
    postgres_server.drop_database(name)
    with postgres_server.admin() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once per session from the checkout (no network)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("pynenc_postgres-*.whl")
    return wheel
