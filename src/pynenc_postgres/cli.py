"""``pynenc-postgres``: schema migrations, retention, inspection and the demo.

The database comes from ``--url`` or from pynenc config (``PYNENC__POSTGRES_URL``,
``[tool.pynenc]`` in ``pyproject.toml``, or the file named by ``PYNENC__FILEPATH``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import alembic.util
import sqlalchemy.exc

from pynenc_postgres.audit_cli import add_inspect_commands, add_purge_command
from pynenc_postgres.db import schema
from pynenc_postgres.db.errors import PostgresPluginError, translate
from pynenc_postgres.db.settings import DatabaseSettings


def settings_from_args(args: argparse.Namespace) -> DatabaseSettings:
    """Settings from pynenc config, overridden by ``--url`` and ``--schema``."""
    from pynenc_postgres.conf import ConfigPostgres

    conf = ConfigPostgres()
    if getattr(args, "url", None):
        conf.postgres_url = args.url
    if getattr(args, "schema", None):
        conf.postgres_schema = args.schema
    return DatabaseSettings.from_config(conf)


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="database URL (default: postgres_url from pynenc config / PYNENC__POSTGRES_URL)",
    )
    parser.add_argument("--schema", help="Postgres schema of the pynenc tables (default: public)")


# -- db ------------------------------------------------------------------------------


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


def _where(settings: DatabaseSettings) -> str:
    return f"{settings.server} (schema {settings.schema})"


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _show_migration_steps():
        schema.upgrade(settings, args.revision)
    print(f"{_where(settings)} is at {schema.current(settings) or 'base'}")
    return 0


def _db_downgrade(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with _show_migration_steps():
        schema.downgrade(settings, args.revision)
    print(f"{_where(settings)} is at {schema.current(settings) or 'base'}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    status = schema.status(settings_from_args(args))
    print(
        f"{status.current or 'none (schema not created)'} ({status.state}; head is {status.head})"
    )
    return 0


def _db_history(args: argparse.Namespace) -> int:
    for revision in schema.script_directory().walk_revisions():
        marker = " (head)" if revision.is_head else ""
        print(f"{revision.down_revision or 'base'} -> {revision.revision}{marker}: {revision.doc}")
    return 0


def _db_check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    status = schema.status(settings)
    error = schema.schema_error(status, settings)
    if error is None:
        print(f"OK: {_where(settings)} is at head {status.head}")
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


def _add_db_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="create, migrate and check the schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)

    upgrade = db_sub.add_parser("upgrade", help="migrate up (default: to head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    _add_connection_options(upgrade)
    upgrade.set_defaults(handler=_db_upgrade)

    downgrade = db_sub.add_parser("downgrade", help="migrate down to REVISION (base: drop all)")
    downgrade.add_argument("revision")
    _add_connection_options(downgrade)
    downgrade.set_defaults(handler=_db_downgrade)

    current = db_sub.add_parser("current", help="show the database's revision")
    _add_connection_options(current)
    current.set_defaults(handler=_db_current)

    history = db_sub.add_parser("history", help="list the shipped revisions")
    history.set_defaults(handler=_db_history)

    check = db_sub.add_parser("check", help="exit 1 unless the database is at head")
    _add_connection_options(check)
    check.set_defaults(handler=_db_check)

    sql = db_sub.add_parser("sql", help="print migration SQL for review, touching no database")
    sql.add_argument("range", metavar="[FROM:]TO", help="e.g. head, or 0001:head, or head:base")
    sql.add_argument("--schema", help="Postgres schema of the pynenc tables (default: public)")
    sql.set_defaults(handler=_db_sql)


# -- demo ----------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pynenc_postgres.demo import run_demo

    return run_demo(
        args.url,
        workdir=Path(args.workdir),
        schema_name=args.schema,
        monitor_port=args.monitor,
        runner_processes=args.runners,
    )


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pynenc_postgres.demo import RUNNER_PROCESSES

    demo = sub.add_parser(
        "demo",
        help="run a sample app on real runners and print an SQL audit report",
        description=(
            "Start an embedded PostgreSQL 18 (or use --url / PYNENC__POSTGRES_URL), migrate "
            "it, start pynenc runner processes on the Postgres-only stack, run a sample app "
            "on them and print an SQL audit report of which host and runner ran what."
        ),
    )
    _add_connection_options(demo)
    demo.add_argument(
        "--workdir",
        default=".pynenc-postgres",
        help="folder for the embedded server's data and the runners' logs (default: %(default)s)",
    )
    demo.add_argument(
        "--runners",
        type=_non_negative_int,
        default=RUNNER_PROCESSES,
        metavar="N",
        help=(
            "runner processes to start (default: %(default)s); 0 starts none and uses the "
            "runners already serving the database, e.g. compose's worker services"
        ),
    )
    demo.add_argument(
        "--monitor",
        nargs="?",
        type=int,
        const=8000,
        metavar="PORT",
        help="then browse the data in pynmon on PORT (default 8000) until Ctrl-C",
    )
    demo.set_defaults(handler=_demo)


# -- entry point ----------------------------------------------------------------------

CommandRegistrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# Each command group registers its own subparser; add new groups here.
COMMAND_GROUPS: list[CommandRegistrar] = [
    _add_db_commands,
    add_purge_command,
    add_inspect_commands,
    _add_demo_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pynenc-postgres",
        description="PostgreSQL plugin for pynenc: schema, retention, inspection, demo.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMAND_GROUPS:
        register(sub)
    return parser


def _server_of(args: argparse.Namespace) -> str:
    try:
        return settings_from_args(args).server
    except PostgresPluginError:
        return "the configured database"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except PostgresPluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except alembic.util.CommandError as exc:
        # Unknown revision, bad range: Alembic's message says which.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlalchemy.exc.DBAPIError as exc:
        print(f"error: {translate(exc, _server_of(args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # The commands clean up in their own ``finally`` blocks; a traceback adds nothing.
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
