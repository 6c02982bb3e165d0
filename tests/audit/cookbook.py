"""The SQL blocks of docs/audit.md, as the tests run them.

A block is a fenced ``sql`` block whose first line is ``-- name: NAME``. Values are
psql variables written ``:'name'``; :func:`render` substitutes them as quoted literals,
as ``psql -v name=value`` does.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
from psycopg import sql

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"

_BLOCK = re.compile(r"^```sql\n-- name: (\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_VARIABLE = re.compile(r":'(\w+)'")


def blocks() -> dict[str, str]:
    """Every named SQL block of the page, by name, in page order."""
    found: dict[str, str] = {}
    for name, body in _BLOCK.findall(DOC.read_text()):
        assert name not in found, f"duplicate block name {name}"
        found[name] = body
    return found


def cookbook() -> dict[str, str]:
    """The audit queries (every named block except the GRANT scripts)."""
    return {name: body for name, body in blocks().items() if not name.startswith("grants_")}


def variables(query: str) -> set[str]:
    return set(_VARIABLE.findall(query))


def render(query: str, values: dict[str, str], conn: psycopg.Connection) -> str:
    """Substitute ``:'name'`` variables with quoted literals."""

    def literal(match: re.Match[str]) -> str:
        return sql.Literal(values[match.group(1)]).as_string(conn)

    return _VARIABLE.sub(literal, query)
