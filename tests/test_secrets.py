"""A password in any form of ``postgres_url`` stays out of the database, messages and output.

The forms: the URL's user info, a ``?password=`` parameter (and libpq's other secret
parameters, such as ``sslpassword``), and a URL inside a nested config section. Under
``PYNENC_TEST_POSTGRES_AUTH=password`` the server requires the password, so every form
below also has to authenticate for real.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import traceback
from typing import Any
from urllib.parse import quote, unquote

import psycopg
import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.app_info import AppInfo
from sqlalchemy.engine import make_url

from pynenc_postgres.cli import main
from pynenc_postgres.db.engine import get_database
from pynenc_postgres.db.errors import PostgresConfigError, PostgresPluginError
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.state_backend import PostgresStateBackend
from tests.conftest import PostgresServer
from tests.reliability.server import free_port

# Trust servers accept any password; this one only has to be recognisable. Both it and
# the password-requiring server's password contain MARKER, which no encoding changes.
TRUST_PASSWORD = "Tr1ck S3cr:p@ss/%+&?=#!"
MARKER = "S3cr"
# The key passphrase of ?sslpassword=; libpq keeps it unless a client key needs it.
SSL_KEY_PASSWORD = "K3y-S3cret"


def secret_of(server: PostgresServer) -> str:
    secret = server.password or TRUST_PASSWORD
    assert MARKER in secret
    return secret


def url_forms(server: PostgresServer, database: str) -> dict[str, str]:
    """The URL of ``database`` with the server's password in each form a URL can carry it."""
    base = make_url(server.url_for(database))._replace(password=None)
    plain = base.render_as_string(hide_password=False)
    scheme, rest = plain.split("://", 1)
    assert rest.startswith(f"{base.username}@"), plain
    encoded = quote(secret_of(server), safe="")
    userinfo = f"{scheme}://{base.username}:{encoded}@{rest[len(base.username or '') + 1 :]}"
    query = f"{plain}{'&' if '?' in plain else '?'}password={encoded}"
    return {
        "userinfo": userinfo,
        "query": query,
        "sslpassword": f"{userinfo}{'&' if '?' in userinfo else '?'}sslpassword={SSL_KEY_PASSWORD}",
    }


def leaked(text: str) -> bool:
    return MARKER in text


def chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
    return seen


def rendered(exc: BaseException) -> str:
    """Everything an exception shows: messages, reprs and the traceback of its chain."""
    parts = [str(e) for e in chain(exc)] + [repr(e) for e in chain(exc)]
    parts.append("".join(traceback.format_exception(exc)))
    return "\n".join(parts)


def database_text(url: str) -> str:
    """Every row of every pynenc table, and what pg_stat_activity shows, as one text."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'pynenc%%'"
        ).fetchall()
        dump = [repr(conn.execute(f"SELECT * FROM {name}").fetchall()) for (name,) in tables]
        dump.append(repr(conn.execute("SELECT * FROM pg_stat_activity").fetchall()))
    return "\n".join(dump)


def build(url: str, form: str, app_id: str, **config: Any) -> Pynenc:
    builder = PynencBuilder().memory().app_id(app_id).custom_config(**config)
    if form == "nested":
        # The state backend's own config section (ConfigStateBackendPostgres).
        return builder.custom_config(
            state_backend_cls="PostgresStateBackend", statebackendpostgres={"postgres_url": url}
        ).build()
    return builder.postgres_state_backend(url=url).build()


FORMS = ["userinfo", "query", "sslpassword", "nested"]


@pytest.fixture
def forms(postgres_server: PostgresServer, database_url: str) -> dict[str, str]:
    database = make_url(database_url).database
    assert database
    found = url_forms(postgres_server, database)
    found["nested"] = found["userinfo"]
    return found


@pytest.mark.parametrize("form", FORMS)
def test_a_password_in_any_form_never_reaches_the_database(
    forms: dict[str, str], database_url: str, form: str
) -> None:
    app = build(forms[form], form, f"secret-{form}")
    backend = app.state_backend  # registering the app stores its info
    assert isinstance(backend, PostgresStateBackend)
    # Its pooled session stays open, so pg_stat_activity shows what it sent.
    assert backend.get_history("none") == []

    dump = database_text(database_url)

    assert f"secret-{form}" in dump, "the app info was not stored"
    assert not leaked(dump), f"the password reached the database ({form})"
    assert SSL_KEY_PASSWORD not in dump


@pytest.mark.parametrize("form", FORMS)
def test_get_app_info_gives_back_what_pynenc_stored(forms: dict[str, str], form: str) -> None:
    """pynenc's contract: get_app_info() equals the stored AppInfo, password included."""
    app = build(forms[form], form, f"round-trip-{form}")
    info = AppInfo.from_app(app)

    app.state_backend.store_app_info(info)

    assert app.state_backend.get_app_info() == info


