"""A real browser against a real server: the API docs render with the network cut off, and a
front-end on a listed origin uses the API from fetch() while an unlisted origin is blocked.

Headless Chromium is the system's (Debian's `chromium`, installed by .ci/run), driven by
Playwright; no browser is ever downloaded. Without Chromium these tests skip, saying so.
"""

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from app.migrations import upgrade
from tests.databases import fresh_database
from tests.e2e.conftest import ADMIN_KEY, LiveServer, start_server, stop_server
from tests.e2e.test_readme import paste, readme_block, run_as_pasted

pytestmark = pytest.mark.e2e

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
PAGE = b"<!doctype html><html><head><title>front-end</title></head><body>labeling</body></html>"
# The origin the README's CORS example starts the server with.
README_ORIGIN = "http://localhost:5173"
# How long to wait for a page to render the spec (the swagger/redoc bundles are ~1 MB each).
RENDER_TIMEOUT_MS = 60_000


def chromium_path() -> str:
    """The system Chromium; the tests skip loudly without one."""
    found = os.environ.get("LABELWISE_TEST_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.skip(
            "Chromium is not installed (apt-get install chromium; .ci/run does): "
            "the browser tests (offline docs, CORS from a real browser) did not run"
        )
    return found


class PageHandler(BaseHTTPRequestHandler):
    """Serves the one page a front-end's origin needs: an empty document to run fetch() in."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Origin:
    """A front-end's origin: a tiny HTTP server on its own localhost port."""

    server: ThreadingHTTPServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[Origin, Origin]]:
    """Two origins: the first is listed in the server's LABELWISE_CORS_ORIGINS (with the
    README's), the second not."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), PageHandler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield Origin(servers[0]), Origin(servers[1])
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def server(
    backend: str, origins: tuple[Origin, Origin], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp(f"browser-{backend}")
    with fresh_database(backend, tmp) as url:
        upgrade(url)
        live = start_server(
            url,
            tmp / "server.log",
            bootstrap_key=ADMIN_KEY,
            settings={"LABELWISE_CORS_ORIGINS": f"{origins[0].url},{README_ORIGIN}"},
        )
        try:
            yield live
        finally:
            stop_server(live)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class OfflinePage:
    page: Page
    blocked: list[str]
    console: list[str]


@pytest.fixture
def offline(browser: Browser) -> Iterator[OfflinePage]:
    """A page whose every request to a host other than this machine is aborted and noted."""
    context = browser.new_context()
    blocked: list[str] = []
    console: list[str] = []

    def only_local(route: Route) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("console", lambda message: console.append(message.text))
    try:
        yield OfflinePage(page, blocked, console)
    finally:
        context.close()


@pytest.fixture
def front_end(browser: Browser) -> Iterator[OfflinePage]:
    """A page with no request interception: with a route installed, Playwright answers CORS
    preflights itself, and the server's own answer to them would go untested."""
    context = browser.new_context()
    console: list[str] = []
    page = context.new_page()
    page.on("console", lambda message: console.append(message.text))
    try:
        yield OfflinePage(page, [], console)
    finally:
        context.close()


def operation_count(server: LiveServer) -> int:
    """The spec's operations, its webhooks' included: both pages render each one."""
    with server.client(None) as client:
        spec = client.get("/openapi.json").json()
    sections = [*spec["paths"].values(), *spec.get("webhooks", {}).values()]
    return sum(len(methods) for methods in sections)


class TestOfflineDocs:
    def test_swagger_ui_renders_every_operation_without_the_internet(
        self, server: LiveServer, offline: OfflinePage
    ) -> None:
        expected = operation_count(server)
        offline.page.goto(f"{server.base_url}/docs")
        offline.page.wait_for_function(
            "n => document.querySelectorAll('.opblock').length >= n",
            arg=expected,
            timeout=RENDER_TIMEOUT_MS,
        )
        assert offline.page.locator(".opblock").count() == expected
        paths = offline.page.locator(".opblock-summary-path").all_inner_texts()
        assert "/v1/me" in [p.replace("\u200b", "") for p in paths]
        assert offline.blocked == [], "the docs page asked the internet for something"

    def test_redoc_renders_every_operation_without_the_internet(
        self, server: LiveServer, offline: OfflinePage
    ) -> None:
        expected = operation_count(server)
        offline.page.goto(f"{server.base_url}/redoc")
        selector = "[data-section-id^='operation/']"
        offline.page.wait_for_function(
            f'n => document.querySelectorAll("{selector}").length >= n',
            arg=expected,
            timeout=RENDER_TIMEOUT_MS,
        )
        assert offline.page.locator(selector).count() == expected
        assert "Who Am I" in offline.page.inner_text("body")
        assert offline.blocked == [], "the ReDoc page asked the internet for something"


