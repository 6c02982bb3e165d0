"""The migration ``lock_timeout``: it reaches the migration, and a blocked migration gives up.

A test-only revision, added on top of a copy of the shipped scripts (as in
``newer_scripts``), records the ``lock_timeout`` it runs with and then alters
``pynenc_invocation``, which needs an ACCESS EXCLUSIVE lock: any session reading the
table in an open transaction blocks it, as a busy application does.
"""

from __future__ import annotations

import shutil
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pynenc import PynencBuilder

from pynenc_postgres.cli import main
from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings
from tests.waiting import DEFAULT_TIMEOUT, wait_until

REVISION = '''\
"""Test-only revision: record the lock_timeout, then take an ACCESS EXCLUSIVE lock.

Revision ID: {revision}
Revises: {down_revision}
"""

from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE pynenc_test_seen_lock_timeout AS "
        "SELECT current_setting('lock_timeout') AS lock_timeout"
    )
    op.execute("ALTER TABLE pynenc_invocation ADD COLUMN test_only_extra text")


def downgrade() -> None:
    op.execute("ALTER TABLE pynenc_invocation DROP COLUMN test_only_extra")
    op.execute("DROP TABLE pynenc_test_seen_lock_timeout")
'''


@pytest.fixture
def locking_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shipped scripts plus the locking revision, used by every schema function."""
    copy = tmp_path / "migrations"
    shutil.copytree(schema.migrations_path(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    old_head = schema.head_revision()
    new_head = f"{int(old_head) + 1:04d}"
    (copy / "versions" / f"{new_head}_test_only_lock.py").write_text(
        textwrap.dedent(REVISION.format(revision=new_head, down_revision=old_head))
    )
    monkeypatch.setattr(schema, "migrations_path", lambda: copy)
    return new_head


def seen_lock_timeout(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT lock_timeout FROM pynenc_test_seen_lock_timeout").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def reader(database_url: str) -> Iterator[threading.Event]:
    """A session that reads pynenc_invocation in an open transaction until released."""
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with psycopg.connect(database_url) as conn:
            conn.execute("SELECT count(*) FROM pynenc_invocation").fetchone()
            holding.set()
            release.wait(DEFAULT_TIMEOUT)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(DEFAULT_TIMEOUT), "the reading session never started"
        yield release
    finally:
        release.set()
        thread.join(DEFAULT_TIMEOUT)


def test_the_configured_lock_timeout_reaches_the_migration(
    database_url: str, locking_scripts: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYNENC__POSTGRES_MIGRATION_LOCK_TIMEOUT_MS", "4321")
    assert main(["db", "upgrade", "--url", database_url]) == 0
    assert schema.current(DatabaseSettings(url=database_url)) == locking_scripts
    assert seen_lock_timeout(database_url) == "4321ms"


def test_auto_migrate_uses_the_app_configured_lock_timeout(
    database_url: str, locking_scripts: str
) -> None:
    # Through the app's own config values: Alembic's env.py would otherwise fall back
    # to the environment (where nothing is set), so only the handed-over value gives this.
    app = (
        PynencBuilder()
        .memory()
        .postgres_state_backend(url=database_url, auto_migrate=True)
        .custom_config(postgres_migration_lock_timeout_ms=2345)
        .build()
    )
    assert app.state_backend.get_history("anything") == []
    assert seen_lock_timeout(database_url) == "2345ms"


@pytest.mark.parametrize(("configured", "seen"), [(None, "10s"), (1234, "1234ms"), (0, "0")])
def test_schema_upgrade_runs_with_the_settings_lock_timeout(
    database_url: str, locking_scripts: str, configured: int | None, seen: str
) -> None:
    settings = DatabaseSettings(url=database_url)
    if configured is not None:
        settings = DatabaseSettings(url=database_url, migration_lock_timeout_ms=configured)
    schema.upgrade(settings)
    assert seen_lock_timeout(database_url) == seen


def test_a_blocked_migration_gives_up_after_the_lock_timeout_with_a_clear_message(
    database_url: str,
    locking_scripts: str,
    reader: threading.Event,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = DatabaseSettings(url=database_url)
    before = schema.current(settings)
    monkeypatch.setenv("PYNENC__POSTGRES_MIGRATION_LOCK_TIMEOUT_MS", "300")
    started = time.perf_counter()
    code = main(["db", "upgrade", "--url", database_url])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2, err
    # The server cancelled the lock wait once the configured 300 ms had passed.
    assert elapsed >= 0.3
    assert "lock" in err and "postgres_migration_lock_timeout_ms" in err, err
    assert "300 ms" in err, err
    assert "another session" in err and "ALTER TABLE pynenc_invocation" in err, err
    # Nothing of the migration stays: it ran in one transaction.
    assert schema.current(settings) == before

    # Once the table is free, the same command succeeds.
    reader.set()
    wait_until(
        lambda: main(["db", "upgrade", "--url", database_url]) == 0,
        "the upgrade once the reading session has ended",
    )
    assert schema.current(settings) == locking_scripts
