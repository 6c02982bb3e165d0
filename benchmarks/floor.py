"""The raw-psycopg floor: a state backend with no database layer at all.

It is :class:`PostgresStateBackend`'s translation of pynenc objects into rows, sending the
same statements over one bare autocommit psycopg connection: no pool, no retry, no error
translation, no startup check. Driven through pynenc's public API like every other backend,
it costs what any Postgres state backend must pay on this machine: the round trips and
commits, plus pynenc's own work. The distance between it and ours is the price of our
database layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import psycopg

from pynenc_postgres.state_backend import PostgresStateBackend


class RawPsycopgFloorBackend(PostgresStateBackend):  # type: ignore[type-arg]
    """Same statements as ours, straight on one psycopg cursor (resolved by class name)."""

    @cached_property
    def _cursor(self) -> psycopg.Cursor[Any]:
        settings = self.settings
        options = (
            f"-c synchronous_commit={settings.synchronous_commit}"
            if settings.synchronous_commit
            else ""
        )
        conn = psycopg.connect(
            settings.url,
            autocommit=True,
            prepare_threshold=settings.prepare_threshold,
            options=options,
        )
        return conn.cursor()

    def _fetchone(self, query: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._cursor.execute(query, params).fetchone()
        return row

    def _fetchall(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._cursor.execute(query, params).fetchall()

    def _write(self, query: str, params: Sequence[Any]) -> None:
        self._cursor.execute(query, params)

    def close(self) -> None:
        if "_cursor" in self.__dict__:
            self._cursor.connection.close()
