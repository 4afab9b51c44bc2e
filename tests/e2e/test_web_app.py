"""The web app at `/`, driven in headless Chromium against a real server, by keyboard only.

Two annotators label a 20-item pilot project (every item goes to both): the answers, notes,
undo and measured durations reach the server; one of them sleeps through a lease (the page is
frozen as a background tab is) and loses nothing. Their disagreement and an "I don't know"
reach the review queue, where an admin decides both with one key each. An annotator cannot
open the overview; the overview shows the project's real numbers (read back from the charts
and compared with the API). Every page passes axe-core with no serious or critical
violation, loads nothing from another host, and is screenshotted into the test's folder.

The page is the same on PostgreSQL (it only calls the API, whose routes the API tests cover on
both), so these tests run on SQLite only. Headless Chromium is the system's; without it they
skip, saying so.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

from app.migrations import upgrade
from tests.corpus import TOPICS, labeled_corpus
from tests.databases import fresh_database
from tests.e2e.conftest import ADMIN_KEY, LiveServer, start_server, stop_server, wait
from tests.e2e.test_browser import LOCAL_HOSTS, chromium_path

pytestmark = pytest.mark.e2e

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
LABELS = sorted(TOPICS)  # cooking, sports, tech: keys 1, 2, 3
N_ITEMS = 20
TIMEOUT_MS = 15_000


@dataclass
class Session:
    """One person's tab: its page, what it asked other hosts for, and its console errors."""

    context: BrowserContext
    page: Page
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@dataclass
class World:
    server: LiveServer
    browser: Browser
    shots: Path
    project_id: int
    texts: dict[str, str]  # item text -> its true label
    keys: dict[str, str]  # annotator name -> API key
    sessions: list[Session] = field(default_factory=list)
    axe: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def open(self, *, lease_seconds: int | None = None) -> Session:
        context = self.browser.new_context(viewport={"width": 1280, "height": 860})
        context.add_init_script(path=str(AXE))  # evaluated by the browser, not the page's CSP
        if lease_seconds is not None:
            context.add_init_script(
                f"sessionStorage.setItem('labelwise.leaseSeconds', '{lease_seconds}')"
            )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        session = Session(context, page)

        def only_local(route: Route) -> None:
            parts = urlsplit(route.request.url)
            if parts.scheme in ("http", "https") and parts.hostname not in LOCAL_HOSTS:
                session.blocked.append(route.request.url)
                route.abort("internetdisconnected")
            else:
                route.continue_()

        context.route("**/*", only_local)
        page.on("console", lambda m: session.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: session.errors.append(str(e)))
        page.on("request", lambda r: session.requests.append(f"{r.method} {r.url}"))
        self.sessions.append(session)
        return session

    def check(self, page: Page, name: str) -> None:
        """Screenshot the page and run axe-core on it."""
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        self.axe[name] = page.evaluate(
            """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.map(n => n.target.join(" "))}))"""
        )

    def api(self, key: str = ADMIN_KEY) -> httpx.Client:
        return self.server.client(key)


@pytest.fixture(scope="module")
def world(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if backend != "sqlite":
        pytest.skip(
            "the web app's browser tests run on SQLite only: the page calls the same API, "
            "whose behaviour on PostgreSQL the API tests cover"
        )
    executable = chromium_path()
    tmp = tmp_path_factory.mktemp("web-app")
    shots = tmp / "screenshots"
    shots.mkdir()
    with fresh_database(backend, tmp) as url:
        upgrade(url)
        server = start_server(url, tmp / "server.log", bootstrap_key=ADMIN_KEY)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, headless=True)
                try:
                    yield make_world(server, browser, shots)
                finally:
                    browser.close()
        finally:
            stop_server(server)


