"""The first import of psycopg, with an error that says which extra to install.

psycopg needs a libpq: the system's (for its pure-Python and C builds) or the one inside
its precompiled ``psycopg[binary]`` build. Which one is the application's choice, so
pynenc-postgres depends on plain ``psycopg`` and offers the binary build as its
``binary`` extra. The package's ``__init__`` imports this module before anything else.
"""

from __future__ import annotations

try:
    import psycopg
except ImportError as exc:
    reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else repr(exc)
    raise ImportError(
        f"pynenc-postgres cannot load psycopg, its PostgreSQL driver ({reason}). psycopg "
        "needs a libpq: install its precompiled build with pip install "
        "'pynenc-postgres[binary]', or install the system's libpq (for example apt-get "
        "install libpq5, or brew install libpq)."
    ) from exc

__all__ = ["psycopg"]
