"""The offline SQL of the migrations passes the squawk Postgres migration linter.

The two rules that ``.squawk.toml`` excludes are explained there and in
docs/migrations.md, and so is each finding in ``ACCEPTED``; any other finding fails.
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

# Findings of one revision step that were reviewed and kept, with the reason (also in
# docs/migrations.md). Each must still occur, so a fixed finding is removed from here.
ACCEPTED: dict[tuple[str, str], str] = {
    ("0002", "require-concurrent-index-creation"): (
        "CREATE INDEX CONCURRENTLY cannot run in a transaction, and every migration runs in "
        "one transaction holding the migration lock. The plain build blocks writes (not "
        "reads) to pynenc_workflow_sub_invocation while it runs; lock_timeout bounds the "
        "wait for the lock."
    ),
    ("0005", "ban-drop-default"): (
        "The default dropped is the constant 0 with which the previous statement added "
        "write_order without rewriting the table. No insert names write_order (none of "
        "pynenc-postgres' own, old or new), and existing rows keep their 0."
    ),
    ("0005", "ban-alter-identity"): (
        "write_order becomes an identity right after it is added, so no client inserts into "
        "it; inserts that leave it out, as every pynenc-postgres insert does, draw the next "
        "number. Unlike a sequence default, an identity needs no grant for the runtime role."
    ),
    ("0008", "require-concurrent-index-deletion"): (
        "DROP INDEX CONCURRENTLY cannot run in a transaction, and every migration runs in one "
        "transaction holding the migration lock. The index dropped is on "
        "pynenc_runner_heartbeat, one small row per runner: the ACCESS EXCLUSIVE lock is "
        "held for a catalog change only, and lock_timeout bounds the wait for it."
    ),
    ("0012", "require-concurrent-index-creation"): (
        "CREATE INDEX CONCURRENTLY cannot run in the migration's transaction. The index is "
        "partial on a column the same migration adds, NULL in every row, so it holds no "
        "entry; the build reads pynenc_orchestrator_invocation once while it blocks writes "
        "to it: docs/migrations.md gives the time at 1 and 10 million rows."
    ),
}

# Accepted findings that squawk also reports on the whole upgrade from base: they are
# about the statement itself, not about the table being older than the migration.
ALSO_FROM_BASE = {"ban-drop-default", "ban-alter-identity", "require-concurrent-index-deletion"}


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
    assert ALSO_FROM_BASE <= {rule for _, rule in ACCEPTED}
    assert {str(f["rule_name"]) for f in lint(sql, tmp_path)} == ALSO_FROM_BASE


def test_each_revision_step_passes_squawk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: set[tuple[str, str]] = set()
    for script in schema.script_directory().walk_revisions():
        step = f"{script.down_revision or 'base'}:{script.revision}"
        rules = {str(f["rule_name"]) for f in lint(offline_sql(capsys, step), tmp_path)}
        accepted = {rule for rule in rules if (script.revision, rule) in ACCEPTED}
        assert rules == accepted, f"{step}: squawk reports {sorted(rules - accepted)}"
        seen |= {(script.revision, rule) for rule in accepted}
    assert seen == set(ACCEPTED), f"accepted findings that no longer occur: {set(ACCEPTED) - seen}"


def test_the_excluded_rules_are_the_only_findings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without the config squawk reports exactly the excluded rules (and the accepted
    findings it also reports from base): the linter is live, and no exclusion is stale."""
    excluded = set(tomllib.loads(CONFIG.read_text())["excluded_rules"])
    findings = lint(offline_sql(capsys, "head"), tmp_path, config=None)
    assert {finding["rule_name"] for finding in findings} == excluded | ALSO_FROM_BASE
