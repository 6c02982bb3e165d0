"""Connection options that libpq refuses, found before anything connects.

libpq checks the values of its options (``sslmode``, ``target_session_attrs``,
``port``, ``require_auth``, a ``service`` that is not defined, ...) when a connection
starts, before it opens a socket. A wrong value then fails every connection attempt, and
the failure looks like an unreachable server. :func:`check_options` runs that same check
when the settings are made, with libpq itself, so every option of every libpq version is
covered: it starts a connection with every host replaced by an address that libpq cannot
parse, which stops libpq at its first network step. If libpq fails before that step, the
options are at fault.

Options that libpq reads only once it has a socket (``keepalives``,
``tcp_user_timeout``) are recognised in the error of the first connection instead
(:func:`option_mistake`).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Any

from pynenc_postgres.db import urls
from pynenc_postgres.db.errors import PostgresConfigError

# Not a numeric address, so libpq gives up on it without a DNS lookup or a socket.
_UNPARSEABLE = "pynenc-option-check"

# What libpq and psycopg put before the reason a connection failed.
_PREFIXES = re.compile(
    r"^(?:connection is bad: |connection failed: )?(?:connection to server .*? failed: )?", re.S
)


def check_options(raw: str) -> None:
    """Raise :class:`PostgresConfigError` when libpq refuses the options of ``raw``.

    ``raw`` must already have passed :func:`pynenc_postgres.db.urls.parse`. The
    environment variables libpq reads (``PGSSLMODE``, ...) count too, as they do for
    every connection.

    :raises PostgresConfigError: names the option to fix, never a secret.
    """
    refusal = _refusal(raw, _libpq_environment())
    if refusal is not None:
        raise PostgresConfigError(refusal)


def option_mistake(message: str) -> str | None:
    """The message of a :class:`PostgresConfigError` for a connection error that names a
    libpq option it could not accept, or None for any other error."""
    detail = _reason(message)
    if not re.search(r'for connection option "|invalid "?\w+"? value|invalid port number', detail):
        return None
    return _message(detail, _named_keywords(detail), params={})


def _libpq_environment() -> tuple[tuple[str, str], ...]:
    """The ``PG*`` variables of the environment (part of the cache key of a check)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PG")))


@lru_cache(maxsize=64)
def _refusal(raw: str, environment: tuple[tuple[str, str], ...]) -> str | None:
    import psycopg
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict, make_conninfo, timeout_from_conninfo

    env = dict(environment)
    try:
        params = conninfo_to_dict(urls.libpq_url(raw))
        timeout_from_conninfo(params)  # psycopg reads connect_timeout itself
    except psycopg.ProgrammingError:
        bad = params.get("connect_timeout")
        return (
            f"postgres_url has connect_timeout={bad!r}, which is not a number of seconds. "
            "Check connect_timeout in postgres_url, or leave it out and set "
            "postgres_connect_timeout."
        )
    except psycopg.Error:
        return None  # the URL itself is refused: reported where it is read
    hosts = _count(params.get("host") or env.get("PGHOST"))
    addresses = _count(params.get("hostaddr") or env.get("PGHOSTADDR"))
    probe = {
        **params,
        "host": ",".join(["/nonexistent"] * (hosts or addresses or 1)),
        "hostaddr": ",".join([_UNPARSEABLE] * (addresses or hosts or 1)),
    }
    pgconn = pq.PGconn.connect_start(make_conninfo("", **probe).encode())
    try:
        failed = pgconn.status == pq.ConnStatus.BAD
        message = pgconn.error_message.decode("utf-8", "replace").strip()
    finally:
        pgconn.finish()
    if not failed or _UNPARSEABLE in message or not message:
        return None
    detail = _reason(message)
    return _message(detail, _named_keywords(detail), params, env)


def _count(value: Any) -> int:
    return len(str(value).split(",")) if value else 0


def _reason(message: str) -> str:
    """libpq's reason, without the "connection to server at ... failed:" in front of it."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return _PREFIXES.sub("", lines[-1] if lines else message).strip()


def _named_keywords(detail: str) -> tuple[str, ...]:
    """The libpq keywords a message names: quoted as the option, then in its words."""
    known = urls.known_keywords()
    quoted = re.findall(r'(?:option|invalid) "(\w+)"', detail)
    words = re.findall(r"[a-z_]+", re.sub(r'"[^"]*"', " ", detail))
    if "port number" in detail:
        words.insert(0, "port")
    return tuple(dict.fromkeys(name for name in quoted + words if name in known))


def _message(
    detail: str,
    keywords: tuple[str, ...],
    params: dict[str, Any],
    env: dict[str, str] | None = None,
) -> str:
    in_url, in_env = [], []
    for keyword in keywords:
        envvar = urls.environment_variables().get(keyword)
        if keyword not in params and envvar and envvar in (env or {}):
            in_env.append(f"{keyword} (set by the environment variable {envvar})")
        else:
            in_url.append(keyword)
    places = [f"{' and '.join(in_url)} in postgres_url"] if in_url else []
    places += in_env
    where = " and ".join(places) or "the options of postgres_url (and the PG* environment)"
    return (
        f"libpq refuses the connection options of postgres_url: {_masked(detail, params)}. "
        f"Check {where}; libpq's options and their values are listed at {urls.KEYWORDS_DOC}."
    )


def _masked(text: str, params: dict[str, Any]) -> str:
    """``text`` with the value of every secret option replaced by ``***``."""
    secrets = sorted(
        (str(v) for k, v in params.items() if k in urls.secret_keywords() and v),
        key=len,
        reverse=True,
    )
    for secret in secrets:
        text = text.replace(secret, urls.MASK)
    return text
