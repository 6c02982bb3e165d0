"""``pynenc-postgres``: schema migrations, retention, inspection, metrics and the demo.

The database comes from ``--url`` or from pynenc config (``PYNENC__POSTGRES_URL``,
``[tool.pynenc]`` in ``pyproject.toml``, or the file named by ``PYNENC__FILEPATH``).
Each command group is a module of this package that registers its own subparser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import alembic.util
import sqlalchemy.exc

from pynenc_postgres.cli.common import settings_from_args
from pynenc_postgres.cli.db import add_db_commands
from pynenc_postgres.cli.demo import add_demo_command
from pynenc_postgres.cli.inspect import add_inspect_commands
from pynenc_postgres.cli.metrics import add_metrics_command
from pynenc_postgres.cli.purge import add_purge_command
from pynenc_postgres.db.errors import PostgresPluginError, translate

CommandRegistrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# Each command group registers its own subparser; add new groups here.
COMMAND_GROUPS: list[CommandRegistrar] = [
    add_db_commands,
    add_purge_command,
    add_inspect_commands,
    add_demo_command,
    add_metrics_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pynenc-postgres",
        description="PostgreSQL plugin for pynenc: schema, retention, inspection, metrics, demo.",
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
