"""Signed webhooks: the endpoints resource, the target rules, events written with the changes
they report (one per request, none without a subscriber), and delivery by the sender loop to
a real HTTP receiver: signatures verified with `standardwebhooks`, retries with backoff and
the same webhook-id, no redirects, a short answer prefix, disabling, and exclusive claims."""

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select
from standardwebhooks import Webhook as Verifier

from app.db import Database
from app.errors import WebhookTargetRefused
from app.migrations import upgrade
from app.models.base import Role, utcnow
from app.models.webhook import (
    EventType,
    ItemsLabeledData,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
)
from app.services import events, webhook_delivery
from app.services.webhooks import new_secret
from app.settings import Settings
from app.sources.webhook_http import address_kind, check_target
from tests.conftest import ClientFactory, started_app
from tests.databases import fresh_database
from tests.factories import annotate, auth, ingest, make_key, make_project

PRIVATE_OK = {"webhooks_allow_private": True}


def hook(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    body = {"url": "http://127.0.0.1:9/hook", "events": ["items.labeled"], **body}
    response = client.post("/v1/webhooks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def events_of(session: Session, webhook_id: int) -> list[dict[str, Any]]:
    """The bodies of the events queued for an endpoint, oldest first."""
    rows = session.exec(
        select(WebhookEvent.body)
        .join(WebhookDelivery, col(WebhookDelivery.event_id) == col(WebhookEvent.id))
        .where(col(WebhookDelivery.webhook_id) == webhook_id)
        .order_by(col(WebhookEvent.id))
    )
    return [json.loads(body) for body in rows]


# --- the resource ------------------------------------------------------------------------------


class TestWebhookResource:
    def test_create_shows_the_secret_once(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        created = hook(client, headers, events=["job.failed", "items.labeled", "job.failed"])
        assert created["secret"].startswith("whsec_")
        assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
        assert created["events"] == ["items.labeled", "job.failed"]
        assert created["status"] == "active" and created["disabled_reason"] is None
        shown = client.get(f"/v1/webhooks/{created['id']}", headers=headers).json()
        assert "secret" not in shown
        listed = client.get("/v1/webhooks", headers=headers).json()
        assert [w["id"] for w in listed["items"]] == [created["id"]]
        assert "secret" not in listed["items"][0] and listed["next_cursor"] is None

    def test_delete_hides_it_and_cancels_what_was_pending(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        project = make_project(client, headers)
        created = hook(client, headers, project_id=project["id"])
        items = ingest(client, headers, project["id"], [{"text": "one"}])["results"]
        annotate(client, headers, project["id"], [{"item_id": items[0]["id"], "label": "positive"}])
        url = f"/v1/webhooks/{created['id']}"
        assert client.delete(url, headers=headers).status_code == 204
        assert client.get(url, headers=headers).status_code == 404
        assert client.get(f"{url}/deliveries", headers=headers).status_code == 404
        assert client.delete(url, headers=headers).status_code == 404
        assert session.exec(select(WebhookDelivery.status)).all() == ["cancelled"]

    def test_admin_only(self, client_with: ClientFactory, session: Session) -> None:
        client = client_with(**PRIVATE_OK)
        service = auth(make_key(session, role=Role.service))
        body = {"url": "http://127.0.0.1:9/", "events": ["job.failed"]}
        assert client.post("/v1/webhooks", json=body, headers=service).status_code == 403
        assert client.get("/v1/webhooks", headers=service).status_code == 403

    def test_unknown_project_and_bad_events_change_nothing(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        for body in (
            {"url": "http://127.0.0.1:9/", "events": ["job.failed"], "project_id": 987654},
            {"url": "http://127.0.0.1:9/", "events": ["job.exploded"]},
            {"url": "http://127.0.0.1:9/", "events": []},
        ):
            response = client.post("/v1/webhooks", json=body, headers=headers)
            assert response.status_code in (404, 422), response.text
        assert client.get("/v1/webhooks", headers=headers).json()["items"] == []


class TestTargets:
    @pytest.mark.parametrize(
        ("url", "says"),
        [
            ("http://127.0.0.1:8080/hook", "127.0.0.1, a loopback address"),
            ("http://localhost/hook", "a loopback address"),
            ("http://[::1]/hook", "::1, a loopback address"),
            ("http://169.254.169.254/latest/meta-data", "a link-local address"),
            ("https://10.1.2.3/hook", "10.1.2.3, a private address"),
            ("http://192.168.0.10/hook", "a private address"),
            ("http://0.0.0.0/hook", "an unspecified address"),
            ("ftp://example.com/hook", "Only http and https"),
            ("https://user:pw@example.com/hook", "credentials"),
            ("http:///nohost", "no host"),
            ("http://exa mple.com/x", "spaces or control characters"),
            ("http://[::1/x", "not a valid"),
        ],
    )
    def test_refused_with_a_clear_problem(
        self, client: TestClient, session: Session, url: str, says: str
    ) -> None:
        headers = auth(make_key(session))
        response = client.post(
            "/v1/webhooks", json={"url": url, "events": ["job.failed"]}, headers=headers
        )
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["type"] == "/problems/webhook-target-refused"
        assert says in problem["detail"], problem["detail"]
        assert problem["errors"][0]["loc"] == ["body", "url"]
        assert client.get("/v1/webhooks", headers=headers).json()["items"] == []

    def test_every_resolved_address_must_be_public(self) -> None:
        def resolver(*addresses: str) -> Any:
            return lambda host, port: list(addresses)

        public = check_target(
            "https://hooks.example.com/x", allow_private=False, resolver=resolver("93.184.216.34")
        )
        assert public.addresses == ("93.184.216.34",)
        for addresses in (("93.184.216.34", "10.0.0.7"), ("::ffff:127.0.0.1",), ("fd00::1",)):
            with pytest.raises(WebhookTargetRefused):
                check_target(
                    "https://hooks.example.com/x",
                    allow_private=False,
                    resolver=resolver(*addresses),
                )

        def unresolvable(host: str, port: int) -> list[str]:
            raise socket.gaierror("Name or service not known")

        with pytest.raises(WebhookTargetRefused, match="does not resolve"):
            check_target("https://nowhere.example/x", allow_private=False, resolver=unresolvable)
        assert check_target("http://127.0.0.1/x", allow_private=True).addresses == ()
        assert address_kind("100.64.0.1") == "non-public"  # shared (carrier-grade NAT) space
        assert address_kind("8.8.8.8") is None


# --- emitting ----------------------------------------------------------------------------------


class TestEmitting:
    def test_items_labeled_is_one_event_per_request(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        project = make_project(client, headers)
        other = make_project(client, headers)
        mine = hook(client, headers, project_id=project["id"])
        everyone = hook(client, headers)
        ids = [
            r["id"]
            for r in ingest(
                client, headers, project["id"], [{"text": f"text {i}"} for i in range(4)]
            )["results"]
        ]
        annotate(
            client,
            headers,
            project["id"],
            [
                {"item_id": ids[0], "label": "positive"},
                {"item_id": ids[1], "label": "negative"},
                {"item_id": ids[2], "label": None, "abstain": True},
            ],
        )
        # The same answers again label nothing new: no event.
        annotate(client, headers, project["id"], [{"item_id": ids[0], "label": "positive"}])
        # A changed label is news.
        annotate(client, headers, project["id"], [{"item_id": ids[1], "label": "neutral"}])
        [first, second] = events_of(session, mine["id"])
        assert first["type"] == "items.labeled"
        assert first["data"] == {
            "project_id": project["id"],
            "count": 2,
            "items": [
                {"id": ids[0], "label": "positive", "resolved_by": "consensus"},
                {"id": ids[1], "label": "negative", "resolved_by": "consensus"},
            ],
        }
        assert [i["label"] for i in second["data"]["items"]] == ["neutral"]
        # Another project's answers reach the endpoint of every project, not this one.
        other_item = ingest(client, headers, other["id"], [{"text": "x"}])["results"][0]["id"]
        annotate(client, headers, other["id"], [{"item_id": other_item, "label": "positive"}])
        assert len(events_of(session, mine["id"])) == 2
        assert len(events_of(session, everyone["id"])) == 3
        # Both endpoints got the same event: one message id.
        assert events_of(session, everyone["id"])[0] == first
        message_ids = session.exec(select(WebhookEvent.message_id)).all()
        assert len(set(message_ids)) == len(message_ids) == 3

    def test_without_a_subscriber_an_answer_costs_one_read(
        self, client_with: ClientFactory, session: Session, connection: sa.Connection
    ) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        project = make_project(client, headers)
        hook(client, headers, events=["job.failed"])  # subscribed to something else
        ids = [
            r["id"]
            for r in ingest(client, headers, project["id"], [{"text": f"t{i}"} for i in range(3)])[
                "results"
            ]
        ]
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        sa.event.listen(connection, "before_cursor_execute", seen)
        try:
            annotate(client, headers, project["id"], [{"item_id": ids[0], "label": "positive"}])
            labeled = [s for s in statements if "webhook" in s]
            statements.clear()
            # An answer that labels nothing (a second annotator's place) asks nothing.
            client.patch(
                f"/v1/projects/{project['id']}", json={"annotators_per_item": 2}, headers=headers
            )
            statements.clear()
            annotate(client, headers, project["id"], [{"item_id": ids[1], "label": "positive"}])
            unlabeled = [s for s in statements if "webhook" in s]
        finally:
            sa.event.remove(connection, "before_cursor_execute", seen)
        assert len(labeled) == 1 and labeled[0].lstrip().upper().startswith("SELECT")
        assert unlabeled == []
        assert session.exec(select(WebhookEvent)).all() == []

    def test_a_review_that_labels_an_item_is_an_event(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        project = make_project(client, headers)
        created = hook(client, headers)
        item = ingest(client, headers, project["id"], [{"text": "x"}])["results"][0]["id"]
        reviewed = client.post(
            f"/v1/projects/{project['id']}/reviews",
            json={"item_id": item, "label": "neutral"},
            headers=headers,
        )
        assert reviewed.status_code == 201, reviewed.text
        [event] = events_of(session, created["id"])
        assert event["data"]["items"] == [{"id": item, "label": "neutral", "resolved_by": "review"}]

    def test_phase_change_and_dataset_version(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        project = make_project(client, headers, phase="pilot")
        created = hook(client, headers, events=["project.phase_changed", "dataset_version.created"])
        moved = client.patch(
            f"/v1/projects/{project['id']}",
            json={"phase": "production", "force": True, "reason": "tiny test project"},
            headers=headers,
        )
        assert moved.status_code == 200, moved.text
        item = ingest(client, headers, project["id"], [{"text": "x"}])["results"][0]["id"]
        annotate(client, headers, project["id"], [{"item_id": item, "label": "positive"}])
        frozen = client.post(
            f"/v1/projects/{project['id']}/dataset-versions", json={}, headers=headers
        )
        assert frozen.status_code == 201, frozen.text
        phase, dataset = events_of(session, created["id"])
        assert phase["type"] == "project.phase_changed"
        changes = client.get(f"/v1/projects/{project['id']}/phase-changes", headers=headers)
        [change] = changes.json()["items"]
        assert phase["data"] == {
            "project_id": project["id"],
            **{key: change[key] for key in change if key not in ("id", "created_at")},
            "changed_at": change["created_at"],
        }
        assert phase["data"]["forced"] is True and phase["data"]["to_phase"] == "production"
        assert dataset["type"] == "dataset_version.created"
        assert dataset["data"]["version"] == frozen.json()["version"]
        assert dataset["data"]["n_items"] == 1

    def test_a_refused_change_emits_nothing(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        project = make_project(client, headers, phase="pilot")
        hook(client, headers, events=["project.phase_changed", "dataset_version.created"])
        refused = client.patch(
            f"/v1/projects/{project['id']}", json={"phase": "production"}, headers=headers
        )
        assert refused.status_code == 409
        empty = client.post(
            f"/v1/projects/{project['id']}/dataset-versions", json={}, headers=headers
        )
        assert empty.status_code == 409
        assert session.exec(select(WebhookEvent)).all() == []


class TestDeliveriesResource:
    def test_list_page_and_retry(self, client_with: ClientFactory, session: Session) -> None:
        client, headers = client_with(**PRIVATE_OK), auth(make_key(session))
        project = make_project(client, headers)
        created = hook(client, headers)
        ids = [
            r["id"]
            for r in ingest(client, headers, project["id"], [{"text": f"t{i}"} for i in range(3)])[
                "results"
            ]
        ]
        for item_id in ids:
            annotate(client, headers, project["id"], [{"item_id": item_id, "label": "positive"}])
        url = f"/v1/webhooks/{created['id']}/deliveries"
        first = client.get(url, params={"limit": 2}, headers=headers).json()
        rest = client.get(url, params={"cursor": first["next_cursor"]}, headers=headers).json()
        listed = first["items"] + rest["items"]
        assert len(listed) == 3 and rest["next_cursor"] is None
        assert [d["id"] for d in listed] == sorted((d["id"] for d in listed), reverse=True)
        assert {d["status"] for d in listed} == {"pending"}
        assert {d["event_type"] for d in listed} == {"items.labeled"}
        assert all(d["attempts"] == 0 and d["message_id"].startswith("msg_") for d in listed)
        assert client.get(url, params={"status": "succeeded"}, headers=headers).json() == {
            "items": [],
            "next_cursor": None,
        }
        delivery = listed[0]
        retry = f"{url}/{delivery['id']}/retry"
        retried = client.post(retry, headers=headers)
        assert retried.status_code == 202 and retried.json()["status"] == "pending"
        # While a sender holds it (claimed, its lease running), a retry would send it twice.
        row = session.get(WebhookDelivery, delivery["id"])
        assert row is not None
        row.claim, row.next_attempt_at = "held", utcnow() + timedelta(minutes=1)
        session.add(row)
        session.flush()
        assert client.post(retry, headers=headers).status_code == 409
        assert client.post(f"{url}/987654/retry", headers=headers).status_code == 404
        other = hook(client, headers, events=["job.failed"])
        wrong = f"/v1/webhooks/{other['id']}/deliveries/{delivery['id']}/retry"
        assert client.post(wrong, headers=headers).status_code == 404


# --- delivering, against a real receiver --------------------------------------------------------


@dataclass
class Receiver:
    """A real HTTP server on a thread: answers by path, records every request."""

    port: int = 0
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.received if p == path]


@pytest.fixture(scope="module")
def receiver(backend: str) -> Iterator[Receiver]:
    """One per database leg, so each leg's tests see only their own requests."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                state.received.append((self.path, dict(self.headers), body))
            if self.path.startswith("/fail"):
                self._answer(503, b"down for maintenance")
            elif self.path == "/redirect":
                self.send_response(302)
                self.send_header("location", "/ok")
                self.send_header("content-length", "0")
                self.end_headers()
            elif self.path == "/big":
                self._answer(200, b"x" * 100_000)
            else:
                self._answer(200, b"thanks")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


FAST = {
    "webhooks_allow_private": True,
    "webhooks_poll_seconds": 0.05,
    "webhooks_retry_base_seconds": 0.05,
    "webhooks_retry_max_seconds": 0.2,
    "webhooks_max_attempts": 3,
    "webhooks_timeout_seconds": 2.0,
}


@pytest.fixture(scope="module")
def fast_settings(live_settings: Settings) -> Settings:
    return live_settings.model_copy(update=FAST)


@pytest.fixture(scope="module")
def sender_client(fast_settings: Settings) -> Iterator[TestClient]:
    """The app with its real lifespan: a committed database and the sender loop running."""
    with started_app(fast_settings) as client:
        yield client


def wait_for_delivery(
    client: TestClient, webhook_id: int, done: Any, timeout: float = 30
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        deliveries: list[dict[str, Any]] = client.get(
            f"/v1/webhooks/{webhook_id}/deliveries"
        ).json()["items"]
        if deliveries and all(done(d) for d in deliveries):
            return deliveries
        assert time.monotonic() < deadline, deliveries
        time.sleep(0.05)


def labeled_item(client: TestClient) -> tuple[int, int]:
    """A new project whose one item an answer labels: (project id, item id)."""
    project = make_project(client, {})
    item = ingest(client, {}, project["id"], [{"text": "deliver me"}])["results"][0]["id"]
    return project["id"], item


class TestDelivery:
    def test_signed_delivered_once_and_recorded(
        self, sender_client: TestClient, receiver: Receiver
    ) -> None:
        project_id, item = labeled_item(sender_client)
        created = hook(sender_client, {}, url=receiver.url("/big"), project_id=project_id)
        annotate(sender_client, {}, project_id, [{"item_id": item, "label": "positive"}])
        [delivery] = wait_for_delivery(
            sender_client, created["id"], lambda d: d["status"] == "succeeded"
        )
        [(headers, body)] = receiver.bodies("/big")
        event = Verifier(created["secret"]).verify(body, headers)
        assert headers["webhook-id"] == delivery["message_id"]
        assert headers["content-type"] == "application/json"
        assert event["type"] == "items.labeled"
        assert event["data"]["items"] == [
            {"id": item, "label": "positive", "resolved_by": "consensus"}
        ]
        assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200
        assert delivery["last_response"] == "x" * 200  # a prefix, never the whole body
        assert delivery["delivered_at"] is not None and delivery["next_attempt_at"] is None
        with pytest.raises(Exception, match="signature"):
            Verifier("whsec_" + base64.b64encode(b"k" * 32).decode()).verify(body, headers)

    def test_retried_with_backoff_then_failed_then_retried_by_hand(
        self, sender_client: TestClient, receiver: Receiver
    ) -> None:
        project_id, item = labeled_item(sender_client)
        created = hook(sender_client, {}, url=receiver.url("/fail"), project_id=project_id)
        annotate(sender_client, {}, project_id, [{"item_id": item, "label": "negative"}])
        [delivery] = wait_for_delivery(
            sender_client, created["id"], lambda d: d["status"] == "failed"
        )
        assert delivery["attempts"] == FAST["webhooks_max_attempts"]
        assert delivery["last_status_code"] == 503
        assert delivery["last_error"] == "HTTP 503"
        assert delivery["last_response"] == "down for maintenance"
        attempts = receiver.bodies("/fail")
        assert len(attempts) == 3
        # Every attempt is the same message: same id and body, each signed anew and valid.
        assert {h["webhook-id"] for h, _ in attempts} == {delivery["message_id"]}
        assert len({b for _, b in attempts}) == 1
        for headers, body in attempts:
            Verifier(created["secret"]).verify(body, headers)
        webhook = sender_client.get(f"/v1/webhooks/{created['id']}").json()
        assert webhook["failing_since"] is not None and webhook["status"] == "active"
        url = f"/v1/webhooks/{created['id']}/deliveries/{delivery['id']}/retry"
        assert sender_client.post(url).status_code == 202
        wait_for_delivery(
            sender_client, created["id"], lambda d: d["status"] == "failed" and d["attempts"] == 4
        )
        assert len(receiver.bodies("/fail")) == 4

    def test_redirects_are_not_followed(
        self, sender_client: TestClient, receiver: Receiver
    ) -> None:
        project_id, item = labeled_item(sender_client)
        created = hook(sender_client, {}, url=receiver.url("/redirect"), project_id=project_id)
        annotate(sender_client, {}, project_id, [{"item_id": item, "label": "neutral"}])
        [delivery] = wait_for_delivery(
            sender_client, created["id"], lambda d: d["status"] == "failed"
        )
        assert delivery["last_status_code"] == 302
        assert "redirects are not followed" in delivery["last_error"]
        assert receiver.bodies("/ok") == []

    def test_an_endpoint_failing_for_days_is_disabled_then_enabled_by_a_retry(
        self, sender_client: TestClient, receiver: Receiver, fast_settings: Settings
    ) -> None:
        project_id, item = labeled_item(sender_client)
        created = hook(sender_client, {}, url=receiver.url("/fail-2"), project_id=project_id)
        database = Database(fast_settings)
        try:
            with database.session(write=True) as session:
                row = session.get(Webhook, created["id"])
                assert row is not None
                row.failing_since = utcnow() - timedelta(days=6)  # the default limit is 5
                session.add(row)
                session.commit()
        finally:
            database.engine.dispose()
        annotate(sender_client, {}, project_id, [{"item_id": item, "label": "positive"}])
        [delivery] = wait_for_delivery(sender_client, created["id"], lambda d: d["attempts"] >= 1)
        webhook = sender_client.get(f"/v1/webhooks/{created['id']}").json()
        assert webhook["status"] == "disabled"
        assert "LABELWISE_WEBHOOKS_DISABLE_AFTER_DAYS=5" in webhook["disabled_reason"]
        assert "HTTP 503" in webhook["disabled_reason"]
        # A disabled endpoint gets no new events, and what it had waits.
        annotate(sender_client, {}, project_id, [{"item_id": item, "label": "negative"}])
        deliveries = sender_client.get(f"/v1/webhooks/{created['id']}/deliveries").json()
        assert [d["id"] for d in deliveries["items"]] == [delivery["id"]]
        assert deliveries["items"][0]["status"] == "pending"
        retry = f"/v1/webhooks/{created['id']}/deliveries/{delivery['id']}/retry"
        assert sender_client.post(retry).status_code == 202
        enabled = sender_client.get(f"/v1/webhooks/{created['id']}").json()
        assert enabled["status"] == "active" and enabled["disabled_reason"] is None


def test_concurrent_senders_never_claim_the_same_delivery(
    backend: str, tmp_path: Path, fast_settings: Settings
) -> None:
    """Four senders claim at once (SKIP LOCKED on PostgreSQL, the write lock on SQLite):
    every due delivery is claimed, and by one of them only."""
    with fresh_database(backend, tmp_path) as url:
        upgrade(url)
        settings = fast_settings.model_copy(update={"database_url": url})
        database = Database(settings)
        try:
            with database.session(write=True) as session:
                session.add(
                    Webhook(
                        url="http://127.0.0.1:9/",
                        events=["items.labeled"],
                        secret=new_secret(),
                        created_by="test",
                    )
                )
                session.flush()
                for _ in range(12):
                    events.emit(
                        session,
                        EventType.items_labeled,
                        project_id=None,
                        data=ItemsLabeledData(project_id=1, count=0, items=[]),
                    )
                session.commit()
                due = session.exec(select(WebhookDelivery.id)).all()

            def claim(_: int) -> list[int]:
                claimed = webhook_delivery.claim_due(database, settings, limit=4)
                return [c.delivery_id for c in claimed]

            with ThreadPoolExecutor(4) as pool:
                batches = list(pool.map(claim, range(4)))
        finally:
            database.engine.dispose()
    claimed = [delivery_id for batch in batches for delivery_id in batch]
    assert len(due) == 12
    assert sorted(claimed) == sorted(d for d in due if d is not None)


def test_one_attempt_per_endpoint_at_a_time(
    backend: str, tmp_path: Path, fast_settings: Settings
) -> None:
    """What the sender claims: one delivery per endpoint, none of an endpoint it is still
    sending to, so a slow endpoint cannot take every sending thread."""
    with fresh_database(backend, tmp_path) as url:
        upgrade(url)
        settings = fast_settings.model_copy(update={"database_url": url})
        database = Database(settings)
        try:
            with database.session(write=True) as session:
                hooks = [
                    Webhook(
                        url=f"http://127.0.0.1:9/{n}",
                        events=["items.labeled"],
                        secret=new_secret(),
                        created_by="test",
                    )
                    for n in range(3)
                ]
                session.add_all(hooks)
                session.flush()
                for _ in range(3):
                    events.emit(
                        session,
                        EventType.items_labeled,
                        project_id=None,
                        data=ItemsLabeledData(project_id=1, count=0, items=[]),
                    )
                session.commit()
                ids = [hook.id for hook in hooks if hook.id is not None]
            first = webhook_delivery.claim_due(
                database, settings, limit=10, busy={ids[0]}, per_webhook=1
            )
            second = webhook_delivery.claim_due(database, settings, limit=10, per_webhook=1)
        finally:
            database.engine.dispose()
    assert sorted(c.webhook_id for c in first) == ids[1:]
    assert sorted(c.webhook_id for c in second) == ids
