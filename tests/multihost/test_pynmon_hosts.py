"""pynmon, pynenc's monitoring UI, on a two-host run: both hosts' runners and their work.

Runners on the two simulated hosts run a batch of tasks on the Postgres-only stack;
``pynenc monitor`` is then started as a user would start it, configured by the same
``PYNENC__*`` variables as the runners, against the same database, and Debian's headless
Chromium (the infrastructure of ``tests/test_pynmon_browser.py``) loads its pages while
the runners are still alive. The runners page must list runners of both hosts by
hostname, and the page of an invocation run on each host must name that host.

Screenshots go to ``tmp_path``, or to the folder named by
``PYNENC_POSTGRES_SCREENSHOTS``: ``PYNENC_POSTGRES_SCREENSHOTS=docs/screenshots pytest
tests/multihost/test_pynmon_hosts.py`` refreshes ``docs/screenshots``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.multihost import tasks
from tests.multihost.conftest import REPO, WORKERS_PER_HOST, Cluster
from tests.multihost.netns import Host
from tests.waiting import wait_until

pytest.importorskip("pynmon", reason="pynmon (pynenc[monitor]) supports Python < 3.13 only")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is a dev dependency: pip install -e '.[dev]'"
)

from tests.test_pynmon_browser import (  # noqa: E402  (after the skips above)
    CHROMIUM,
    CHROMIUM_ARGS,
    screenshot,
    serve_locally,
    serving_monitor,
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"no Chromium at {CHROMIUM}: run `make test-deps` (CI installs it and never skips)",
)

TASKS = 60
# Generous for a loaded machine; pynmon answers each page in well under a second.
PAGE_TIMEOUT_MS = 60_000
RUN_SECONDS = 180.0


def wait_for_successes(cluster: Cluster, count: int) -> None:
    def done() -> bool:
        cluster.check_runners_alive()
        rows = cluster.query(
            "SELECT count(*) FILTER (WHERE status = 'success'), "
            "count(*) FILTER (WHERE status = 'failed') FROM pynenc_orchestrator_invocation "
            "WHERE app_id = %s AND task_id = %s",
            (cluster.app_id, tasks.record.task_id.key),
        )
        successes, failures = rows[0]
        assert failures == 0, f"{failures} tasks failed"
        return bool(successes == count)

    wait_until(done, f"{count} successful tasks", RUN_SECONDS, 0.25)


def ran_on(cluster: Cluster, host: Host) -> str:
    """The id of an invocation that ran on ``host``, by the task's side-effect table."""
    rows = cluster.query(
        f"SELECT invocation_id FROM {tasks.SIDE_EFFECT_TABLE} WHERE hostname = %s "
        "ORDER BY seq LIMIT 1",
        (host.hostname,),
    )
    assert rows, f"no task ran on {host.hostname}"
    return str(rows[0][0])


@pytest.fixture
def two_host_run(cluster: Cluster, client: Any) -> Cluster:
    """Runners up on both hosts, and a batch of tasks that they have all run."""
    cluster.start()
    assert tasks.record.app is client
    list(tasks.record.parallelize([(n,) for n in range(TASKS)]).invocations)
    wait_for_successes(cluster, TASKS)
    assert set(cluster.workers()) == {host.hostname for host in cluster.hosts}
    return cluster


@pytest.fixture
def monitor(two_host_run: Cluster, tmp_path: Path) -> Iterator[str]:
    """``pynenc monitor`` on the cluster's database, configured as the runners are."""
    env = two_host_run.env(two_host_run.hosts[0], runner=False)
    # pynmon discovers the apps in the database; it is not one of them.
    del env["PYNENC__APP_ID"]
    # Its invocation pages load the task's module, as a monitor next to the app's code would.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with serving_monitor(env, tmp_path) as base_url:
        yield base_url


@pytest.fixture
def page(cluster: Cluster, monitor: str) -> Iterator[playwright_api.Page]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", serve_locally)
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto(f"{monitor}/switch-app/{cluster.app_id}")
        yield page
        context.close()
        browser.close()


def test_pynmon_shows_the_runners_and_invocations_of_both_hosts(
    two_host_run: Cluster, monitor: str, page: playwright_api.Page, tmp_path: Path
) -> None:
    cluster = two_host_run
    hostnames = [host.hostname for host in cluster.hosts]

    # The runners are alive, so pynmon lists them as active: each host's runner and its
    # workers, one row each, with the host name beside the pid.
    page.goto(f"{monitor}/runners/")
    playwright_api.expect(page.locator("body")).to_contain_text(
        cluster.app_id, timeout=PAGE_TIMEOUT_MS
    )
    table = page.locator("table").filter(has_text="Host / PID")
    for hostname in hostnames:
        playwright_api.expect(table.locator("tbody tr").filter(has_text=hostname)).to_have_count(
            1 + WORKERS_PER_HOST, timeout=PAGE_TIMEOUT_MS
        )
    cluster.check_runners_alive()
    screenshot(page, "pynmon-two-hosts-runners", tmp_path, element=table)

    # An invocation run on each host: its status timeline names the host that ran it.
    for host in cluster.hosts:
        invocation_id = ran_on(cluster, host)
        page.goto(f"{monitor}/invocations/{invocation_id}")
        body = page.locator("body")
        playwright_api.expect(body).to_contain_text(invocation_id, timeout=PAGE_TIMEOUT_MS)
        playwright_api.expect(body).to_contain_text(
            "tests.multihost.tasks.record", timeout=PAGE_TIMEOUT_MS
        )
        timeline = page.locator(".detail-panel").filter(has_text="Status timeline")
        playwright_api.expect(timeline).to_contain_text(
            f"host: {host.hostname}", timeout=PAGE_TIMEOUT_MS
        )
        for other in hostnames:
            if other != host.hostname:
                assert f"host: {other}" not in timeline.inner_text(), (
                    f"invocation {invocation_id} ran on {host.hostname}; its page names {other}"
                )
        if host is cluster.hosts[-1]:
            # pynmon's floating family-tree panel would cover part of the picture.
            page.add_style_tag(content="#ft-float-panel { display: none !important; }")
            screenshot(
                page, f"pynmon-two-hosts-invocation-{host.label}", tmp_path, element=timeline
            )
