"""What every Postgres component derives from its app: settings, database handle, app id.

Each component names its own configuration class (``conf``) and statements (``sql``);
the rest is the same for all five and lives here once.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc_postgres.db import borrowed
from pynenc_postgres.db.engine import Database, get_database
from pynenc_postgres.db.errors import InTransactionError
from pynenc_postgres.db.settings import DatabaseSettings

if TYPE_CHECKING:
    from pynenc.app import Pynenc

    from pynenc_postgres.conf import ConfigPostgres


class DatabaseComponent:
    """Mixed in before pynenc's base class: ``class PostgresBroker(DatabaseComponent, BaseBroker)``.

    Values derived from the app are cached per instance and left out when the component
    is pickled into a spawned worker, which derives them again from its own app (the
    pool of one process cannot serve another).
    """

    app: Pynenc

    @property
    def conf(self) -> ConfigPostgres:
        """The component's configuration; each component returns its own class."""
        raise NotImplementedError

    @cached_property
    def settings(self) -> DatabaseSettings:
        return DatabaseSettings.from_config(self.conf)

    @cached_property
    def db(self) -> Database:
        """The process-wide database handle (it recreates its pool after a fork)."""
        return get_database(self.settings)

    @property
    def app_id(self) -> str:
        return str(self.app.app_id)

    def _enlist(self) -> None:
        """Inside ``in_transaction()``: check, once per block, that the app can join it.

        Called where a submission first reaches a component, so that a mixed app fails
        before any of its rows is written inside the application's transaction.
        """
        transaction = borrowed.current()
        if transaction is not None and transaction.remember(("app", id(self.app))):
            enlist_app(self.app, transaction)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in _derived_names(type(self)):
            state.pop(name, None)
        return state


def _derived_names(cls: type) -> set[str]:
    """The cached properties this package defines on ``cls`` and its bases."""
    return {
        name
        for klass in cls.__mro__
        if klass.__module__.startswith("pynenc_postgres.")
        for name, value in vars(klass).items()
        if isinstance(value, cached_property)
    }


def enlist_app(app: Pynenc, transaction: borrowed.BorrowedTransaction) -> None:
    """Check that every row a submission of ``app`` writes goes through ``transaction``.

    The state backend, broker, orchestrator and trigger must be Postgres components
    (the client data store too, unless it is disabled), each checked against the
    borrowed connection: a component elsewhere would make its part of the submission
    visible, or lose it, whatever the application's transaction does.

    :raises InTransactionError: a component is not on Postgres, or its database is not
        the connection's.
    """
    components: dict[str, object] = {
        "state backend": app.state_backend,
        "broker": app.broker,
        "orchestrator": app.orchestrator,
        "trigger": app.trigger,
    }
    client_data_store = app.client_data_store
    if not client_data_store.conf.disable_client_data_store:
        components["client data store"] = client_data_store
    elsewhere = {
        role: type(component).__name__
        for role, component in components.items()
        if not isinstance(component, DatabaseComponent)
    }
    if elsewhere:
        listed = ", ".join(f"its {role} is {name}" for role, name in elsewhere.items())
        raise InTransactionError(
            f"in_transaction() cannot hold the submissions of app {app.app_id!r}: {listed}, "
            "whose writes would not be part of the application's transaction. Build the "
            "app with every component on PostgreSQL (PynencBuilder().postgres(url=...)), "
            "or disable the client data store."
        )
    for component in components.values():
        assert isinstance(component, DatabaseComponent)
        transaction.bind(component.db)
