"""compose.yaml: valid against the Compose Specification, and wired the way the docs say.

Docker cannot run here, so the file is checked against the specification's JSON schema
(``tests/data/compose-spec.json``) and its commands against this package's own CLI.
"""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pynenc_postgres.cli import build_parser
from pynenc_postgres.db.settings import parse_url

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())


@pytest.fixture
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document


def validate(document: dict[str, Any]) -> None:
    # The schema names draft 2019-09 with a trailing "#" that jsonschema does not look up.
    jsonschema.Draft201909Validator.check_schema(SCHEMA)
    jsonschema.Draft201909Validator(SCHEMA).validate(document)


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    validate(compose)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "postgres", "healthcheck", "retries"), "many"),
        (("services", "migrate", "depends_on", "postgres", "condition"), "service_ready"),
        (("services", "demo", "restart_policy"), "no"),
    ],
    ids=["retries-not-a-number", "unknown-condition", "unknown-key"],
)
def test_schema_rejects_broken_variants(
    compose: dict[str, Any], path: tuple[str, ...], value: str
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_postgres_service_has_healthcheck_and_named_volume(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume_name = postgres["volumes"][0].split(":", 1)[0]
    assert volume_name in compose["volumes"], "the data volume must be a named volume"


def test_migrate_runs_db_upgrade_once_postgres_is_healthy(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["pynenc-postgres", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"


def test_demo_worker_starts_after_a_successful_migration(compose: dict[str, Any]) -> None:
    demo = compose["services"]["demo"]
    assert demo["command"][:2] == ["pynenc-postgres", "demo"]
    assert demo["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_services_run_commands_this_package_provides(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name in ("migrate", "demo"):
        service = compose["services"][name]
        program, *args = service["command"]
        assert program == "pynenc-postgres"
        parsed = parser.parse_args(args)
        assert callable(parsed.handler), shlex.join(service["command"])
        url = parse_url(service["environment"]["PYNENC__POSTGRES_URL"])
        assert url.host == "postgres", "services reach Postgres by its service name"
        assert service["build"] == "."


def test_image_installs_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in dockerfile
    for copied in ("pyproject.toml", "alembic", "src"):
        assert f"COPY {copied}" in dockerfile or f" {copied} " in dockerfile
