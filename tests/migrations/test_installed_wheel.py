"""An installed, non-editable wheel migrates a database with no checkout in sight."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pynenc_postgres.db import schema
from pynenc_postgres.db.models import Base
from pynenc_postgres.db.settings import DatabaseSettings
from tests.migrations.conftest import REPO, VERSIONS, clean_env, pynenc_relations


def test_the_wheel_ships_the_migration_scripts(built_wheel: Path) -> None:
    names = set(zipfile.ZipFile(built_wheel).namelist())
    shipped = {
        name.removeprefix("pynenc_postgres/migrations/versions/")
        for name in names
        if name.startswith("pynenc_postgres/migrations/versions/")
    }
    assert shipped == {p.name for p in VERSIONS.glob("*.py")}
    assert {"pynenc_postgres/migrations/env.py", "pynenc_postgres/migrations/script.py.mako"} <= (
        names
    )
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


@pytest.fixture(scope="module")
def installed(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel installed; returns its bin/.

    The wheel is installed with ``--no-deps --no-index``; its dependencies (pynenc,
    SQLAlchemy, Alembic, psycopg) are then made importable from the test environment by
    a ``.pth`` line, so nothing is downloaded. A ``.pth`` line adds a plain path: the
    test environment's own ``.pth`` files (among them the editable install's pointer to
    this checkout's ``src``) are not processed, so ``pynenc_postgres`` can only come from
    the wheel, which the tests below check.
    """
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install",
            "--quiet", "--no-deps", "--no-index", str(built_wheel),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (purelib,) = (
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()
    )
    (Path(purelib) / "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv / "bin"


def test_pynenc_postgres_comes_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import pynenc_postgres, importlib.metadata as m; "
            "from pynenc_postgres.db import schema; "
            "print(pynenc_postgres.__file__); print(schema.migrations_path()); "
            "print(m.distribution('pynenc-postgres').read_text('direct_url.json') or '')",
        ],
        cwd=tmp_path,
        env=clean_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    package_file, migrations, *_ = found
    venv = installed.parent
    assert Path(package_file).is_relative_to(venv), package_file
    assert Path(migrations).is_relative_to(venv), migrations
    assert not Path(package_file).is_relative_to(REPO)
    assert '"editable": true' not in "\n".join(found)


def test_db_upgrade_from_the_installed_wheel(
    installed: Path, empty_database_url: str, tmp_path: Path
) -> None:
    def pynenc_postgres(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(installed / "pynenc-postgres"), *args],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            check=False,
        )

    head = schema.head_revision()
    upgraded = pynenc_postgres("db", "upgrade", "--url", empty_database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"is at {head}" in upgraded.stdout
    steps = [line for line in upgraded.stderr.splitlines() if line.startswith("Running upgrade")]
    assert len(steps) == len(schema.known_revisions()), upgraded.stderr
    assert f"-> {head}," in steps[-1]

    tables = {rel for nsp, rel in pynenc_relations(empty_database_url) if nsp == "public"}
    assert tables >= {table.name for table in Base.metadata.sorted_tables}
    assert schema.current(DatabaseSettings(url=empty_database_url)) == head

    checked = pynenc_postgres("db", "check", "--url", empty_database_url)
    assert checked.returncode == 0, checked.stderr
    offline = pynenc_postgres("db", "sql", "head")
    assert offline.returncode == 0, offline.stderr
    assert "CREATE TABLE pynenc_invocation " in offline.stdout

    # The URL can come from pynenc config instead of --url.
    env_config = subprocess.run(
        [str(installed / "pynenc-postgres"), "db", "current"],
        cwd=tmp_path,
        env=clean_env(PYNENC__POSTGRES_URL=empty_database_url),
        capture_output=True,
        text=True,
        check=False,
    )
    assert env_config.returncode == 0, env_config.stderr
    assert env_config.stdout.startswith(f"{head} (up to date")
