"""compose.yaml: valid against the Compose Specification, and wired the way the docs say.

Docker cannot run here, so the file is checked against the specification's JSON schema
(``tests/data/compose-spec.json``), its commands against the installed console scripts,
and the services' commands and environment are run, as processes on this machine,
against a real database: the migration, the two workers and the demo's client.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
import yaml
from sqlalchemy.engine import URL, make_url

from pynenc_postgres.builder import COMPONENT_CLASSES
from pynenc_postgres.cli import build_parser
from pynenc_postgres.db.settings import parse_url
from pynenc_postgres.demo import DEMO_APP_ID
from pynenc_postgres.demo.workers import WorkerProcess, group_alive, stop_workers

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


def worker_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run pynenc's runner command."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [])[:1] == ["pynenc"]
        and service["command"][-2:] == ["runner", "start"]
    }


def test_two_workers_start_after_a_successful_migration(compose: dict[str, Any]) -> None:
    workers = worker_services(compose)
    assert sorted(workers) == ["worker-1", "worker-2"]
    for worker in workers.values():
        assert worker["command"] == [
            "pynenc",
            "--app",
            "pynenc_postgres.demo.tasks",
            "runner",
            "start",
        ]
        assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert worker["environment"]["PYNENC__RUNNER_CLS"] == "PersistentProcessRunner"
    # Each worker container is a host of its own, as the report's host column shows.
    assert len({worker["hostname"] for worker in workers.values()}) == 2


def test_demo_submits_to_the_workers_after_a_successful_migration(
    compose: dict[str, Any],
) -> None:
    demo = compose["services"]["demo"]
    assert demo["command"][:2] == ["pynenc-postgres", "demo"]
    args = build_parser().parse_args(demo["command"][1:])
    assert args.runners == 0, "the demo service uses the worker services, not runners of its own"
    assert demo["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in worker_services(compose):
        assert demo["depends_on"][name]["condition"] == "service_started"


def test_services_use_the_postgres_only_stack(compose: dict[str, Any]) -> None:
    # The builder's .postgres() names the same classes: one source of truth for both.
    expected = {f"PYNENC__{key.upper()}": cls for key, cls in COMPONENT_CLASSES.items()}
    assert len(expected) == 5
    services = ["migrate", "demo", *worker_services(compose)]
    for name in services:
        environment = compose["services"][name]["environment"]
        assert {key: environment.get(key) for key in expected} == expected, name
        assert environment["PYNENC__APP_ID"] == DEMO_APP_ID
        url = parse_url(environment["PYNENC__POSTGRES_URL"])
        assert url.host == "postgres", "services reach Postgres by its service name"
        assert compose["services"][name]["build"] == "."
    assert not any(
        key.startswith("PYNENC__SQLITE") or "SQLite" in str(value)
        for name in services
        for key, value in compose["services"][name]["environment"].items()
    )


# A reference to a variable that compose substitutes, with no default value to fall
# back on: ${NAME}, ${NAME:?message} or ${NAME?message}.
SECRET_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
URL_WITH_PASSWORD = re.compile(r"postgres(?:ql)?://[^/@\s]*:[^/@\s]*@")


def plaintext_passwords(document: dict[str, Any]) -> list[str]:
    """Where the compose file writes a password instead of referring to one."""
    found = []
    for name, service in document["services"].items():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for key, value in environment.items():
            text = str(value)
            if "PASSWORD" in key.upper() and not SECRET_REFERENCE.match(text):
                found.append(f"{name}: {key}")
            elif URL_WITH_PASSWORD.search(text) or "password=" in text.lower():
                found.append(f"{name}: {key}")
    return found


def test_no_password_is_written_in_plain_text(compose: dict[str, Any]) -> None:
    assert plaintext_passwords(compose) == []
    assert not URL_WITH_PASSWORD.search((ROOT / "compose.yaml").read_text())
    # The server and its clients get the password from one variable.
    references = {
        compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"],
        *(
            compose["services"][name]["environment"]["PGPASSWORD"]
            for name in ["migrate", "demo", *worker_services(compose)]
        ),
    }
    assert len(references) == 1
    (reference,) = references
    assert SECRET_REFERENCE.match(reference)


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("postgres", "POSTGRES_PASSWORD", "pynenc"),
        ("postgres", "POSTGRES_PASSWORD", "${PYNENC_POSTGRES_PASSWORD:-pynenc}"),
        ("migrate", "PYNENC__POSTGRES_URL", "postgresql://pynenc:pynenc@postgres:5432/pynenc"),
        ("migrate", "PYNENC__POSTGRES_URL", "postgresql://pynenc@postgres/pynenc?password=x"),
        ("demo", "PGPASSWORD", "s3cret"),
    ],
    ids=["literal", "default-value", "in-url", "in-query", "pgpassword"],
)
def test_plaintext_password_check_finds_each_form(
    compose: dict[str, Any], service: str, key: str, value: str
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"][service]["environment"] = {
        **broken["services"][service]["environment"],
        key: value,
    }
    assert plaintext_passwords(broken) == [f"{service}: {key}"]


def installed_script(program: str) -> Path:
    """The console script ``program`` of this environment; it must be ours or pynenc's."""
    (entry_point,) = [ep for ep in entry_points(group="console_scripts") if ep.name == program]
    assert entry_point.dist is not None
    # This package's own command, or that of pynenc, which it depends on.
    assert entry_point.dist.name in {"pynenc-postgres", "pynenc"}, entry_point.dist.name
    script = Path(sys.executable).with_name(program)
    assert script.exists(), script
    return script


