"""``postgres_statement_timeout_ms``: a positive value is sent, 0 sends nothing.

With 0 the server's own ``statement_timeout`` stays in force: the one set for the role (or
the database, or in ``postgresql.conf``). That is what README.md, docs/operations.md and
the docstrings say (``tests/test_docs_settings.py`` holds them to it).
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.settings import DatabaseSettings


@pytest.mark.parametrize("apply_settings", ["startup", "transaction"])
def test_zero_keeps_the_roles_statement_timeout(database_url: str, apply_settings: str) -> None:
    role_setting = "ALTER ROLE CURRENT_USER IN DATABASE {} SET statement_timeout = '4321ms'"
    with psycopg.connect(database_url, autocommit=True) as admin:
        database = admin.info.dbname
        admin.execute(sql.SQL(role_setting).format(sql.Identifier(database)))
    try:

        def timeout(ms: int) -> str:
            settings = DatabaseSettings(
                url=database_url, statement_timeout_ms=ms, apply_settings=apply_settings
            )
            row = get_database(settings).fetchone("SHOW statement_timeout", ())
            assert row is not None
            return str(row[0])

        assert timeout(0) == "4321ms"  # nothing sent: the role's setting applies
        assert timeout(1500) == "1500ms"  # sent: it wins over the role's
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER ROLE CURRENT_USER IN DATABASE {} RESET statement_timeout").format(
                    sql.Identifier(database)
                )
            )


def test_a_migration_lock_timeout_of_zero_sends_none() -> None:
    """Like the statement timeout, 0 leaves the role's or server's ``lock_timeout``."""
    from pynenc_postgres.db.schema import offline_sql

    url = "postgresql://offline/offline"
    assert "SET LOCAL lock_timeout = '2500ms'" in offline_sql(
        DatabaseSettings(url=url, migration_lock_timeout_ms=2500), "head"
    )
    assert "lock_timeout" not in offline_sql(
        DatabaseSettings(url=url, migration_lock_timeout_ms=0), "head"
    )