# Run in the front-end's page: create an item, read it back, lease it (a 201 with a Location),
# and read a problem answer; every response header the script can see is returned.
FRONT_END_SCRIPT = """
async ({api, key, projectId, text}) => {
  const auth = {"Authorization": `Bearer ${key}`};
  const json = {...auth, "Content-Type": "application/json", "X-Request-ID": "from-the-browser"};
  const base = `${api}/v1/projects/${projectId}`;
  const created = await fetch(`${base}/items`, {
    method: "POST", headers: json, body: JSON.stringify([{text}]),
  });
  const report = await created.json();
  const itemId = report.results[0].id;
  const read = await fetch(`${base}/items/${itemId}`, {headers: auth});
  const batch = await fetch(`${base}/batches`, {
    method: "POST", headers: json, body: JSON.stringify({size: 1}),
  });
  const missing = await fetch(`${api}/v1/projects/999999`, {headers: auth});
  return {
    created: created.status,
    requestId: created.headers.get("X-Request-ID"),
    item: await read.json(),
    batch: batch.status,
    location: batch.headers.get("Location"),
    batchId: (await batch.json()).id,
    missing: missing.status,
    problem: await missing.json(),
  };
}
"""

BLOCKED_SCRIPT = """
async ({api, key, projectId, text}) => {
  try {
    const answer = await fetch(`${api}/v1/projects/${projectId}/items`, {
      method: "POST",
      headers: {"Authorization": `Bearer ${key}`, "Content-Type": "application/json"},
      body: JSON.stringify([{text}]),
    });
    return {status: answer.status};
  } catch (error) {
    return {error: `${error.name}: ${error.message}`};
  }
}
"""


class TestCorsFromABrowser:
    @pytest.fixture
    def project_id(self, server: LiveServer) -> int:
        with server.client() as admin:
            body = {"name": f"browser-{uuid.uuid4().hex[:6]}", "labels": ["a", "b"]}
            project = admin.post("/v1/projects", json={**body, "phase": "production"}).json()
        project_id: int = project["id"]
        return project_id

    def texts(self, server: LiveServer, project_id: int) -> list[str]:
        with server.client() as admin:
            items = admin.get(f"/v1/projects/{project_id}/items").json()["items"]
        return [item["text"] for item in items]

    def test_a_listed_origin_creates_an_item_and_reads_it_back(
        self,
        server: LiveServer,
        origins: tuple[Origin, Origin],
        front_end: OfflinePage,
        project_id: int,
    ) -> None:
        front_end.page.goto(f"{origins[0].url}/")
        args = {"api": server.base_url, "key": ADMIN_KEY, "projectId": project_id}
        result = front_end.page.evaluate(FRONT_END_SCRIPT, {**args, "text": "sent by a browser"})
        assert result["created"] == 200
        assert result["requestId"] == "from-the-browser"  # an exposed header
        assert result["item"]["text"] == "sent by a browser"
        assert result["batch"] == 201
        assert result["location"] == f"/v1/projects/{project_id}/batches/{result['batchId']}"
        # An error answer is readable too: status and problem body, not an opaque failure.
        assert result["missing"] == 404
        assert result["problem"]["type"] == "/problems/not-found"
        assert self.texts(server, project_id) == ["sent by a browser"]

    def test_an_unlisted_origin_is_blocked_by_the_browser(
        self,
        server: LiveServer,
        origins: tuple[Origin, Origin],
        front_end: OfflinePage,
        project_id: int,
    ) -> None:
        front_end.page.goto(f"{origins[1].url}/")
        args = {"api": server.base_url, "key": ADMIN_KEY, "projectId": project_id}
        result = front_end.page.evaluate(BLOCKED_SCRIPT, {**args, "text": "must not arrive"})
        assert result == {"error": "TypeError: Failed to fetch"}
        refusals = [line for line in front_end.console if "blocked by CORS policy" in line]
        assert refusals and "preflight" in refusals[0], front_end.console
        # The preflight was refused, so the request itself was never sent.
        assert self.texts(server, project_id) == []


class TestReadme:
    def test_the_cors_example_pastes_into_a_shell(self, server: LiveServer) -> None:
        output = paste(readme_block("CORS"), server)
        headers = [line.strip().lower() for line in output.splitlines() if ":" in line]
        granted = [h for h in headers if h.startswith("access-control-allow-origin:")]
        assert granted == [f"access-control-allow-origin: {README_ORIGIN}"] * 2
        allowed = next(h for h in headers if h.startswith("access-control-allow-headers:"))
        assert "authorization" in allowed and "content-type" in allowed
        exposed = next(h for h in headers if h.startswith("access-control-expose-headers:"))
        assert "location" in exposed and "x-request-id" in exposed
        refused = json.loads(output.strip().splitlines()[-1])
        assert (refused["status"], refused["type"]) == (403, "/problems/cors-refused")

    def test_the_who_am_i_example_pastes_into_a_shell(self, server: LiveServer) -> None:
        [me] = run_as_pasted(readme_block("Who am I"), server)
        assert me["name"].startswith("alice-")
        assert (me["role"], me["tier"]) == ("annotator", "crowd")
        assert me["key_id"] > 0 and me["created_at"]
