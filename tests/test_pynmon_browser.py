"""pynmon, pynenc's monitoring UI, on data stored by PostgresStateBackend, in a real browser.

``pynenc monitor`` runs as a user would start it: a separate process whose only
configuration is environment variables, discovering apps through
``PostgresStateBackend.discover_app_infos``. Debian's headless Chromium, driven by
Playwright, loads its pages. The front-end files pynmon takes from CDNs are served
from ``scripts/install-test-deps``'s local copies; no request leaves the machine.

Screenshots go to ``tmp_path``, or to the folder named by
``PYNENC_POSTGRES_SCREENSHOTS`` (``make screenshots`` writes ``docs/screenshots``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psycopg
import pytest

from pynenc_postgres.db.settings import DatabaseSettings
from pynenc_postgres.demo import DEMO_APP_ID, demo_environment
from tests.conftest import PostgresServer
from tests.test_demo import run_demo
from tests.waiting import wait_until

pytest.importorskip("pynmon", reason="pynmon (pynenc[monitor]) supports Python < 3.13 only")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is a dev dependency: pip install -e '.[dev]'"
)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("PYNENC_TEST_CHROMIUM", "/usr/bin/chromium"))
ASSETS = ROOT / ".pynenc-postgres" / "browser-assets"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# pynmon's templates load these from public CDNs; the files come from the npm registry.
CDN_FILES = {
    "/npm/bootstrap@5.3.0/dist/css/bootstrap.min.css": "bootstrap/dist/css/bootstrap.min.css",
    "/npm/bootstrap@5.3.0/dist/js/bootstrap.bundle.min.js": (
        "bootstrap/dist/js/bootstrap.bundle.min.js"
    ),
    "/htmx.org@1.9.2": "htmx.org/dist/htmx.min.js",
    "/icon": "material-icons/iconfont/material-icons.css",
}
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".woff2": "font/woff2"}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"no Chromium at {CHROMIUM}: run `make test-deps` (CI installs it and never skips)",
)


@dataclass
class Monitor:
    base_url: str
    database_url: str
    failed_invocation_id: str
    window: tuple[datetime, datetime]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll pynmon's health endpoint until it answers, or fail when the process exits."""

    def serving() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"pynenc monitor exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until(serving, lambda: f"pynenc monitor answering {url}:\n{log.read_text()}", interval=0.2)


@contextmanager
def serving_monitor(env: dict[str, str], workdir: Path) -> Iterator[str]:
    """``pynenc monitor`` configured by ``env`` alone; yields its base URL, stops it after.

    :param env: the process environment, with the runners' ``PYNENC__*`` variables but no
        ``PYNENC__APP_ID``: pynmon discovers the apps in the database.
    :param workdir: where its log and its (empty) working directory go.
    """
    port = free_port()
    log = workdir / "monitor.log"
    monitor_cwd = workdir / "monitor"
    monitor_cwd.mkdir()  # no Python files here, so pynmon has no local app to pick up
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("pynenc")), "monitor", "--port", str(port)],
            cwd=monitor_cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_serving(proc, f"{base_url}/health", log)
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def monitor(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Monitor]:
    """The demo's data in a fresh database, and ``pynenc monitor`` serving it."""
    database = postgres_server.create_database()
    database_url = postgres_server.url_for(database)
    workdir = tmp_path_factory.mktemp("pynmon")
    run_demo(workdir, {"PYNENC__POSTGRES_URL": database_url})
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT invocation_id FROM pynenc_invocation_exception WHERE app_id = %s",
            (DEMO_APP_ID,),
        ).fetchone()
        window = conn.execute(
            "SELECT min(recorded_at), max(recorded_at) FROM pynenc_invocation_history "
            "WHERE app_id = %s",
            (DEMO_APP_ID,),
        ).fetchone()
    assert row is not None, "the demo stored no exception"
    assert window is not None

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYNENC__")}
    env.update(demo_environment(database_url, DatabaseSettings(url=database_url)))
    del env["PYNENC__APP_ID"]  # pynmon discovers the apps; it is not one of them
    try:
        with serving_monitor(env, workdir) as base_url:
            margin = timedelta(seconds=1)
            yield Monitor(base_url, database_url, row[0], (window[0] - margin, window[1] + margin))
    finally:
        postgres_server.drop_database(database)


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def serve_locally(route: playwright_api.Route) -> None:
    """Let requests to pynmon through; answer CDN requests from local files; drop the rest."""
    parts = urlsplit(route.request.url)
    if parts.hostname == "127.0.0.1":
        route.continue_()
        return
    relative = CDN_FILES.get(parts.path)
    if relative is None and parts.path.endswith(".woff2"):
        relative = "material-icons/iconfont/" + parts.path.rsplit("/", 1)[-1]
    path = ASSETS / relative if relative else None
    if path is not None and path.is_file():
        route.fulfill(path=str(path), content_type=CONTENT_TYPES.get(path.suffix))
    else:
        route.abort()


