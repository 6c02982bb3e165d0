"""The offline SQL of the migrations passes the squawk Postgres migration linter.

The two rules that ``.squawk.toml`` excludes are explained there and in
docs/migrations.md; every other finding fails this test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pynenc_postgres import cli
from pynenc_postgres.db import schema
from tests.migrations.conftest import REPO

CONFIG = REPO / ".squawk.toml"


def _squawk() -> str:
    local = Path(sys.executable).parent / "squawk"
    found = str(local) if local.exists() else shutil.which("squawk")
    assert found, "squawk is not installed: it comes with the dev extra (squawk-cli)"
    return found


def lint(sql: str, tmp_path: Path, *, config: Path | None = CONFIG) -> list[dict[str, object]]:
    """Squawk's findings on ``sql``; run outside the checkout so only ``config`` applies."""
    migration = tmp_path / "migration.sql"
    migration.write_text(sql)
    args = [_squawk(), "--reporter", "json", str(migration)]
    if config is not None:
        args[1:1] = ["--config", str(config)]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.stdout.strip(), result.stderr
    findings: list[dict[str, object]] = json.loads(result.stdout)
    return findings


def offline_sql(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["db", "sql", *args]) == 0
    out: str = capsys.readouterr().out
    assert out.startswith("BEGIN;") and out.rstrip().endswith("COMMIT;")
    return out


@pytest.mark.parametrize("schema_options", [[], ["--schema", "pynenc"]])
def test_upgrade_sql_from_base_to_head_passes_squawk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, schema_options: list[str]
) -> None:
    sql = offline_sql(capsys, "head", *schema_options)
    assert "SET LOCAL lock_timeout" in sql
    assert lint(sql, tmp_path) == []


def test_each_revision_step_passes_squawk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for script in schema.script_directory().walk_revisions():
        step = f"{script.down_revision or 'base'}:{script.revision}"
        assert lint(offline_sql(capsys, step), tmp_path) == [], step


def test_the_excluded_rules_are_the_only_findings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without the config squawk reports exactly the excluded rules: the linter is live,
    and no exclusion is stale."""
    excluded = set(tomllib.loads(CONFIG.read_text())["excluded_rules"])
    findings = lint(offline_sql(capsys, "head"), tmp_path, config=None)
    assert {finding["rule_name"] for finding in findings} == excluded
