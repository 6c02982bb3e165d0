"""What every Postgres component derives from its app: settings, database handle, app id.

Each component names its own configuration class (``conf``) and statements (``sql``);
the rest is the same for all five and lives here once.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from pynenc_postgres.db.engine import Database, get_database
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
