"""Auto-migrate: eight processes start at once on an empty database."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from pynenc_postgres.db import schema
from pynenc_postgres.db.settings import DatabaseSettings
from tests.migrations.conftest import REPO, clean_env

PROCESSES = 8
CHILD = "import sys; from tests.migrations.race_child import main; main(sys.argv[1])"


def test_eight_processes_start_at_once_and_exactly_one_migrates(empty_database_url: str) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, empty_database_url],
            cwd=REPO,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        # Every process has built its app and waits at the gate before any connects.
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == "ready\n", (line, child.stderr.read() if child.stderr else "")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert "Traceback" not in err and "Error" not in err, err
    results = [json.loads(out.strip()) for out, _ in outputs]
    assert all(result["read_back"] for result in results), results
    assert len({result["pid"] for result in results}) == PROCESSES
    assert len({result["invocation_id"] for result in results}) == PROCESSES

    # Alembic logs one "Running upgrade" line per revision it applies, tagged by pid.
    upgrades = [
        line
        for _, err in outputs
        for line in err.splitlines()
        if re.search(r"Running upgrade\s+-> 0001", line)
    ]
    assert len(upgrades) == 1, upgrades
    migrating_pids = {line.split()[0] for line in upgrades}
    assert len(migrating_pids) == 1

    settings = DatabaseSettings(url=empty_database_url)
    assert schema.current(settings) == schema.head_revision()
