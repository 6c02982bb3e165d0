"""Per-table storage parameters: the migrated database has exactly the models' (0011)."""

from __future__ import annotations

import psycopg

from pynenc_postgres.db import schema
from pynenc_postgres.db.models import (
    ORCHESTRATOR_INVOCATION_STORAGE_PARAMETERS,
    RETAINED_STORAGE_PARAMETERS,
    Base,
)
from pynenc_postgres.db.settings import DatabaseSettings

TUNED_BY_0011 = {
    "pynenc_orchestrator_invocation": ORCHESTRATOR_INVOCATION_STORAGE_PARAMETERS,
    "pynenc_invocation": RETAINED_STORAGE_PARAMETERS,
    "pynenc_invocation_history": RETAINED_STORAGE_PARAMETERS,
    "pynenc_invocation_result": RETAINED_STORAGE_PARAMETERS,
    "pynenc_client_data": RETAINED_STORAGE_PARAMETERS,
}


def storage_parameters(url: str, schema_name: str = "public") -> dict[str, dict[str, str]]:
    """``pg_class.reloptions`` of every pynenc table of the schema (``{}`` when none)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT c.relname, c.reloptions FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE 'pynenc%%'""",
            (schema_name,),
        ).fetchall()
    return {name: dict(o.split("=", 1) for o in options or ()) for name, options in rows}


def declared() -> dict[str, dict[str, str]]:
    return {
        table.name: dict(table.dialect_options["postgresql"]["with"] or {})
        for table in Base.metadata.sorted_tables
    }


def test_every_table_has_the_storage_parameters_its_model_declares(database_url: str) -> None:
    found = storage_parameters(database_url)
    assert {name: found[name] for name in declared()} == declared()
    for table, parameters in TUNED_BY_0011.items():
        assert found[table] == parameters


def test_the_downgrade_of_0011_resets_them_and_the_upgrade_sets_them_again(
    empty_database_url: str,
) -> None:
    settings = DatabaseSettings(url=empty_database_url, schema="pynenc")
    schema.upgrade(settings)
    schema.downgrade(settings, "0010")
    before = storage_parameters(empty_database_url, "pynenc")
    assert all(before[table] == {} for table in TUNED_BY_0011)

    schema.upgrade(settings, "0011")
    after = storage_parameters(empty_database_url, "pynenc")
    for table, parameters in TUNED_BY_0011.items():
        assert after[table] == parameters
    # Nothing else changed: the tables tuned earlier (broker, heartbeat, counter) keep theirs.
    assert {t: p for t, p in after.items() if t not in TUNED_BY_0011} == {
        t: p for t, p in before.items() if t not in TUNED_BY_0011
    }
