"""Postgres URLs read the way libpq reads them, with the standard library only.

psycopg hands ``postgres_url`` to libpq as configured, and libpq's own parse errors quote
the part they stumbled on, password included. So a URL is checked here first, by libpq's
grammar::

    postgresql://[user[:password]@][host][:port][,...][/dbname][?keyword=value[&...]]

Its secrets (the password of the user info, and the values of libpq's secret keywords
such as ``password`` and ``sslpassword``) are located by position, so that removing or
masking them leaves every other byte of the URL as it was configured: libpq does not
decode ``+`` as a space, and re-encoding a value can change what it means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pynenc_postgres.db.errors import PostgresConfigError

if TYPE_CHECKING:
    from psycopg.pq import ConninfoOption

ACCEPTED_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")

MASK = "***"

MISSING_URL_HELP = (
    "No Postgres URL is configured for pynenc-postgres. Set the config field "
    "postgres_url: export PYNENC__POSTGRES_URL=postgresql://user:password@host:5432/db, "
    "or call PynencBuilder().postgres(url=...), or add postgres_url to [tool.pynenc] "
    "in pyproject.toml."
)

_FORM = "postgresql://user:password@host:5432/dbname?keyword=value"
KEYWORDS_DOC = "https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS"

# Keywords whose value is a secret: libpq's own list (shown as "*" by PQconndefaults)
# and the SCRAM keys, which authenticate as well as the password they come from.
_SECRET_KEYWORDS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# libpq decodes %XX and refuses a '%' without two hex digits after it, and %00.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")
_PLAIN_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class QueryParam:
    """One ``keyword=value`` of the query string, as positions in :attr:`PostgresUrl.text`."""

    keyword: str
    start: int
    value_start: int
    end: int

    @property
    def is_secret(self) -> bool:
        return self.keyword in secret_keywords() and self.end > self.value_start


@dataclass(frozen=True)
class PostgresUrl:
    """A Postgres URL checked against libpq's grammar, with the positions of its secrets.

    :param text: the URL without surrounding whitespace.
    :param password: start and end of the user-info password, when there is one.
    :param query_start: position of the ``?``, or the URL's length when it has no query.
    :param params: the query's parameters, in order.
    """

    text: str
    password: tuple[int, int] | None
    query_start: int
    params: tuple[QueryParam, ...]

    @property
    def has_secrets(self) -> bool:
        return self.password is not None or any(p.is_secret for p in self.params)

    def without_secrets(self) -> str:
        """The URL with the password and every secret parameter removed; the rest verbatim."""
        text = self.text
        head = text[: self.query_start]
        if self.password is not None:
            start, end = self.password
            head = text[: start - 1] + text[end : self.query_start]  # drops ":password"
        if not any(p.is_secret for p in self.params):
            return head + text[self.query_start :]
        kept = [text[p.start : p.end] for p in self.params if not p.is_secret]
        return head + ("?" + "&".join(kept) if kept else "")

    def masked(self) -> str:
        """The URL with each secret replaced by ``***``, for messages and logs."""
        spans = [self.password] if self.password is not None else []
        spans += [(p.value_start, p.end) for p in self.params if p.is_secret]
        text = self.text
        for start, end in sorted(spans, reverse=True):
            text = text[:start] + MASK + text[end:]
        return text


def parse(raw: str) -> PostgresUrl:
    """Check ``raw`` the way libpq will read it, before anything connects with it.

    :param raw: a ``postgresql://``, ``postgres://`` or ``postgresql+psycopg://`` URL.
    :raises PostgresConfigError: the URL is empty or malformed; the message says what is
        wrong and how to fix it, and quotes no part that could hold a secret.
    """
    text = (raw or "").strip()
    if not text:
        raise PostgresConfigError(MISSING_URL_HELP)
    scheme = _SCHEME.match(text)
    if scheme is None:
        raise _error(f"is not a URL of the form {_FORM}")
    if scheme.group(1) not in ACCEPTED_SCHEMES:
        raise PostgresConfigError(
            f"postgres_url uses the scheme {scheme.group(1)!r}; pynenc-postgres needs a "
            "postgresql:// URL (psycopg 3 is used as the driver)."
        )
    pos = scheme.end()
    password = None
    # libpq: the user info ends at the first '@' that comes before any '/'.
    at = _find_any(text, "@/", pos)
    if at < len(text) and text[at] == "@":
        if "?" in text[pos:at]:
            raise _error(
                "has an '@' in its query string but no '/dbname' before the query, so "
                "libpq would read the query as a user name; write '@' in a value as %40"
            )
        colon = text.find(":", pos, at)
        _check_escapes(text, pos, colon if colon >= 0 else at, "the user name")
        if colon >= 0 and colon + 1 < at:
            password = (colon + 1, at)
            _check_escapes(text, colon + 1, at, "the password")
        pos = at + 1
    hosts_end = _find_any(text, "/?", pos)
    if "@" in text[pos:hosts_end]:
        raise _error(
            "has more than one '@' before the host; write an '@' that is part of the user "
            "name or password as %40"
        )
    for host in text[pos:hosts_end].split(","):
        _check_host(host)
    pos = hosts_end
    if pos < len(text) and text[pos] == "/":
        query_start = _find_any(text, "?", pos + 1)
        _check_escapes(text, pos + 1, query_start, "the database name")
    else:
        query_start = pos
    return PostgresUrl(text, password, query_start, _parse_query(text, query_start))


def strip_secrets(raw: str) -> str:
    """``raw`` without its password and secret parameters; ``raw`` itself when it has none.

    :raises PostgresConfigError: the URL is malformed.
    """
    url = parse(raw)
    return url.without_secrets() if url.has_secrets else raw


def redact(raw: str) -> str:
    """``raw`` for messages and logs: each secret replaced by ``***``. Never raises.

    A URL that cannot be parsed is shown as its scheme only.
    """
    try:
        return parse(raw).masked()
    except PostgresConfigError:
        scheme = _SCHEME.match((raw or "").strip())
        return f"{scheme.group(1)}://..." if scheme else "(not a URL)"


def libpq_url(raw: str) -> str:
    """``raw`` as libpq reads it: the same URL, with the scheme libpq knows."""
    text = raw.strip()
    scheme, sep, rest = text.partition("://")
    return f"postgresql://{rest}" if sep and scheme in ACCEPTED_SCHEMES else text


def strip_secrets_in(value: Any) -> Any:
    """A copy of a config value (nested dicts and lists too) with no URL carrying a secret.

    Postgres URLs lose their password and secret parameters (a malformed one is replaced
    by its scheme); any other URL loses the password of its user info.
    """
    if isinstance(value, str):
        return _strip_string(value)
    if isinstance(value, dict):
        return {key: strip_secrets_in(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strip_secrets_in(item) for item in value]
    return value


def restore_secrets(stored: Any, in_process: Any) -> Any:
    """``stored`` with each URL that is ``in_process``'s own minus its secrets put back.

    :param stored: a config value as read back from the database (secrets stripped).
    :param in_process: the same config value as this process holds it.
    """
    if isinstance(stored, dict) and isinstance(in_process, dict):
        return {
            key: restore_secrets(item, in_process[key]) if key in in_process else item
            for key, item in stored.items()
        }
    if (
        isinstance(stored, list)
        and isinstance(in_process, list | tuple)
        and len(stored) == len(in_process)
    ):
        return [restore_secrets(s, p) for s, p in zip(stored, in_process, strict=True)]
    if (
        isinstance(stored, str)
        and isinstance(in_process, str)
        and stored != in_process
        and _strip_string(in_process) == stored
    ):
        return in_process
    return stored


@cache
def secret_keywords() -> frozenset[str]:
    """libpq keywords whose values are secrets."""
    listed = {option.keyword.decode() for option in _libpq_options() if option.dispchar == b"*"}
    return _SECRET_KEYWORDS | listed


@cache
def known_keywords() -> frozenset[str]:
    """Every keyword the loaded libpq accepts in a URL's query string."""
    return frozenset(option.keyword.decode() for option in _libpq_options())


