"""psycopg's build is the application's choice: plain dependencies, a ``binary`` extra.

psycopg's maintainers ask libraries to depend on ``psycopg`` and leave the precompiled
``psycopg[binary]`` to the application, which may need its system libpq and OpenSSL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# What a machine with neither libpq nor psycopg's binary build looks like to psycopg:
# its C and binary builds are not installed and ctypes finds no libpq for the pure-Python
# one. psycopg itself then raises its own ImportError; nothing of it is imitated.
WITHOUT_LIBPQ = textwrap.dedent(
    """
    import ctypes.util, importlib.abc, sys

    class NoBuiltDriver(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("psycopg_c", "psycopg_binary"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoBuiltDriver())
    find_library = ctypes.util.find_library
    ctypes.util.find_library = lambda name: None if name == "pq" else find_library(name)
    """
)


def requirement_names(requirements: list[str]) -> list[str]:
    return [re.split(r"[<>=;!~ ]", requirement, maxsplit=1)[0] for requirement in requirements]


def test_dependencies_leave_the_build_of_psycopg_to_the_application() -> None:
    names = requirement_names(PYPROJECT["project"]["dependencies"])
    assert "psycopg" in names
    assert "psycopg-pool" in names
    assert not any(name.startswith("psycopg[") for name in names), names


def test_the_binary_extra_installs_psycopg_binary_and_dev_includes_it() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert requirement_names(extras["binary"]) == ["psycopg[binary]"]
    assert "pynenc-postgres[binary]" in requirement_names(extras["dev"])


def test_readme_makefile_and_dockerfile_install_the_binary_extra() -> None:
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "pynenc-postgres[binary]"' in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --editable '.[binary,dev]'" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir .[binary]" in dockerfile


def test_without_libpq_the_import_error_names_the_extra_to_install() -> None:
    code = WITHOUT_LIBPQ + "import pynenc_postgres\n"
    env = {**os.environ, "PSYCOPG_IMPL": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)

    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: pynenc-postgres cannot load psycopg"), done.stderr
    assert "pip install 'pynenc-postgres[binary]'" in last_line
    assert "libpq" in last_line
    # psycopg's own explanation stays in the chain, for whoever debugs the machine.
    assert "no pq wrapper available" in done.stderr


def test_the_entry_point_module_gives_the_same_error() -> None:
    """Spawned runners resolve the state backend by module path, not the package root."""
    code = WITHOUT_LIBPQ + "import pynenc_postgres.state_backend.postgres_state_backend\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert "pip install 'pynenc-postgres[binary]'" in done.stderr.strip().splitlines()[-1]


def test_the_same_process_imports_normally_with_the_binary_build() -> None:
    """The control case: without the import hook the package and its driver load."""
    code = "import pynenc_postgres, psycopg; print(psycopg.pq.__impl__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("binary", "c", "python")
