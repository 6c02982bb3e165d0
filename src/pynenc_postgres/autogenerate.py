"""Filters that keep an application's Alembic autogenerate away from pynenc-postgres's objects.

An application that shares its database with pynenc-postgres and runs its own
``alembic revision --autogenerate`` (or ``alembic check``) compares its models with every
table it can see. Without a filter it finds ours, which its models do not define, and
proposes dropping all of them. Its ``env.py`` prevents that with::

    from pynenc_postgres.autogenerate import include_name, include_object

    context.configure(
        ...,
        include_name=include_name,
        include_object=include_object,
    )

or, when it already has filters of its own, with :func:`combine_include_name` and
:func:`combine_include_object`.

Which objects are ours. The rule names relations (tables and views); an index, a
constraint or a column belongs to its table, whatever its own name is.

* By exact name, whatever the application's models say: our version table
  (``pynenc_alembic_version``), every table of our models, and the views our migrations
  create. Both filters apply this part.
* By prefix, for a relation named ``pynenc_...`` that the database has and that neither
  the installed pynenc-postgres nor the application's models define: a newer
  pynenc-postgres (or a later migration) created it. The prefix is reserved for
  pynenc-postgres. A ``pynenc_...`` table that the application's own models do define
  stays the application's. Only :func:`include_object` applies this part, because only
  it sees the application's models (``compare_to``); :func:`include_name` runs before
  reflection and knows only the name.

Everything else is the application's, including names that merely look alike
(``pynencstats``, ``app_pynenc_jobs``, an index ``pynenc_orders_idx`` on the
application's table). Schemas are never filtered: the rule works in ``public``, in a
dedicated schema, and with ``include_schemas=True``.

This module is for ``env.py`` only; importing it costs nothing, and our models are
loaded on the first call of a filter, never by pynenc's runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from pynenc_postgres.db import tables

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType
    from sqlalchemy.schema import SchemaItem

__all__ = [
    "combine_include_name",
    "combine_include_object",
    "include_name",
    "include_object",
    "pynenc_relations",
]

IncludeName = Callable[["str | None", "NameFilterType", "NameFilterParentNames"], bool]
IncludeObject = Callable[
    ["SchemaItem", "str | None", "NameFilterType", bool, "SchemaItem | None"], bool
]


@cache
def pynenc_relations() -> frozenset[str]:
    """Names of the tables and views that the installed pynenc-postgres creates.

    Our models' tables, the views of our migrations and our version table. Tables added
    to the models are included without further change here.
    """
    from pynenc_postgres.db.models import Base

    return frozenset(Base.metadata.tables) | frozenset(tables.VIEWS) | {tables.VERSION_TABLE}


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Alembic ``include_name`` filter: skip reflecting pynenc-postgres's relations.

    Matches exact names only (see :func:`pynenc_relations`). A ``pynenc_`` table that a
    newer pynenc-postgres added is left to :func:`include_object`; pass both.

    :param name: the reflected object's name.
    :param type_: ``schema``, ``table``, ``column``, ``index`` or a constraint kind.
    :param parent_names: the schema and table the object belongs to.
    :return: False for our objects, True for everything else.
    """
    if type_ == "schema":
        return True
    table = name if type_ == "table" else parent_names.get("table_name")
    return table not in pynenc_relations()


def include_object(
    object_: SchemaItem,
    name: str | None,
    type_: NameFilterType,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    """Alembic ``include_object`` filter: leave pynenc-postgres's objects out of the comparison.

    :param object_: the table, column, index or constraint being compared.
    :param name: its name.
    :param type_: ``table``, ``column``, ``index`` or a constraint kind.
    :param reflected: True when the object comes from the database.
    :param compare_to: the object on the other side, None when that side lacks it.
    :return: False for our objects, True for everything else.
    """
    if type_ != "table":
        table = _table_name(object_)
        return table is None or table not in pynenc_relations()
    if name in pynenc_relations():
        return False
    # In the database, absent from the application's models: a relation of a newer
    # pynenc-postgres if the reserved prefix names it, else the application's to drop.
    unmodelled = reflected and compare_to is None
    return not (unmodelled and name is not None and name.startswith(tables.NAME_PREFIX))


def combine_include_name(*app_filters: IncludeName) -> IncludeName:
    """:func:`include_name` and the application's own ``include_name`` filters, all applied.

    :param app_filters: the application's filters; an object is reflected only when
        every one of them and :func:`include_name` accept it.
    """

    def combined(
        name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        return include_name(name, type_, parent_names) and all(
            app_filter(name, type_, parent_names) for app_filter in app_filters
        )

    return combined


def combine_include_object(*app_filters: IncludeObject) -> IncludeObject:
    """:func:`include_object` and the application's own ``include_object`` filters.

    :param app_filters: the application's filters; an object is compared only when
        every one of them and :func:`include_object` accept it.
    """

    def combined(
        object_: SchemaItem,
        name: str | None,
        type_: NameFilterType,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        return include_object(object_, name, type_, reflected, compare_to) and all(
            app_filter(object_, name, type_, reflected, compare_to) for app_filter in app_filters
        )

    return combined


def _table_name(object_: SchemaItem) -> str | None:
    """Name of the table a column, index or constraint belongs to, if it is attached."""
    from sqlalchemy import Column, Index, Table
    from sqlalchemy.schema import Constraint

    table: object = None
    if isinstance(object_, Column | Index):
        table = object_.table
    elif isinstance(object_, Constraint):
        table = object_.parent
    return table.name if isinstance(table, Table) else None
