"""The SQL and Python blocks of docs/audit.md, as the tests run them.

A SQL block is a fenced ``sql`` block whose first line is ``-- name: NAME``. Values are
psql variables written ``:'name'``; :func:`render` substitutes them as quoted literals,
as ``psql -v name=value`` does.

A Python block is a fenced ``python`` block whose first line is ``# name: NAME``. The
one named ``imports`` holds the imports of the cookbook's forms; a form named like a
SQL block assigns its ``select()`` to ``query`` and reads its values from variables
named like the psql ones (:func:`python_query` builds it). Other named Python blocks
are recipes that define functions (:func:`recipe`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"

_BLOCK = re.compile(r"^```sql\n-- name: (\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_VARIABLE = re.compile(r":'(\w+)'")
_PYTHON_BLOCK = re.compile(r"^```python\n# name: (\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# Values that the Python forms take as numbers, not strings.
_PYTHON_TYPES: dict[str, Callable[[str], Any]] = {"minutes": int}


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


def python_blocks() -> dict[str, str]:
    """Every named Python block of the page, by name, in page order."""
    found: dict[str, str] = {}
    for name, body in _PYTHON_BLOCK.findall(DOC.read_text()):
        assert name not in found, f"duplicate Python block name {name}"
        found[name] = body
    return found


def python_values(values: dict[str, str]) -> dict[str, Any]:
    """The psql variables' values as the Python forms take them."""
    return {name: _PYTHON_TYPES.get(name, str)(value) for name, value in values.items()}


def python_query(name: str, values: dict[str, str]) -> Any:
    """The ``query`` that the Python form ``name`` builds with these values."""
    namespace: dict[str, Any] = python_values(values)
    exec(python_blocks()["imports"], namespace)
    exec(python_blocks()[name], namespace)
    return namespace["query"]


def recipe(name: str) -> dict[str, Any]:
    """The names that the Python recipe block ``name`` defines."""
    namespace: dict[str, Any] = {}
    exec(python_blocks()["imports"], namespace)
    exec(python_blocks()[name], namespace)
    return namespace