@pytest.fixture
def page(browser: playwright_api.Browser, monitor: Monitor) -> Iterator[playwright_api.Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", serve_locally)
    page = context.new_page()
    # pynmon shows the first discovered app; select the demo's.
    page.goto(f"{monitor.base_url}/switch-app/{DEMO_APP_ID}")
    yield page
    context.close()


def screenshot(
    page: playwright_api.Page,
    name: str,
    tmp_path: Path,
    element: playwright_api.Locator | None = None,
) -> Path:
    """Save the viewport, or only ``element`` when what matters is below the fold."""
    folder = Path(os.environ.get("PYNENC_POSTGRES_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    if element is None:
        page.screenshot(path=str(path))
    else:
        element.screenshot(path=str(path))
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def test_home_page_shows_the_demo_app(
    page: playwright_api.Page, monitor: Monitor, tmp_path: Path
) -> None:
    page.goto(f"{monitor.base_url}/")
    body = page.locator("body")
    playwright_api.expect(body).to_contain_text(DEMO_APP_ID)
    playwright_api.expect(body).to_contain_text("PostgresStateBackend")
    screenshot(page, "pynmon-home", tmp_path)


def test_invocations_list_shows_our_invocations(
    page: playwright_api.Page, monitor: Monitor, tmp_path: Path
) -> None:
    page.goto(f"{monitor.base_url}/invocations/")
    body = page.locator("body")
    for task in ("add", "validate_order", "fetch_exchange_rate", "checkout", "price_line"):
        playwright_api.expect(body).to_contain_text(task)
    playwright_api.expect(body).to_contain_text(monitor.failed_invocation_id[:8])
    screenshot(page, "pynmon-invocations", tmp_path)


def test_invocation_detail_shows_the_failure(
    page: playwright_api.Page, monitor: Monitor, tmp_path: Path
) -> None:
    page.goto(f"{monitor.base_url}/invocations/{monitor.failed_invocation_id}")
    body = page.locator("body")
    playwright_api.expect(body).to_contain_text(monitor.failed_invocation_id)
    playwright_api.expect(body).to_contain_text("validate_order")
    playwright_api.expect(body).to_contain_text("ValueError")
    playwright_api.expect(body).to_contain_text("order 42 has no items")
    screenshot(page, "pynmon-invocation-detail", tmp_path)


def test_timeline_shows_the_workflow(
    page: playwright_api.Page, monitor: Monitor, tmp_path: Path
) -> None:
    start, end = (moment.isoformat() for moment in monitor.window)
    query = urlencode({"time_range": "custom", "start_date": start, "end_date": end})
    page.goto(f"{monitor.base_url}/invocations/timeline?{query}")
    body = page.locator("body")
    playwright_api.expect(body).to_contain_text("checkout")
    playwright_api.expect(body).to_contain_text("price_line")
    screenshot(page, "pynmon-timeline", tmp_path)