def make_world(server: LiveServer, browser: Browser, shots: Path) -> World:
    corpus = labeled_corpus(7, seed=22)[:N_ITEMS]
    with server.client() as admin:
        keys = {
            name: admin.post(
                "/v1/api-keys", json={"name": name, "role": "annotator", "tier": tier}
            ).json()["key"]
            for name, tier in (("alice", "in_house"), ("bob", "crowd"))
        }
        project = admin.post(
            "/v1/projects",
            json={
                "name": "topics",
                "labels": LABELS,
                "guidelines": "Label each post by its topic.",
                "examples": [{"text": "the team won the match", "label": "sports"}],
                "cost_per_label": {"in_house": 0.3, "crowd": 0.05},
            },
        ).json()
        admin.post(f"/v1/projects/{project['id']}/items", json=[{"text": t} for t, _ in corpus])
    return World(server, browser, shots, project["id"], dict(corpus), keys)


def key_of(label: str) -> str:
    return str(LABELS.index(label) + 1)


def other_label(label: str) -> str:
    return LABELS[(LABELS.index(label) + 1) % len(LABELS)]


def sign_in(page: Page, base_url: str, key: str) -> None:
    """Type the key into the focused field and press Enter: no mouse."""
    page.goto(f"{base_url}/")
    page.wait_for_function("() => document.activeElement?.id === 'api-key'")
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_selector(".projects .project")


def tab_to(page: Page, text: str) -> None:
    """Press Tab until the focused element's text is `text`, then Enter."""
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.textContent.trim()") == text:
            page.keyboard.press("Enter")
            return
    raise AssertionError(f"no focusable {text!r} reached with Tab")


def shown_item(page: Page, previous: str | None) -> tuple[str, str]:
    """Wait for an item other than `previous` on screen: (its id, its text)."""
    page.wait_for_function(
        """previous => {
            const id = document.getElementById("item")?.dataset.itemId;
            return id && id !== previous;
        }""",
        arg=previous or "",
    )
    return (
        page.get_attribute("#item", "data-item-id") or "",
        page.inner_text("#item .text"),
    )


