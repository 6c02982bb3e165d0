"""What every command shares: the database it works on, and argument types."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from pynenc_postgres.db.errors import PostgresConfigError
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


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="database URL (default: postgres_url from pynenc config / PYNENC__POSTGRES_URL)",
    )
    parser.add_argument("--schema", help="Postgres schema of the pynenc tables (default: public)")


def where(settings: DatabaseSettings) -> str:
    return f"{settings.server} (schema {settings.schema})"


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def statuses(values: list[str] | None) -> list[str] | None:
    """``--status`` values, repeated or comma-separated, as one list (None: not given)."""
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part.strip()]


def parse_since(text: str) -> datetime:
    """A duration back from now (``2h``) or an ISO timestamp (naive means UTC)."""
    from pynenc_postgres.retention import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except PostgresConfigError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PostgresConfigError(
            f"--since {text!r} is neither a duration (90m, 12h, 2d) nor an ISO timestamp "
            "(2026-01-31T12:00:00)."
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
