"""``scripts/find-python`` picks the interpreter of the development venv: 3.12 first.

pynmon (the browser test, ``make monitor``) supports Python < 3.13 only, so a machine
with both 3.12 and 3.13 must get a 3.12 venv. The interpreters here are stand-ins that
run this test's Python while reporting the version they are named after.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "find-python"
BASH = shutil.which("bash") or "/bin/bash"

FAKE = """#!/bin/sh
# Answers find-python's `-c CODE` version probe with a made-up version.
exec {real} -c "{probe}" "$2"
"""
PROBE = "import sys; sys.version_info = ({major}, {minor}, 0, 'final', 0); exec(sys.argv[1])"


def fake_pythons(bin_dir: Path, *versions: str) -> None:
    bin_dir.mkdir()
    for version in versions:
        major, minor = version.split(".")
        path = bin_dir / f"python{version}"
        probe = PROBE.format(major=major, minor=minor)
        path.write_text(FAKE.format(real=sys.executable, probe=probe))
        path.chmod(0o755)


def find_python(tmp_path: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # Only the stand-ins on PATH: not the machine's own Pythons, no pyenv, no uv.
    clean = {"PATH": str(bin_dir), "PYENV_ROOT": str(tmp_path / "no-pyenv")}
    clean.update(env)
    return subprocess.run(
        [BASH, str(SCRIPT)], env=clean, capture_output=True, text=True, check=False, cwd=tmp_path
    )


def test_python_3_12_is_preferred_over_3_13(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_pythons(bin_dir, "3.13", "3.12")
    found = find_python(tmp_path, bin_dir)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(bin_dir / "python3.12")


def test_python_3_13_alone_is_accepted(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_pythons(bin_dir, "3.13")
    found = find_python(tmp_path, bin_dir)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(bin_dir / "python3.13")


def test_python_variable_wins_and_is_checked(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_pythons(bin_dir, "3.12", "3.13", "3.11")
    chosen = find_python(tmp_path, bin_dir, PYTHON=str(bin_dir / "python3.13"))
    assert chosen.stdout.strip() == str(bin_dir / "python3.13")
    too_old = find_python(tmp_path, bin_dir, PYTHON=str(bin_dir / "python3.11"))
    assert too_old.returncode == 1
    assert "is not a Python 3.12 or newer" in too_old.stderr


def test_no_suitable_python_names_what_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_pythons(bin_dir, "3.11")
    found = find_python(tmp_path, bin_dir)
    assert found.returncode == 1
    assert "needs Python 3.12 or newer" in found.stderr