def freeze(page: Page, seconds: float) -> None:
    """Freeze the page as Chromium freezes a background tab (no timers, no events), for
    `seconds`, then resume it."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Page.setWebLifecycleState", {"state": "frozen"})
    page.wait_for_timeout(seconds * 1000)  # the page is frozen: this waits in Python only
    cdp.send("Page.setWebLifecycleState", {"state": "active"})
    cdp.detach()


@dataclass
class Labeled:
    answers: dict[str, dict[int, str | None]]  # annotator -> item id -> label (None: abstained)
    disputed: int
    abstained: int
    noted: int
    froze_on: int


@pytest.fixture(scope="module")
def labeled(world: World) -> Labeled:
    """Alice and Bob each label all 20 items by keyboard alone. Alice answers every item
    right, writes a note on one, and fixes one slip with undo; Bob disagrees with her on
    one item, says "I don't know" on another, and his tab sleeps through its leases once."""
    base = world.server.base_url
    answers: dict[str, dict[int, str | None]] = {"alice": {}, "bob": {}}
    disputed = abstained = noted = froze_on = 0
    for name in ("alice", "bob"):
        # Bob's leases last 2 seconds (renewed while his tab is awake) so a short sleep loses them.
        session = world.open(lease_seconds=2 if name == "bob" else None)
        page = session.page
        sign_in(page, base, world.keys[name])
        if name == "alice":
            world.check(page, "projects")
        tab_to(page, "Annotate")
        previous = None
        for n in range(N_ITEMS):
            item_id, text = shown_item(page, previous)
            label = world.texts[text]
            if name == "alice" and n == 0:
                world.check(page, "annotate")
            if name == "alice" and n == 2:  # a slip, undone: the item comes back
                page.keyboard.press(key_of(other_label(label)))
                shown_item(page, item_id)
                page.keyboard.press("u")
                assert shown_item(page, None)[0] == item_id
            if name == "alice" and n == 3:
                page.keyboard.press("n")
                page.keyboard.type("mentions a stadium")
                page.keyboard.press("Escape")
                noted = int(item_id)
            if name == "bob" and n == 4:
                froze_on = int(item_id)
                freeze(page, 3)  # every lease Bob holds expires meanwhile
            if name == "bob" and n == 0:
                page.keyboard.press(key_of(other_label(label)))
                answers[name][int(item_id)] = other_label(label)
                disputed = int(item_id)
            elif name == "bob" and n == 1:
                page.keyboard.press("i")
                answers[name][int(item_id)] = None
                abstained = int(item_id)
            else:
                page.keyboard.press(key_of(label))
                answers[name][int(item_id)] = label
            previous = item_id
        page.wait_for_selector("#item .empty")
        page.wait_for_function(
            "() => document.getElementById('sync').textContent === 'All answers saved.'"
        )
        page.wait_for_function(
            "text => document.getElementById('counter').textContent === text",
            arg=f"Answered today: {N_ITEMS} · Left: 0",
        )
        assert page.locator(".toast.error").count() == 0
        if name == "bob":
            world.check(page, "annotate-done")
    return Labeled(answers, disputed, abstained, noted, froze_on)


class TestAnnotate:
    def test_two_annotators_label_twenty_items_by_keyboard_alone(
        self, world: World, labeled: Labeled
    ) -> None:
        with world.api() as admin:
            rows = admin.get(
                f"/v1/projects/{world.project_id}/annotations", params={"limit": 1000}
            ).json()["items"]
            items = admin.get(
                f"/v1/projects/{world.project_id}/items", params={"limit": 1000}
            ).json()["items"]
        stored = {
            name: {r["item_id"]: r["label"] for r in rows if r["annotator"] == name}
            for name in ("alice", "bob")
        }
        assert stored == labeled.answers
        assert len(stored["alice"]) == len(stored["bob"]) == N_ITEMS
        # Every answer carries the time it took, measured in the page.
        assert all(r["duration_ms"] is not None and r["duration_ms"] >= 0 for r in rows)
        assert any(r["duration_ms"] > 0 for r in rows)
        assert [r["note"] for r in rows if r["note"]] == ["mentions a stadium"]
        assert next(r for r in rows if r["note"])["item_id"] == labeled.noted
        # Alice's slip was either withdrawn before it was sent or replaced: all hers are right.
        truth = {item["id"]: world.texts[item["text"]] for item in items}
        assert stored["alice"] == truth

    def test_a_lease_that_expired_while_the_tab_slept_loses_nothing(
        self, world: World, labeled: Labeled
    ) -> None:
        bob = world.sessions[1]
        assert labeled.froze_on in labeled.answers["bob"]
        assert bob.page.locator(".toast.error").count() == 0
        assert bob.errors == []
        renewals = [r for r in bob.requests if r.startswith("POST") and r.endswith("/renew")]
        assert renewals, "the page never renewed its leases"
        # Two batches of ten would have done without the sleep; the expired one was refetched.
        fetched = [r for r in bob.requests if r.startswith("POST") and r.endswith("/batches")]
        assert len(fetched) >= 3


@pytest.fixture(scope="module")
def reviewed(world: World, labeled: Labeled) -> dict[int, str]:
    """The admin decides the review queue by keyboard: the right label for each item."""
    session = world.open()
    page = session.page
    sign_in(page, world.server.base_url, ADMIN_KEY)
    page.goto(f"{world.server.base_url}/#/review/{world.project_id}")
    decided: dict[int, str] = {}
    previous = None
    for n in range(2):
        item_id, text = shown_item(page, previous)
        page.wait_for_selector("#answers .answers")
        reason = page.inner_text("#reason")
        answers = page.inner_text("#answers")
        assert "alice" in answers and "bob" in answers
        if int(item_id) == labeled.disputed:
            assert reason.startswith("Disagreement")
            assert other_label(world.texts[text]) in answers
        else:
            assert int(item_id) == labeled.abstained
            assert reason.startswith("Abstained") and "I don't know" in answers
        if n == 0:
            world.check(page, "review")
        page.keyboard.press(key_of(world.texts[text]))
        decided[int(item_id)] = world.texts[text]
        previous = item_id
    page.wait_for_selector("#item .empty")
    page.wait_for_function(
        "() => document.getElementById('sync').textContent.includes('All decisions')"
    )
    return decided


class TestReview:
    def test_a_disagreement_reaches_the_reviewer_who_resolves_it(
        self, world: World, labeled: Labeled, reviewed: dict[int, str]
    ) -> None:
        assert set(reviewed) == {labeled.disputed, labeled.abstained}
        with world.api() as admin:
            for item_id, label in reviewed.items():
                item = admin.get(f"/v1/projects/{world.project_id}/items/{item_id}").json()
                assert (item["status"], item["resolved_label"], item["resolved_by"]) == (
                    "labeled",
                    label,
                    "review",
                )
            stats = admin.get(f"/v1/projects/{world.project_id}/stats").json()
        assert {s: n for s, n in stats["items_by_status"].items() if n} == {"labeled": N_ITEMS}


class TestRoles:
    def test_an_annotator_cannot_open_the_overview(self, world: World, labeled: Labeled) -> None:
        session = world.open()
        page = session.page
        sign_in(page, world.server.base_url, world.keys["alice"])
        assert page.locator("nav a", has_text="Overview").count() == 0
        assert page.locator("a", has_text="Review").count() == 0
        page.goto(f"{world.server.base_url}/#/overview/{world.project_id}")
        page.wait_for_selector("[role=alert]")
        refusal = page.inner_text("[role=alert]")
        assert "for admin and service keys" in refusal and "annotator" in refusal
        world.check(page, "overview-refused")
        # The page asked the API for nothing an annotator may not read.
        admin_only = ("/stats", "/agreement", "/cost", "/label-issues", "/dataset-versions")
        assert not [r for r in session.requests if any(p in r for p in admin_only)]


def chart_data(page: Page, figure_id: str) -> list[list[Any]]:
    data: list[list[Any]] = page.evaluate(
        """id => Chart.getChart(document.querySelector(`#${id} canvas`))
                  .data.datasets.map(d => d.data)""",
        figure_id,
    )
    return data


@pytest.fixture(scope="module")
def enriched(world: World, reviewed: dict[int, str]) -> None:
    """Models, a replay, a label-issue report and two dataset versions, through the API."""
    base = f"/v1/projects/{world.project_id}"
    with world.api() as admin:
        admin.post(f"{base}/dataset-versions", json={"name": "before"})
        # One more human label moves the project on: a relabel for the second version's diff.
        first = next(iter(reviewed))
        admin.post(
            f"{base}/reviews", json={"item_id": first, "label": other_label(reviewed[first])}
        )
        admin.post(f"{base}/dataset-versions", json={"name": "after"})
        jobs = [
            admin.post(f"{base}/models", json={"activate": True}).json()["id"],
            admin.post(
                f"{base}/active-learning/simulations",
                json={"seed_size": 6, "batch_size": 3, "folds": 2, "algorithm": "tfidf_logreg"},
            ).json()["id"],
        ]
        for job in jobs:
            assert wait(admin, job, ("succeeded", "failed"))["status"] == "succeeded"
        issues = admin.post(f"{base}/label-issues", json={"send_to_review": False}).json()["id"]
        assert wait(admin, issues, ("succeeded", "failed"))["status"] == "succeeded"


class TestOverview:
    def test_the_overview_shows_its_charts_with_the_projects_real_numbers(
        self, world: World, enriched: None
    ) -> None:
        base = f"/v1/projects/{world.project_id}"
        with world.api() as admin:
            stats = admin.get(f"{base}/stats").json()
            agreement = admin.get(f"{base}/agreement").json()
            models = admin.get(f"{base}/models").json()["items"]
            learning = admin.get(f"{base}/active-learning").json()
            cost = admin.get(f"{base}/cost").json()
            [summary] = admin.get(f"{base}/label-issues").json()["items"]
            report = admin.get(f"{base}/label-issues/{summary['id']}", params={"limit": 10}).json()
            diff = admin.get(f"{base}/dataset-versions/2/diff", params={"against": 1}).json()
        session = world.open()
        page = session.page
        sign_in(page, world.server.base_url, ADMIN_KEY)
        tab_to(page, "Overview")
        page.wait_for_selector("main[data-charts]")
        world.check(page, "overview")

        statuses = ["unlabeled", "in_progress", "needs_review", "labeled"]
        assert chart_data(page, "chart-status") == [
            [stats["items_by_status"].get(s, 0) for s in statuses]
        ]
        assert chart_data(page, "chart-labels") == [
            [c["count"] for c in stats["label_distribution"]]
        ]
        alpha = agreement["krippendorff_alpha"]
        assert f"{alpha:.3f}" in page.inner_text("#agreement")
        ci = agreement["confidence_interval"]
        assert chart_data(page, "chart-alpha")[0] == [[ci["low"], ci["high"]]]
        assert chart_data(page, "chart-annotators") == [
            [a["agreement_with_others"] for a in agreement["per_annotator"]]
        ]
        for warning in agreement["warnings"]:
            assert warning["message"] in page.inner_text("#agreement")
        # The learning curve: cross-validated accuracy per version (and the random share's).
        curve = chart_data(page, "chart-learning")
        assert [p["y"] for p in curve[1]] == [m["metrics"]["accuracy"] for m in models]
        assert len(curve[0]) == len(
            [e for e in learning["exploration"] if e["accuracy"] is not None]
        )
        replay = learning["simulation"]["result"]["curves"]
        assert chart_data(page, "chart-replay") == [
            [{"x": x, "y": y} for x, y in points] for points in replay.values()
        ]
        assert chart_data(page, "chart-cost") == [[t["spend"] or 0 for t in cost["tiers"]]]
        assert f"{cost['cost_per_usable_label']:.2f}" in page.inner_text("#cost")
        assert chart_data(page, "chart-issues") == [list(report["counts"].values())]
        links = page.locator("#issues a").evaluate_all("els => els.map(e => e.hash)")
        assert links == [
            f"#/review/{world.project_id}/item/{i['item_id']}" for i in report["items"]
        ]
        assert chart_data(page, "chart-diffs") == [
            [diff[c]] for c in ("added", "removed", "relabeled", "text_changed")
        ]
        assert diff["relabeled"] == 1
        assert "No jobs running or queued." in page.inner_text("#jobs")
        # Every chart has its table: the hover numbers are readable without a mouse too.
        assert page.locator("figure.chart canvas").count() == int(
            page.get_attribute("main", "data-charts") or 0
        )

    def test_a_label_issue_link_opens_the_item_for_review(
        self, world: World, enriched: None
    ) -> None:
        session = world.sessions[-1]
        page = session.page
        link = page.locator("#issues a").first
        target = int(re.sub(r".*/", "", link.get_attribute("href") or ""))
        link.focus()
        page.keyboard.press("Enter")
        shown_item(page, None)
        assert page.get_attribute("#item", "data-item-id") == str(target)
        world.check(page, "review-item")


class TestEveryPage:
    def test_no_serious_accessibility_violation_on_any_page(
        self, world: World, enriched: None
    ) -> None:
        sign_in_page = world.open().page
        sign_in_page.goto(f"{world.server.base_url}/")
        sign_in_page.wait_for_selector("#api-key")
        world.check(sign_in_page, "sign-in")
        expected = {
            "sign-in",
            "projects",
            "annotate",
            "annotate-done",
            "review",
            "overview-refused",
            "overview",
        }
        assert expected <= set(world.axe)
        serious = {
            page: [v for v in found if v["impact"] in ("serious", "critical")]
            for page, found in world.axe.items()
        }
        assert serious == {page: [] for page in world.axe}
        for name in world.axe:
            assert (world.shots / f"{name}.png").stat().st_size > 0

    def test_no_page_asked_another_host_or_logged_an_error(
        self, world: World, enriched: None
    ) -> None:
        for session in world.sessions:
            assert session.blocked == []
            assert session.errors == []
        # The key is never in a URL.
        keys = [ADMIN_KEY, *world.keys.values()]
        urls = [r for s in world.sessions for r in s.requests]
        assert not [u for u in urls if any(k in u for k in keys)]
