"""Without the ``metrics`` or ``otel`` extras: a clear error, or nothing at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Makes a package look uninstalled to this process, as it is without the extra.
WITHOUT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == {package!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    """
)


def run(package: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT.format(package=package) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
    )


def test_the_exporter_without_prometheus_client_names_the_extra(database_url: str) -> None:
    done = run(
        "prometheus_client",
        f"""
        from pynenc_postgres.cli import main
        sys.exit(main(["metrics", "--once", "--url", {database_url!r}]))
        """,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'pynenc-postgres[metrics]'" in done.stderr


def test_without_opentelemetry_the_runtime_works_and_counts_nothing(database_url: str) -> None:
    done = run(
        "opentelemetry",
        f"""
        from pynenc_postgres.db import telemetry
        from pynenc_postgres.db.engine import get_database
        from pynenc_postgres.db.settings import DatabaseSettings

        assert telemetry.otel_metrics is None
        db = get_database(DatabaseSettings(url={database_url!r}))
        assert db.fetchone("SELECT 41 + 1", ()) == (42,)
        assert telemetry.statement_counts() == {{}}
        assert "opentelemetry" not in sys.modules
        print("ok")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
