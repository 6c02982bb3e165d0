"""``.postgres()`` selects every component; ``.postgres_state_backend()`` only the state.

Both take the same keywords, and configuration files or ``PYNENC__*`` variables select
the same stack as the builder.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynenc import Pynenc, PynencBuilder
from pynenc.broker.sqlite_broker import SQLiteBroker
from pynenc.orchestrator.mem_orchestrator import MemOrchestrator
from pynenc.trigger.sqlite_trigger import SQLiteTrigger

from pynenc_postgres.broker import PostgresBroker
from pynenc_postgres.builder import PostgresSettings, postgres, postgres_state_backend
from pynenc_postgres.client_data_store import PostgresClientDataStore
from pynenc_postgres.db.notify import stop_all_listeners
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.orchestrator import PostgresOrchestrator
from pynenc_postgres.state_backend import PostgresStateBackend
from pynenc_postgres.trigger import PostgresTrigger

POSTGRES_CLASSES = {
    "state_backend": PostgresStateBackend,
    "broker": PostgresBroker,
    "orchestrator": PostgresOrchestrator,
    "trigger": PostgresTrigger,
    "client_data_store": PostgresClientDataStore,
}

# One non-default value per keyword, and the DatabaseSettings field it must reach.
KEYWORD_VALUES: dict[str, Any] = {
    "schema": "pynenc_builder",
    "auto_migrate": True,
    "synchronous_commit": "local",
    "pool_size": 3,
    "max_overflow": 4,
    "pool_timeout": 7.5,
    "pool_max_lifetime": 120.0,
    "pool_max_idle": 30.0,
    "pool_check": True,
    "connect_timeout": 4,
    "statement_timeout_ms": 4321,
    "application_name": "builder-test",
    "prepare_threshold": -1,
    "apply_settings": "transaction",
    "retry_attempts": 2,
    "retry_initial_delay": 0.02,
    "retry_max_delay": 0.5,
    "migration_lock_timeout_ms": 2500,
}
# The broker's own keywords, and the value its config must read.
BROKER_KEYWORD_VALUES: dict[str, Any] = {
    "broker_wakeup": "poll",
    "broker_poll_interval_sec": 0.2,
    "broker_claim_synchronous_commit": "local",
    "broker_poll_max_interval_sec": 0.8,
    "broker_recheck_interval_sec": 2.5,
    "broker_listener_scope": "process",
}
# Keywords that one other component reads, with the component and a non-default value.
COMPONENT_KEYWORD_VALUES: dict[str, tuple[str, Any]] = {
    "heartbeat_interval_sec": ("orchestrator", 2.5),
    "invocation_cache_size": ("state_backend", 17),
    "retention": ("orchestrator", "14d"),
    "retention_by_status": ("orchestrator", "failed=30d,success=keep"),
    "retention_interval": ("orchestrator", "15m"),
    "retention_batch_size": ("orchestrator", 250),
    "retention_lock_timeout_ms": ("orchestrator", 750),
}


@pytest.fixture(autouse=True)
def _stop_listeners() -> Iterator[None]:
    yield
    stop_all_listeners()


def _component_classes(app: Pynenc) -> dict[str, type]:
    return {name: type(getattr(app, name)) for name in POSTGRES_CLASSES}


def test_postgres_selects_all_five_components(database_url: str) -> None:
    app = PynencBuilder().postgres(url=database_url).build()

    assert _component_classes(app) == POSTGRES_CLASSES
    for name in POSTGRES_CLASSES:
        assert getattr(app, name).settings.url == database_url


def test_postgres_replaces_earlier_memory_or_sqlite_components(
    database_url: str, temp_sqlite_db_path: str
) -> None:
    after_memory = PynencBuilder().memory().postgres(url=database_url).build()
    after_sqlite = (
        PynencBuilder().sqlite(sqlite_db_path=temp_sqlite_db_path).postgres(url=database_url)
    ).build()

    assert _component_classes(after_memory) == POSTGRES_CLASSES
    assert _component_classes(after_sqlite) == POSTGRES_CLASSES


def test_postgres_stack_accepts_process_runners_that_memory_components_refuse(
    database_url: str,
) -> None:
    """pynenc refuses process runners with in-memory components; ours are shared."""
    with pytest.raises(ValueError, match="not compatible with in-memory components"):
        PynencBuilder().memory().postgres_state_backend(url=database_url).process_runner().build()

    app = PynencBuilder().memory().postgres(url=database_url).process_runner().build()
    assert type(app.runner).__name__ == "ProcessRunner"


def test_postgres_state_backend_keeps_the_other_components(
    database_url: str, temp_sqlite_db_path: str
) -> None:
    with_sqlite = (
        PynencBuilder()
        .sqlite(sqlite_db_path=temp_sqlite_db_path)
        .postgres_state_backend(url=database_url)
        .build()
    )
    with_memory = PynencBuilder().memory().postgres_state_backend(url=database_url).build()

    assert isinstance(with_sqlite.state_backend, PostgresStateBackend)
    assert isinstance(with_sqlite.broker, SQLiteBroker)
    assert isinstance(with_sqlite.trigger, SQLiteTrigger)
    assert isinstance(with_memory.state_backend, PostgresStateBackend)
    assert isinstance(with_memory.orchestrator, MemOrchestrator)


def test_both_builder_methods_take_the_same_keywords() -> None:
    assert inspect.signature(postgres) == inspect.signature(postgres_state_backend)
    assert set(PostgresSettings.__annotations__) == (
        set(KEYWORD_VALUES) | set(BROKER_KEYWORD_VALUES) | set(COMPONENT_KEYWORD_VALUES)
    )
    # Each keyword names a field of the settings every component reads, or the broker's.
    assert set(KEYWORD_VALUES) <= {field.name for field in dataclasses.fields(DatabaseSettings)}


@pytest.mark.parametrize("method", ["postgres", "postgres_state_backend"])
def test_a_misspelt_keyword_is_refused_not_stored(method: str, database_url: str) -> None:
    builder = PynencBuilder()
    with pytest.raises(TypeError, match=r"pool_szie.*pool_size"):
        getattr(builder, method)(url=database_url, pool_szie=3)
    assert not any("szie" in key for key in builder._config)


@pytest.mark.parametrize("method", ["postgres", "postgres_state_backend"])
def test_every_keyword_reaches_the_settings_of_every_selected_component(
    method: str, database_url: str
) -> None:
    builder = getattr(PynencBuilder().memory(), method)(url=database_url, **KEYWORD_VALUES)
    app = builder.build()

    selected = POSTGRES_CLASSES if method == "postgres" else {"state_backend": None}
    for name in selected:
        settings = getattr(app, name).settings
        assert {key: getattr(settings, key) for key in KEYWORD_VALUES} == KEYWORD_VALUES, name


@pytest.mark.parametrize("method", ["postgres", "postgres_state_backend"])
def test_broker_keywords_reach_the_postgres_broker(method: str, database_url: str) -> None:
    """Both methods take them; ``postgres_state_backend`` once PostgresBroker is selected."""
    builder = getattr(PynencBuilder().memory(), method)(url=database_url, **BROKER_KEYWORD_VALUES)
    app = builder.custom_config(broker_cls="PostgresBroker").build()

    broker = app.broker
    assert isinstance(broker, PostgresBroker)
    assert {
        key: getattr(broker.conf, f"postgres_{key}") for key in BROKER_KEYWORD_VALUES
    } == BROKER_KEYWORD_VALUES
    assert broker.wakeup_mode == "poll"


@pytest.mark.parametrize("method", ["postgres", "postgres_state_backend"])
def test_component_keywords_reach_the_component_that_reads_them(
    method: str, database_url: str
) -> None:
    values = {key: value for key, (_, value) in COMPONENT_KEYWORD_VALUES.items()}
    builder = getattr(PynencBuilder().memory(), method)(url=database_url, **values)
    app = builder.custom_config(orchestrator_cls="PostgresOrchestrator").build()

    for key, (component, value) in COMPONENT_KEYWORD_VALUES.items():
        assert getattr(getattr(app, component).conf, f"postgres_{key}") == value, key


def test_unset_keywords_keep_the_configured_value(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYNENC__POSTGRES_STATEMENT_TIMEOUT_MS", "2468")
    app = PynencBuilder().postgres(url=database_url, pool_size=2).build()

    for name in POSTGRES_CLASSES:
        settings = getattr(app, name).settings
        assert (settings.statement_timeout_ms, settings.pool_size) == (2468, 2), name


def test_both_builder_methods_reject_a_url_that_is_not_postgres() -> None:
    for method in ("postgres", "postgres_state_backend"):
        with pytest.raises(Exception, match="postgresql://"):
            getattr(PynencBuilder(), method)(url="mysql://user@host/db").build()


def test_env_vars_select_the_same_stack_as_the_builder(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = PynencBuilder().postgres(url=database_url, application_name="same").build()
    for name, cls in POSTGRES_CLASSES.items():
        monkeypatch.setenv(f"PYNENC__{name.upper()}_CLS", cls.__name__)
    monkeypatch.setenv("PYNENC__POSTGRES_URL", database_url)
    monkeypatch.setenv("PYNENC__POSTGRES_APPLICATION_NAME", "same")
    from_env = Pynenc()

    assert _component_classes(from_env) == _component_classes(built) == POSTGRES_CLASSES
    for name in POSTGRES_CLASSES:
        assert getattr(from_env, name).settings == getattr(built, name).settings, name


def test_pyproject_selects_the_same_stack_as_the_builder(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classes = "\n".join(f'{name}_cls = "{cls.__name__}"' for name, cls in POSTGRES_CLASSES.items())
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.pynenc]
            {classes}
            postgres_url = "{url}"
            """
        ).format(classes=classes, url=database_url)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYNENC__POSTGRES_URL", raising=False)
    from_pyproject = Pynenc()
    built = PynencBuilder().postgres(url=database_url).build()

    assert _component_classes(from_pyproject) == POSTGRES_CLASSES
    for name in POSTGRES_CLASSES:
        assert getattr(from_pyproject, name).settings == getattr(built, name).settings, name
