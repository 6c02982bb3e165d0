"""docs/schema.md describes exactly the migrated database, comments included."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"

Columns = dict[str, tuple[str, bool, str]]


def documented() -> tuple[dict[str, str], dict[str, Columns]]:
    """Relation descriptions and columns (type, nullable, description) from the markdown."""
    descriptions: dict[str, str] = {}
    relations: dict[str, Columns] = {}
    current = None
    expect_description = False
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^### `(pynenc_\w+)`$", line)
        if heading:
            current = heading.group(1)
            relations[current] = {}
            expect_description = True
            continue
        if line.startswith("## "):
            current = None
            continue
        if current is None:
            continue
        if expect_description and line.strip():
            descriptions[current] = line.strip()
            expect_description = False
            continue
        row = re.match(r"^\| `(\w+)` \| ([^|]+) \| (yes|no) \| (.*) \|$", line)
        if row:
            relations[current][row.group(1)] = (
                row.group(2).strip(),
                row.group(3) == "yes",
                row.group(4).strip(),
            )
    return descriptions, relations


def in_database(url: str) -> tuple[dict[str, str], dict[str, Columns]]:
    with psycopg.connect(url) as conn:
        rels = conn.execute(
            """SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class')
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')
                 AND c.relname LIKE 'pynenc\\_%' AND c.relname <> 'pynenc_alembic_version'"""
        ).fetchall()
        descriptions = {name: comment for _, name, comment in rels}
        relations: dict[str, Columns] = {}
        for oid, name, _ in rels:
            # information_schema gives names, types and nullability; the comment
            # comes from the catalog, where COMMENT ON COLUMN stores it.
            columns = conn.execute(
                """SELECT c.column_name, c.data_type, c.is_nullable = 'YES',
                          col_description(%s, c.ordinal_position)
                   FROM information_schema.columns c
                   WHERE c.table_schema = 'public' AND c.table_name = %s
                   ORDER BY c.ordinal_position""",
                (oid, name),
            ).fetchall()
            relations[name] = {col: (typ, null, comment) for col, typ, null, comment in columns}
    return descriptions, relations


def test_every_table_view_and_column_is_documented_as_migrated(database_url: str) -> None:
    doc_descriptions, doc_relations = documented()
    db_descriptions, db_relations = in_database(database_url)
    assert (
        len(db_relations) == 33
    )  # 9 state, 1 history totals, 2 broker/client data, 11 trigger, 5 orchestrator,
    # 2 retention; 3 views
    assert sorted(doc_relations) == sorted(db_relations)
    for name, columns in db_relations.items():
        assert list(doc_relations[name]) == list(columns), f"column order of {name}"
        for column, (typ, nullable, comment) in columns.items():
            doc_type, doc_nullable, doc_comment = doc_relations[name][column]
            assert doc_type == typ, f"{name}.{column} type"
            # Views included: Postgres declares every view column nullable, and so must
            # the page, whatever the base table's constraint.
            assert doc_nullable == nullable, f"{name}.{column} nullability"
            assert doc_comment == comment, f"{name}.{column} description"
    assert doc_descriptions == db_descriptions


def test_every_column_has_a_comment_in_the_database(database_url: str) -> None:
    descriptions, relations = in_database(database_url)
    assert all(descriptions.values())
    assert all(comment for columns in relations.values() for *_, comment in columns.values())
