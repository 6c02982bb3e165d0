"""``pynenc-postgres db``: create, migrate and check the schema."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pynenc_postgres.cli.common import add_connection_options, settings_from_args, where
from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings


@contextmanager
def _show_migration_steps() -> Iterator[None]:
    """Print Alembic's "Running upgrade 0001 -> 0002" lines, so the operator sees each step.

    Only while the command runs: a later call in the same process (a wrapper, a test)
    neither prints them nor writes to a ``sys.stderr`` that may be gone by then.
    """
    logger = logging.getLogger("alembic.runtime.migration")
    level = logger.level
    handler = None
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(lambda record: record.getMessage().startswith("Running "))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)
        if handler is not None:
            logger.removeHandler(handler)


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _show_migration_steps():
        schema.upgrade(settings, args.revision)
    print(f"{where(settings)} is at {schema.current(settings) or 'base'}")
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _show_migration_steps():
        schema.downgrade(settings, args.revision)
    print(f"{where(settings)} is at {schema.current(settings) or 'base'}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    status = schema.status(settings_from_args(args))
    print(
        f"{status.current or 'none (schema not created)'} ({status.state}; head is {status.head})"
    )
    return 0


def _db_history(args: argparse.Namespace) -> int:
    """The shipped revisions, newest first; with ``--url`` or ``--schema``, where that
    database stands among them (read only, as ``db current``)."""
    current = None
    if args.url or args.schema:
        settings = settings_from_args(args)
        status = schema.status(settings)
        current = status.current
        print(f"{where(settings)}: {current or 'none'} ({status.state}; head is {status.head})")
    for revision in schema.script_directory().walk_revisions():
        marker = " (head)" if revision.is_head else ""
        if revision.revision == current:
            marker += " (current)"
        print(f"{revision.down_revision or 'base'} -> {revision.revision}{marker}: {revision.doc}")
    return 0


def _db_check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    status = schema.status(settings)
    error = schema.schema_error(status, settings)
    if error is None:
        print(f"OK: {where(settings)} is at head {status.head}")
        return 0
    print(f"NOT AT HEAD ({status.state}): {error}", file=sys.stderr)
    return 1


def _db_sql(args: argparse.Namespace) -> int:
    from pynenc_postgres.conf import ConfigPostgres

    conf = ConfigPostgres()
    # Offline SQL needs no server; a placeholder URL keeps the settings valid.
    settings = DatabaseSettings(
        url="postgresql://offline/offline",
        schema=args.schema or conf.postgres_schema,
        migration_lock_timeout_ms=conf.postgres_migration_lock_timeout_ms,
    )
    sys.stdout.write(schema.offline_sql(settings, args.range))
    return 0


def add_db_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="create, migrate and check the schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)

    upgrade = db_sub.add_parser("upgrade", help="migrate up (default: to head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    add_connection_options(upgrade)
    upgrade.set_defaults(handler=_db_upgrade)

    downgrade = db_sub.add_parser("downgrade", help="migrate down to REVISION (base: drop all)")
    downgrade.add_argument("revision")
    add_connection_options(downgrade)
    downgrade.set_defaults(handler=_db_downgrade)

    current = db_sub.add_parser("current", help="show the database's revision")
    add_connection_options(current)
    current.set_defaults(handler=_db_current)

    history = db_sub.add_parser(
        "history",
        help="list the shipped revisions (with --url or --schema: mark the database's)",
        description=(
            "List the revisions this package ships, newest first, without a database. With "
            "--url or --schema, also read that database's revision (never changing it) and "
            "mark it."
        ),
    )
    add_connection_options(history)
    history.set_defaults(handler=_db_history)

    check = db_sub.add_parser("check", help="exit 1 unless the database is at head")
    add_connection_options(check)
    check.set_defaults(handler=_db_check)

    sql = db_sub.add_parser("sql", help="print migration SQL for review, touching no database")
    sql.add_argument("range", metavar="[FROM:]TO", help="e.g. head, or 0001:head, or head:base")
    sql.add_argument("--schema", help="Postgres schema of the pynenc tables (default: public)")
    sql.set_defaults(handler=_db_sql)