@cache
def environment_variables() -> dict[str, str]:
    """The environment variable libpq reads for each keyword that has one (``PGSSLMODE``)."""
    return {
        option.keyword.decode(): option.envvar.decode()
        for option in _libpq_options()
        if option.envvar
    }


def _libpq_options() -> list[ConninfoOption]:
    # Parsing an empty string lists every option without reading the environment,
    # ~/.pg_service.conf or ~/.pgpass, as PQconndefaults would.
    import psycopg.pq

    return psycopg.pq.Conninfo.parse(b"")


def _parse_query(text: str, query_start: int) -> tuple[QueryParam, ...]:
    """The query's parameters, checked as libpq checks them (a trailing '&' is allowed)."""
    params: list[QueryParam] = []
    pos = query_start + 1
    while pos < len(text):
        end = _find_any(text, "&", pos)
        equals = text.find("=", pos, end)
        if equals < 0:
            raise _error(
                "has a query parameter without '='; each one must be keyword=value "
                "(write '&' inside a value as %26)"
            )
        _check_escapes(text, pos, equals, "a query parameter's name")
        keyword = _unquote(text[pos:equals])
        shown = repr(keyword) if _PLAIN_KEYWORD.fullmatch(keyword) else "(not a keyword)"
        if "=" in text[equals + 1 : end]:
            raise _error(f"has a second '=' in query parameter {shown}; write it as %3D")
        _check_escapes(text, equals + 1, end, f"the value of query parameter {shown}")
        jdbc_ssl = keyword == "ssl" and text[equals + 1 : end] == "true"
        if keyword not in known_keywords() and not jdbc_ssl:
            raise _error(
                f"has the query parameter {shown}, which libpq does not know; the valid "
                f"keywords are listed at {KEYWORDS_DOC}"
            )
        params.append(QueryParam(keyword, pos, equals + 1, end))
        pos = end + 1
    return tuple(params)


