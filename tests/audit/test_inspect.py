"""``pynenc-postgres inspect``: readable output of real runs, and it only reads."""

from __future__ import annotations

import pytest
from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.cli import main
from pynenc_postgres.db.errors import PostgresConfigError, PostgresPluginError
from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.inspect import _read, list_invocations
from tests.audit.conftest import APP_A, Seed, all_rows
from tests.reliability.server import free_port


def inspect(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args, "--url", url])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_invocation_list_with_filters(
    seeded_url: str, audit_seed: Seed, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = audit_seed.ids
    code, out, _ = inspect(
        capsys, seeded_url, "invocations", "--app-id", APP_A, "--status", "failed"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "APP", "INVOCATION", "TASK", "STATUS", "REGISTERED", "(UTC)", "LAST", "CHANGE", "(UTC)",
        "RESULT", "EXCEPTION",
    ]  # fmt: skip
    rows = {line.split()[1]: line.split() for line in lines[1:-1]}
    assert set(rows) == {ids["divide_zero"], ids["divide_zero_2"], ids["parse_bad"]}
    assert rows[ids["parse_bad"]][2:4] == ["tests.audit.tasks.parse", "failed"]
    assert rows[ids["parse_bad"]][-2:] == ["no", "ValueError"]
    assert lines[-1] == "3 invocation(s)"

    code, out, _ = inspect(capsys, seeded_url, "invocations", "--app-id", APP_A, "--task", "divide")
    assert {line.split()[1] for line in out.splitlines()[1:-1]} == {
        ids["divide_zero"],
        ids["divide_zero_2"],
    }
    code, out, _ = inspect(
        capsys, seeded_url, "invocations", "--task", "tests.audit.tasks.divide", "--limit", "10"
    )
    assert {line.split()[0] for line in out.splitlines()[1:-1]} == {"audit-a", "audit-b"}

    code, out, _ = inspect(
        capsys, seeded_url, "invocations", "--app-id", APP_A, "--status", "running,success",
        "--since", "1h", "--limit", "200",
    )  # fmt: skip
    listed = {line.split()[1] for line in out.splitlines()[1:-1]}
    assert {ids["stuck"], ids["add"], ids["pipeline"]} <= listed
    assert ids["divide_zero"] not in listed

    code, out, _ = inspect(capsys, seeded_url, "invocations", "--since", "2999-01-01T00:00:00")
    assert (code, out.strip()) == (0, "No invocation matches.")
    code, _, err = inspect(capsys, seeded_url, "invocations", "--since", "yesterday")
    assert code == 2 and "neither a duration" in err


def test_one_invocation_with_timeline_and_result_or_exception(
    seeded_url: str, audit_seed: Seed, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = audit_seed.ids
    code, out, _ = inspect(capsys, seeded_url, "invocation", ids["flaky"], "--app-id", APP_A)
    assert code == 0
    assert out.splitlines()[0] == f"Invocation {ids['flaky']}"
    assert "  task       tests.audit.tasks.flaky" in out
    timeline = out.split("Timeline\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[1] for line in timeline[1:]] == [
        "registered", "pending", "running", "retry", "pending", "running", "success",
    ]  # fmt: skip
    assert out.rstrip().endswith('Result\n  "seed after 2 attempts"')

    code, out, _ = inspect(capsys, seeded_url, "invocation", ids["divide_zero"])
    assert code == 0
    assert "Exception ZeroDivisionError" in out
    assert '"error_name": "ZeroDivisionError"' in out
    assert "Result" not in out

    code, out, _ = inspect(capsys, seeded_url, "invocation", ids["stuck"], "--app-id", APP_A)
    assert "status     running since" in out
    assert out.rstrip().endswith("No result or exception stored yet.")

    code, _, err = inspect(capsys, seeded_url, "invocation", "no-such-id", "--app-id", APP_A)
    assert code == 1 and "No invocation no-such-id in app audit-a." in err


def test_inspect_reads_in_a_read_only_transaction(seeded_url: str, audit_seed: Seed) -> None:
    before = all_rows(seeded_url)
    with pytest.raises(PostgresPluginError, match="read-only transaction"):
        _read(DatabaseSettings(url=seeded_url), "DELETE FROM pynenc_invocation", {})
    assert all_rows(seeded_url) == before


def test_bad_filters_are_refused_before_anything_is_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As ``purge --status`` does: an unknown status is named, with the valid ones; a limit
    below 1 is refused by the parser. Nothing listens at the URL, so the refusal cannot
    come from the server."""
    nowhere = f"postgresql://pynenc@127.0.0.1:{free_port()}/nowhere"
    valid = sorted(status.value for status in InvocationStatus)

    code, out, err = inspect(capsys, nowhere, "invocations", "--status", "failed,bogus")
    assert (code, out) == (2, "")
    assert "'bogus' is not a pynenc invocation status. Use one of: " in err
    assert all(status in err for status in valid)
    assert main(["purge", "--app-id", APP_A, "--status", "bogus", "--url", nowhere]) == 2
    assert capsys.readouterr().err == err  # the same refusal as purge's

    for limit in ("-1", "0"):
        with pytest.raises(SystemExit) as exit_info:
            inspect(capsys, nowhere, "invocations", "--limit", limit)
        assert exit_info.value.code == 2
        assert f"argument --limit: must be at least 1, not {limit}" in capsys.readouterr().err

    settings = DatabaseSettings(url=nowhere, retry_attempts=1)
    with pytest.raises(PostgresConfigError, match="'Bogus' is not a pynenc invocation status"):
        list_invocations(settings, statuses=["FAILED", "Bogus"])
    with pytest.raises(PostgresConfigError, match="limit is -1; it must be at least 1"):
        list_invocations(settings, limit=-1)
