"""Small SQL-text helpers shared by every component's statements.

Table and column names come from :mod:`pynenc_postgres.db.tables`; only the schema is
configurable, so it is the one identifier that must be quoted. Values are always bound
as parameters, never formatted into the text.
"""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (``"my schema"``), safe for any characters."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """``table`` in ``schema``, e.g. ``"public".pynenc_invocation``."""
    return f"{quote_ident(schema)}.{table}"


def escape_like(text: str) -> str:
    """Escape ``LIKE`` wildcards so ``text`` matches literally (escape character ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