def _check_host(host: str) -> None:
    if host.startswith("["):
        close = host.find("]")
        if close < 0:
            raise _error("has an IPv6 host without its closing ']'")
        port = host[close + 1 :]
        if port and not port.startswith(":"):
            raise _error("has characters after an IPv6 host's ']' that are not ':port'")
        port = port[1:]
    else:
        _, _, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise _error(
            "has a port that is not a number from 1 to 65535. If it has a password, write "
            "any '/', '?', '@' or '%' in it as %2F, %3F, %40 and %25"
        )
    if _BAD_ESCAPE.search(host):
        raise _error(_escape_problem("a host"))


def _check_escapes(text: str, start: int, end: int, part: str) -> None:
    if _BAD_ESCAPE.search(text, start, end):
        raise _error(_escape_problem(part))


def _escape_problem(part: str) -> str:
    return (
        f"has a '%' in {part} that is not followed by two hex digits, or the forbidden %00; "
        "write a literal '%' as %25"
    )


def _error(problem: str) -> PostgresConfigError:
    return PostgresConfigError(f"postgres_url {problem}. Expected the form {_FORM}.")


def _find_any(text: str, chars: str, start: int) -> int:
    """Index of the first of ``chars`` at or after ``start``, or ``len(text)``."""
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found) if found else len(text)


def _unquote(part: str) -> str:
    from urllib.parse import unquote

    return unquote(part, errors="replace")


def _strip_string(value: str) -> str:
    scheme = _SCHEME.match(value.strip())
    if scheme is None:
        return value
    if scheme.group(1) in ACCEPTED_SCHEMES:
        try:
            return strip_secrets(value)
        except PostgresConfigError:
            return redact(value)
    return _strip_user_password(value)


def _strip_user_password(value: str) -> str:
    """Any other URL: drop the password of its user info (RFC 3986), nothing else."""
    text = value.strip()
    scheme = _SCHEME.match(text)
    assert scheme is not None
    authority_end = _find_any(text, "/?#", scheme.end())
    at = text.rfind("@", scheme.end(), authority_end)
    colon = text.find(":", scheme.end(), at) if at >= 0 else -1
    if colon < 0 or colon + 1 == at:
        return value
    return text[:colon] + text[at:]