@pytest.mark.parametrize("form", FORMS)
def test_discovered_app_infos_carry_no_password(
    forms: dict[str, str], form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build(forms[form], form, f"discover-{form}")
    app.state_backend.store_app_info(AppInfo.from_app(app))
    monkeypatch.setenv("PYNENC__POSTGRES_URL", forms["userinfo"])

    discovered = PostgresStateBackend.discover_app_infos()

    assert f"discover-{form}" in discovered
    assert not leaked(repr(discovered))
    assert SSL_KEY_PASSWORD not in repr(discovered)


def test_app_info_written_before_query_passwords_were_stripped_is_discovered_without_them(
    forms: dict[str, str], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows stored by earlier versions kept ``?password=``; discovery strips it on the way out."""
    old = AppInfo(app_id="old-row", module="m", config_values={"postgres_url": forms["query"]})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pynenc_app_info (app_id, module, app_info_json) VALUES (%s, %s, %s)",
            ("old-row", "m", old.to_json()),
        )
    monkeypatch.setenv("PYNENC__POSTGRES_URL", forms["userinfo"])

    discovered = PostgresStateBackend.discover_app_infos()

    assert "old-row" in discovered
    assert not leaked(repr(discovered["old-row"]))


# -- the rest of the URL is kept byte for byte ------------------------------------------


@pytest.mark.parametrize(
    ("configured", "stored"),
    [
        (
            "postgresql://app:PW@/appdb?host=/var/run/postgresql&options=-c%20work_mem%3D7MB",
            "postgresql://app@/appdb?host=/var/run/postgresql&options=-c%20work_mem%3D7MB",
        ),
        (
            "postgresql://app@db:5432/appdb?options=-c%20search_path%3Dx&password=PW&port=5433",
            "postgresql://app@db:5432/appdb?options=-c%20search_path%3Dx&port=5433",
        ),
        (
            "postgres://app:PW@h1:5432,[::1]:5433/appdb?sslpassword=PW&application_name=a+b&",
            "postgres://app@h1:5432,[::1]:5433/appdb?application_name=a+b",
        ),
        ("postgresql://app@db/appdb?password=PW", "postgresql://app@db/appdb"),
        (
            "postgresql+psycopg://app:PW@db/app%2Fdb?target_session_attrs=any",
            "postgresql+psycopg://app@db/app%2Fdb?target_session_attrs=any",
        ),
        # Another component's URL in the same config (say pynenc-redis's broker).
        ("redis://:PW@redis:6379/0?ssl_cert_reqs=none", "redis://@redis:6379/0?ssl_cert_reqs=none"),
    ],
)
def test_stored_url_loses_only_its_secrets(database_url: str, configured: str, stored: str) -> None:
    secret = quote(TRUST_PASSWORD, safe="")
    configured = configured.replace("PW", secret)
    backend = (
        PynencBuilder().memory().app_id("bytes").postgres_state_backend(url=database_url).build()
    )
    info = AppInfo(
        app_id="bytes",
        module="m",
        config_values={"postgres_url": configured, "statebackendpostgres": {"x": configured}},
    )

    backend.state_backend.store_app_info(info)

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT app_info_json::json -> 'config_values' FROM pynenc_app_info "
            "WHERE app_id = 'bytes'"
        ).fetchone()
    assert row is not None
    assert row[0] == {"postgres_url": stored, "statebackendpostgres": {"x": stored}}


def test_an_app_rebuilt_from_stored_info_keeps_the_url_options(
    forms: dict[str, str], postgres_server: PostgresServer
) -> None:
    """libpq does not decode '+': a re-encoded ``options`` would fail to connect."""
    url = forms["userinfo"]
    url += f"{'&' if '?' in url else '?'}options=-c%20work_mem%3D7MB"
    app = build(url, "userinfo", "options-kept")
    app.state_backend.store_app_info(AppInfo.from_app(app))
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT app_info_json::json -> 'config_values' ->> 'postgres_url' "
            "FROM pynenc_app_info WHERE app_id = 'options-kept'"
        ).fetchone()
    assert row is not None
    stored = row[0]
    assert not leaked(stored)

    with psycopg.connect(stored, password=secret_of(postgres_server)) as conn:
        work_mem = conn.execute("SHOW work_mem").fetchone()
    assert work_mem == ("7MB",)


# -- malformed URLs ----------------------------------------------------------------------

# No fragment of it may show: every 4-character piece is checked.
TYPED_PASSWORD = "Xq7Vb9LmWz"
FRAGMENTS = {TYPED_PASSWORD[i : i + 4] for i in range(len(TYPED_PASSWORD) - 3)}


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"postgresql://app:{TYPED_PASSWORD[:4]}%zz{TYPED_PASSWORD[4:]}@127.0.0.1/db", "'%'"),
        (f"postgresql://app:{TYPED_PASSWORD[:4]}%00{TYPED_PASSWORD[4:]}@127.0.0.1/db", "%00"),
        (f"postgresql://app:{TYPED_PASSWORD[:4]}@{TYPED_PASSWORD[4:]}@127.0.0.1/db", "'@'"),
        (f"postgresql://app:{TYPED_PASSWORD[:4]}/{TYPED_PASSWORD[4:]}@127.0.0.1/db", "port"),
        (f"postgresql://app@127.0.0.1/db?password={TYPED_PASSWORD}&sslmod=require", "'sslmod'"),
        (f"postgresql://app@127.0.0.1/db?password={TYPED_PASSWORD[:4]}={TYPED_PASSWORD}", "'='"),
        (f"postgresql://app@127.0.0.1/db?password=%{TYPED_PASSWORD}", "'password'"),
        (f"postgresql://app@127.0.0.1/db?{TYPED_PASSWORD}", "'='"),
        (f"postgresql://127.0.0.1?password={TYPED_PASSWORD[:4]}@{TYPED_PASSWORD[4:]}", "'@'"),
    ],
    ids=[
        "bad-escape",
        "escaped-nul",
        "unencoded-at",
        "unencoded-slash",
        "unknown-parameter",
        "second-equals",
        "bad-escape-in-query",
        "no-equals",
        "at-in-query-without-dbname",
    ],
)
def test_malformed_url_is_a_config_error_naming_the_problem_and_no_part_of_the_password(
    url: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PostgresConfigError) as builder_error:
        PynencBuilder().memory().postgres_state_backend(url=url)
    with pytest.raises(PostgresConfigError) as settings_error:
        DatabaseSettings(url=url)

    for error in (builder_error.value, settings_error.value):
        text = rendered(error)
        assert named in str(error)
        assert "postgres_url" in str(error)
        assert not any(fragment in text for fragment in FRAGMENTS), text
    assert not any(fragment in caplog.text for fragment in FRAGMENTS)


def test_libpq_reads_every_accepted_url_as_the_plugin_does() -> None:
    """The checks follow libpq: what passes them, libpq parses, with the same password."""
    from psycopg.conninfo import conninfo_to_dict

    from pynenc_postgres.db import urls

    candidates = [
        "postgresql://u:p%40ss@h/db",
        "postgresql://u:p:a:ss@h:5/db?password=q",
        "postgresql://u@h/db?password=p%26q&sslmode=disable&",
        "postgresql://u:pw@/db?host=/run/pg&port=5433&options=-c%20a%3Db",
        "postgresql://:pw@h/db",
        "postgresql://u:@h/db",
        "postgresql://u:p#w@h/db",
        "postgresql://u:pw@[::1]:5432,h2/db?ssl=true",
        "postgresql://h?password=abc",
        "postgresql://u:pw@h/d@b",
        "postgresql://u:pw@h/db?password=",
        "postgres://u:pw@h",
    ]
    for url in candidates:
        parsed = urls.parse(url)
        libpq = conninfo_to_dict(url)
        # libpq stores the user info first; a ?password= parameter then replaces it.
        ours = [url[parsed.password[0] : parsed.password[1]]] if parsed.password else []
        ours += [url[p.value_start : p.end] for p in parsed.params if p.keyword == "password"]
        assert libpq.get("password") == (unquote(ours[-1]) if ours else None), url
        stripped = conninfo_to_dict(urls.strip_secrets(url))
        secrets = urls.secret_keywords()
        assert stripped == {k: v for k, v in libpq.items() if k not in secrets or not v}, url


# -- messages, logs, reprs and CLI output ------------------------------------------------


@pytest.mark.parametrize("form", ["userinfo", "query", "sslpassword"])
def test_retry_logs_and_the_final_error_mask_every_secret(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused port is retried: each retry is logged, then the error names the server."""
    secret = quote(TRUST_PASSWORD, safe="")
    server = f"127.0.0.1:{free_port()}/db"
    url = {
        "userinfo": f"postgresql://app:{secret}@{server}",
        "query": f"postgresql://app@{server}?password={secret}",
        "sslpassword": f"postgresql://app:{secret}@{server}?sslpassword={SSL_KEY_PASSWORD}",
    }[form]
    caplog.set_level(logging.DEBUG)  # psycopg's own connection logs included
    app = build(
        url,
        form,
        f"refused-{form}",
        postgres_retry_attempts=3,
        postgres_retry_initial_delay=0.01,
    )

    with pytest.raises(PostgresPluginError) as info:
        app.state_backend.get_history("x")

    assert "Transient Postgres error" in caplog.text
    assert "***" in str(info.value)
    backend = app.state_backend
    shown = [rendered(info.value), caplog.text, repr(backend.conf), repr(backend.settings)]
    shown.append(repr(get_database(backend.settings)))
    for text in shown:
        assert not leaked(text), text
        assert SSL_KEY_PASSWORD not in text


@pytest.fixture
def cli_urls(forms: dict[str, str]) -> dict[str, str]:
    """Each form against the test's database, and against a database that does not exist."""
    found = {f"ok-{form}": url for form, url in forms.items() if form != "nested"}
    for form, url in list(found.items()):
        found[form.replace("ok-", "missing-")] = url.replace("pynenc_test_", "no_such_db_", 1)
    return found


CLI_COMMANDS = [
    ["db", "current"],
    ["db", "check"],
    ["db", "upgrade"],
    ["purge", "--app-id", "nobody", "--dry-run"],
    ["inspect", "invocations"],
    ["inspect", "invocation", "no-such-invocation"],
]


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_cli_output_never_shows_a_secret(
    cli_urls: dict[str, str],
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, url in cli_urls.items():
        code = main([*command, "--url", url])
        out = capsys.readouterr()
        assert not leaked(out.out + out.err), (name, out)
        assert SSL_KEY_PASSWORD not in out.out + out.err
        if name.startswith("missing"):
            assert code == 2, (name, out)
            assert "***" in out.err, (name, out)
        # The same through the environment, as production sets it.
        monkeypatch.setenv("PYNENC__POSTGRES_URL", url)
        main(command)
        out = capsys.readouterr()
        assert not leaked(out.out + out.err), (name, out)
        monkeypatch.delenv("PYNENC__POSTGRES_URL")


def test_cli_with_a_malformed_url_names_the_problem_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"postgresql://app:{TYPED_PASSWORD[:4]}@{TYPED_PASSWORD[4:]}@127.0.0.1/db"
    for command in CLI_COMMANDS:
        code = main([*command, "--url", url])
        out = capsys.readouterr()
        assert code == 2, out
        assert "'@'" in out.err
        assert not any(fragment in out.out + out.err for fragment in FRAGMENTS), out


RUNNER = """
import sys
from pynenc import PynencBuilder
from pynenc.app_info import AppInfo
app = PynencBuilder().memory().app_id("spawned").postgres_state_backend(url=sys.argv[1]).build()
backend = app.state_backend  # stores the app info, secrets stripped
assert backend.get_app_info() == AppInfo.from_app(app)  # and put back
backend.get_history("x")
print(sorted(name for name in sys.modules if name.split(".")[0] in ("sqlalchemy", "alembic")))
"""


def test_a_runner_process_strips_and_restores_secrets_without_sqlalchemy(
    forms: dict[str, str],
) -> None:
    """Runner processes are often freshly spawned; importing SQLAlchemy costs them 0.3 s."""
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, forms["sslpassword"]], capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
