"""Python values as every component binds them to statements."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """pynenc treats naive datetimes as UTC; Postgres must too, whatever the session zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