def test_services_run_commands_that_the_installed_packages_provide(
    compose: dict[str, Any],
) -> None:
    commands = {
        name: service["command"]
        for name, service in compose["services"].items()
        if "command" in service
    }
    assert sorted(commands) == ["demo", "migrate", "worker-1", "worker-2"]
    for name, (program, *args) in commands.items():
        script = installed_script(program)
        # argparse answers --help only for a command line it accepts up to that point.
        proc = subprocess.run(
            [str(script), *args, "--help"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"{name}: {shlex.join([program, *args])}\n{proc.stderr}"
        assert proc.stdout.startswith("usage:"), proc.stdout


def interpolate(value: str, variables: dict[str, str]) -> str:
    """compose's substitution of ``${NAME}`` and ``${NAME:?message}``, the forms used here."""

    def substitute(match: re.Match[str]) -> str:
        assert match["name"] in variables, f"compose would stop: {match['message']}"
        return variables[match["name"]]

    return re.sub(
        r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?\?(?P<message>[^}]*))?\}", substitute, value
    )


def service_process(
    compose: dict[str, Any], name: str, database_url: str
) -> tuple[list[str], dict[str, str]]:
    """A service's command and environment, pointed at the test's database.

    The database is reached as the services reach theirs: a URL without a password,
    and the password (if the server wants one) in ``PGPASSWORD``, through the file's
    own variable reference.
    """
    url = make_url(database_url)
    service = compose["services"][name]
    program, *args = service["command"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYNENC__", "PG"))}
    variables = {"PYNENC_POSTGRES_PASSWORD": url.password or ""}
    env.update(
        {key: interpolate(str(value), variables) for key, value in service["environment"].items()}
    )
    # URL.set(password=None) would keep the password: None means "unchanged" there.
    without_password = URL.create(
        url.drivername, url.username, None, url.host, url.port, url.database, url.query
    )
    env["PYNENC__POSTGRES_URL"] = without_password.render_as_string(hide_password=False)
    assert not url.password or url.password not in env["PYNENC__POSTGRES_URL"]
    return [str(installed_script(program)), *args], env


def test_compose_services_run_the_demo_on_real_postgres(
    compose: dict[str, Any], empty_database_url: str, tmp_path: Path
) -> None:
    command, env = service_process(compose, "migrate", empty_database_url)
    migrate = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert migrate.returncode == 0, migrate.stderr
    assert " is at " in migrate.stdout

    workers: list[WorkerProcess] = []
    try:
        for name in sorted(worker_services(compose)):
            command, env = service_process(compose, name, empty_database_url)
            log_path = tmp_path / f"{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            workers.append(WorkerProcess(name, process, log_path))

        command, env = service_process(compose, "demo", empty_database_url)
        command[command.index("--workdir") + 1] = str(tmp_path / "demo")
        demo = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    finally:
        stop_workers(workers)

    logs = "\n".join(worker.log_path.read_text() for worker in workers)
    assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}\n{logs}"
    assert "Starting no runner" in demo.stdout
    assert (
        "validate_order(42, items=0)  -> FAILED: ValueError: order 42 has no items" in demo.stdout
    )
    assert "checkout(1001, 3 lines)      -> SUCCESS: 3400" in demo.stdout
    assert re.search(r"^\d+ invocations: 1 FAILED, \d+ SUCCESS$", demo.stdout, re.MULTILINE)

    # Every demo task ran in a worker process of one of the two worker services.
    with psycopg.connect(empty_database_url) as conn:
        runs = conn.execute(
            """
            SELECT i.task_id, c.runner_cls, parent.runner_cls, parent.pid::int
            FROM pynenc_invocation_history h
            JOIN pynenc_invocation i USING (app_id, invocation_id)
            JOIN pynenc_runner_context c USING (app_id, runner_id)
            JOIN pynenc_runner_context parent
              ON parent.app_id = c.app_id AND parent.runner_id = c.parent_runner_id
            WHERE h.app_id = %s AND h.status = 'running'
              AND i.task_id LIKE 'pynenc_postgres.demo.tasks.%%'
            """,
            (DEMO_APP_ID,),
        ).fetchall()
    assert len({task for task, *_ in runs}) == 5
    assert {parent_cls for _, _, parent_cls, _ in runs} == {"PersistentProcessRunner"}
    assert {pid for *_, pid in runs} <= {worker.pid for worker in workers}
    for worker in workers:
        assert not group_alive(worker.pid)


def test_image_installs_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in dockerfile
    for copied in ("pyproject.toml", "alembic", "src"):
        assert f"COPY {copied}" in dockerfile or f" {copied} " in dockerfile
