"""Who may call what: every /v1 route by every kind of caller against the expected status.

The route list comes from the app itself, so a new route without an entry in ALLOWED fails
`test_every_route_has_an_entry` instead of going untested. ALLOWED is written from the API
contract (/work/shared/API.md, README "What the API does"), not read off app/deps.py: a route
whose gate drifts from it fails here.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.models.annotation import Annotation
from app.models.api_key import ApiKeyCreate
from app.models.base import Role
from app.models.batch import Batch, Lease
from app.models.review import Review
from app.services import api_keys
from tests.factories import auth, ingest, make_key, make_project, unique

ANY_ROLE = frozenset(Role)
WRITERS = frozenset({Role.admin, Role.service})
ADMIN = frozenset({Role.admin})

# (method, path template) -> the roles let through. Annotators: read projects and items,
# fetch (and manage) their batches, submit their own annotations and reviews of items they
# hold; the service role does everything but key management. Routes marked BEYOND let
# annotators read more than API.md's annotator list names; they encode what the code does
# today and are reported in docs/hardening.md for a decision.
ALLOWED: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/v1/me"): ANY_ROLE,
    ("POST", "/v1/api-keys"): ADMIN,
    ("GET", "/v1/api-keys"): ADMIN,
    ("DELETE", "/v1/api-keys/{key_id}"): ADMIN,
    ("POST", "/v1/projects"): WRITERS,
    ("GET", "/v1/projects"): ANY_ROLE,
    ("GET", "/v1/projects/{project_id}"): ANY_ROLE,
    ("PATCH", "/v1/projects/{project_id}"): WRITERS,
    ("GET", "/v1/projects/{project_id}/phase-changes"): ANY_ROLE,
    ("GET", "/v1/projects/{project_id}/stats"): WRITERS,
    ("POST", "/v1/projects/{project_id}/items"): WRITERS,
    ("GET", "/v1/projects/{project_id}/items"): ANY_ROLE,
    ("GET", "/v1/projects/{project_id}/items/{item_id}"): ANY_ROLE,
    ("POST", "/v1/projects/{project_id}/annotations"): ANY_ROLE,
    ("GET", "/v1/projects/{project_id}/annotations"): ANY_ROLE,
    ("POST", "/v1/projects/{project_id}/reviews"): ANY_ROLE,
    ("GET", "/v1/projects/{project_id}/reviews"): ANY_ROLE,
    ("POST", "/v1/projects/{project_id}/batches"): ANY_ROLE,
    ("GET", "/v1/projects/{project_id}/batches/{batch_id}"): ANY_ROLE,
    ("DELETE", "/v1/projects/{project_id}/batches/{batch_id}"): ANY_ROLE,
    ("POST", "/v1/projects/{project_id}/batches/{batch_id}/skip"): ANY_ROLE,
    ("POST", "/v1/projects/{project_id}/batches/{batch_id}/renew"): ANY_ROLE,
    ("GET", "/v1/algorithms"): ANY_ROLE,  # BEYOND
    ("POST", "/v1/projects/{project_id}/models"): WRITERS,
    ("GET", "/v1/projects/{project_id}/models"): ANY_ROLE,  # BEYOND
    ("GET", "/v1/projects/{project_id}/models/{version}"): ANY_ROLE,  # BEYOND
    ("POST", "/v1/projects/{project_id}/models/{version}/activate"): WRITERS,
    ("POST", "/v1/projects/{project_id}/predictions"): WRITERS,
    ("POST", "/v1/projects/{project_id}/prelabels"): WRITERS,
    ("GET", "/v1/projects/{project_id}/prelabels/audit"): ANY_ROLE,  # BEYOND
    ("GET", "/v1/projects/{project_id}/active-learning"): ANY_ROLE,  # BEYOND
    ("POST", "/v1/projects/{project_id}/active-learning/simulations"): WRITERS,
    ("GET", "/v1/projects/{project_id}/agreement"): WRITERS,
    ("GET", "/v1/projects/{project_id}/consensus"): WRITERS,
    ("GET", "/v1/projects/{project_id}/cost"): WRITERS,
    ("POST", "/v1/projects/{project_id}/label-issues"): WRITERS,
    ("GET", "/v1/projects/{project_id}/label-issues"): WRITERS,
    ("GET", "/v1/projects/{project_id}/label-issues/{report_id}"): WRITERS,
    ("POST", "/v1/projects/{project_id}/synthetic"): WRITERS,
    ("POST", "/v1/projects/{project_id}/production-samples"): WRITERS,
    ("GET", "/v1/projects/{project_id}/production-samples/report"): WRITERS,
    ("GET", "/v1/projects/{project_id}/production-samples/disagreements"): WRITERS,
    ("POST", "/v1/projects/{project_id}/imports"): WRITERS,
    ("POST", "/v1/projects/{project_id}/imports/upload"): WRITERS,
    ("POST", "/v1/projects/{project_id}/dataset-versions"): WRITERS,
    ("GET", "/v1/projects/{project_id}/dataset-versions"): WRITERS,
    ("GET", "/v1/projects/{project_id}/dataset-versions/{version}"): WRITERS,
    ("GET", "/v1/projects/{project_id}/dataset-versions/{version}/export"): WRITERS,
    ("GET", "/v1/projects/{project_id}/dataset-versions/{version}/diff"): WRITERS,
    ("GET", "/v1/jobs/{job_id}"): WRITERS,
    ("GET", "/v1/jobs"): WRITERS,
    ("POST", "/v1/jobs/{job_id}/cancel"): WRITERS,
    ("POST", "/v1/jobs/{job_id}/retry"): WRITERS,
    ("POST", "/v1/webhooks"): ADMIN,
    ("GET", "/v1/webhooks"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("DELETE", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): ADMIN,
}

# A body each allowed caller can send (valid where that is cheap); the auth decision is
# taken before the body is validated, so refused callers send the same one.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/api-keys"): {"name": "matrix-new", "role": "annotator"},
    ("POST", "/v1/projects"): {"name": "matrix-new", "labels": ["a", "b"]},
    ("PATCH", "/v1/projects/{project_id}"): {"description": "changed"},
    ("POST", "/v1/projects/{project_id}/items"): [{"text": "another item"}],
    ("POST", "/v1/projects/{project_id}/annotations"): [{"item_id": 0, "label": "positive"}],
    # An unknown label is refused before the review-lease check, so an annotator gets past
    # the role gate to a 422 like everyone else (leases are tested in TestOwnName).
    ("POST", "/v1/projects/{project_id}/reviews"): {"item_id": 0, "label": "no-such-label"},
    ("POST", "/v1/projects/{project_id}/batches"): {"size": 1},
    ("POST", "/v1/projects/{project_id}/batches/{batch_id}/skip"): {"item_ids": [0]},
    ("POST", "/v1/projects/{project_id}/batches/{batch_id}/renew"): {},
    ("POST", "/v1/projects/{project_id}/models"): {},
    ("POST", "/v1/projects/{project_id}/predictions"): [
        {
            "item_id": 0,
            "probabilities": {"positive": 0.5, "negative": 0.25, "neutral": 0.25},
            "model_version": "external-1",
        }
    ],
    ("POST", "/v1/projects/{project_id}/prelabels"): {},
    ("POST", "/v1/projects/{project_id}/active-learning/simulations"): {},
    ("POST", "/v1/projects/{project_id}/label-issues"): {},
    ("POST", "/v1/projects/{project_id}/synthetic"): {"label": "positive", "count": 1},
    ("POST", "/v1/projects/{project_id}/production-samples"): {"predictions": []},
    ("POST", "/v1/projects/{project_id}/imports"): {"kind": "click_logs", "sessions": []},
    ("POST", "/v1/projects/{project_id}/dataset-versions"): {},
    ("POST", "/v1/webhooks"): {"url": "http://127.0.0.1:9/", "events": ["job.failed"]},
}

CALLERS = ("no key", "unknown key", "revoked key", "annotator", "service", "admin")


def v1_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app serves under /v1, read from its routes."""
    found = set()
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute):
            continue
        path = context.path_format or ""
        if path.startswith("/v1/") or path == "/v1":
            found |= {(method, path) for method in context.methods or ()}
    return found


def test_every_route_has_an_entry(app: FastAPI) -> None:
    served = v1_routes(app)
    assert served, "no /v1 routes found: the route walk is broken"
    assert sorted(served - ALLOWED.keys()) == [], "routes without an expected role set"
    assert sorted(ALLOWED.keys() - served) == [], "entries for routes the app does not serve"


@dataclass
class World:
    """Real resources for the path parameters, and one key per kind of caller."""

    project_id: int
    item_id: int
    spare_key_id: int
    headers: dict[str, dict[str, str]]

    def path(self, template: str) -> str:
        return template.format(
            project_id=self.project_id,
            item_id=self.item_id,
            key_id=self.spare_key_id,
            batch_id=1,
            version=1,
            report_id=1,
            job_id=1,
            webhook_id=1,
            delivery_id=1,
        )

    def body(self, key: tuple[str, str]) -> Any:
        body = BODIES.get(key)
        if isinstance(body, list):
            return [_with_item(entry, self.item_id) for entry in body]
        return _with_item(body, self.item_id) if isinstance(body, dict) else body


def _with_item(entry: dict[str, Any], item_id: int) -> dict[str, Any]:
    entry = dict(entry)
    if "item_id" in entry:
        entry["item_id"] = item_id
    if "item_ids" in entry:
        entry["item_ids"] = [item_id]
    if entry.get("name") == "matrix-new":
        entry["name"] = unique("matrix")
    return entry


@pytest.fixture
def world(client: TestClient, session: Session) -> Iterator[World]:
    admin = auth(make_key(session, role=Role.admin))
    project = make_project(client, admin)
    item_id = ingest(client, admin, project["id"], [{"text": "an item"}])["results"][0]["id"]
    revoked, revoked_secret = api_keys.create_api_key(
        session, data=ApiKeyCreate(name=unique("revoked"), role=Role.admin)
    )
    spare, _ = api_keys.create_api_key(
        session, data=ApiKeyCreate(name=unique("spare"), role=Role.annotator)
    )
    assert revoked.id is not None and spare.id is not None
    by = api_keys.Principal(key_id=spare.id, name=spare.name, role=Role.admin, tier=None)
    api_keys.revoke_api_key(session, key_id=revoked.id, by=by)
    yield World(
        project_id=project["id"],
        item_id=item_id,
        spare_key_id=spare.id,
        headers={
            "no key": {},
            "unknown key": auth("lw_" + "x" * 43),
            "revoked key": auth(revoked_secret),
            "annotator": auth(make_key(session, role=Role.annotator)),
            "service": auth(make_key(session, role=Role.service)),
            "admin": admin,
        },
    )


def expected_outcome(caller: str, allowed: frozenset[Role]) -> int | None:
    """401 or 403 for a refusal; None when the caller must get past the gate."""
    if caller in ("no key", "unknown key", "revoked key"):
        return 401
    return None if Role(caller) in allowed else 403


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "template"), sorted(ALLOWED), ids=" ".join)
def test_route_by_caller(
    client: TestClient, world: World, method: str, template: str, caller: str
) -> None:
    body = world.body((method, template))
    response = client.request(
        method,
        world.path(template),
        headers=world.headers[caller],
        json=body if body is not None else None,
    )
    expected = expected_outcome(caller, ALLOWED[(method, template)])
    if expected is None:
        assert response.status_code not in (401, 403), response.text
        return
    assert response.status_code == expected, response.text
    problem = response.json()
    assert problem["type"].endswith("unauthorized" if expected == 401 else "forbidden")
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "lw_" + "x" * 43, "Bearer lw_\u00e9"],
)
def test_malformed_authorization_is_401(client: TestClient, authorization: str) -> None:
    response = client.get("/v1/projects", headers={b"authorization": authorization.encode()})
    assert response.status_code == 401, response.text


# --- annotators act only in their own name --------------------------------------------------------


def snapshot(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """What an annotator could change: answers, batches, leases (with their state), reviews."""
    return {
        "annotation": [
            (a.item_id, a.annotator, a.label, a.is_current)
            for a in session.exec(select(Annotation))
        ],
        "batch": [(b.id, b.annotator) for b in session.exec(select(Batch))],
        "lease": [
            (lease.item_id, lease.annotator, lease.released_at, lease.outcome)
            for lease in session.exec(select(Lease))
        ],
        "review": [(r.item_id, r.reviewer, r.label) for r in session.exec(select(Review))],
    }


@dataclass
class Team:
    client: TestClient
    session: Session
    admin: dict[str, str]
    ann: dict[str, str]
    bea: dict[str, str]
    project_id: int
    item_ids: list[int]

    def url(self, tail: str) -> str:
        return f"/v1/projects/{self.project_id}/{tail}"

    def refused(
        self, status: int, method: str, tail: str, headers: dict[str, str], **kw: Any
    ) -> str:
        """The request is refused with `status` and changes nothing; returns the detail."""
        before = snapshot(self.session)
        response = self.client.request(method, self.url(tail), headers=headers, **kw)
        assert response.status_code == status, response.text
        assert snapshot(self.session) == before
        detail: str = response.json()["detail"]
        return detail


@pytest.fixture
def team(client: TestClient, session: Session) -> Team:
    """Two annotators and a project of two items each needing two answers; the first item
    has split answers (from an import in two names), so it waits in the review queue."""
    admin = auth(make_key(session))
    ann = auth(make_key(session, role=Role.annotator, name=unique("ann")))
    bea = auth(make_key(session, role=Role.annotator, name=unique("bea")))
    project = make_project(client, admin, annotators_per_item=2)
    report = ingest(client, admin, project["id"], [{"text": "split"}, {"text": "fresh"}])
    ids = [r["id"] for r in report["results"]]
    url = f"/v1/projects/{project['id']}/annotations"
    split = [
        {"item_id": ids[0], "label": "positive", "annotator": "import-x"},
        {"item_id": ids[0], "label": "negative", "annotator": "import-y"},
    ]
    assert client.post(url, json=split, headers=admin).status_code == 200
    item = client.get(f"/v1/projects/{project['id']}/items/{ids[0]}", headers=admin).json()
    assert item["status"] == "needs_review"
    return Team(client, session, admin, ann, bea, project["id"], ids)


class TestOwnName:
    def test_annotations_in_another_name_or_source_are_refused_whole(self, team: Team) -> None:
        mine = {"item_id": team.item_ids[1], "label": "positive"}
        for forged in ({"annotator": "someone-else"}, {"source": "import"}, {"source": "model"}):
            body = [mine, {**mine, "item_id": team.item_ids[0], **forged}]
            detail = team.refused(403, "POST", "annotations", team.ann, json=body)
            assert "Entry 1" in detail

    def test_a_batch_for_someone_else_is_refused(self, team: Team) -> None:
        body = {"size": 1, "annotator": "someone-else"}
        assert "only for itself" in team.refused(403, "POST", "batches", team.ann, json=body)

    def test_another_annotators_batch_is_theirs_alone(self, team: Team) -> None:
        response = team.client.post(team.url("batches"), json={"size": 2}, headers=team.bea)
        assert response.status_code == 201 and response.json()["items"], response.text
        batch_id = response.json()["id"]
        held = [entry["item"]["id"] for entry in response.json()["items"]]
        team.refused(409, "GET", f"batches/{batch_id}", team.ann)
        team.refused(409, "DELETE", f"batches/{batch_id}", team.ann)
        team.refused(409, "POST", f"batches/{batch_id}/skip", team.ann, json={"item_ids": held})
        team.refused(409, "POST", f"batches/{batch_id}/renew", team.ann, json={})

    def test_a_review_needs_a_review_lease_of_ones_own(self, team: Team) -> None:
        decision = {"item_id": team.item_ids[0], "label": "neutral"}
        # Holding nothing.
        team.refused(403, "POST", "reviews", team.ann, json=decision)
        # Holding the other item from the label queue: still not a reviewer of either.
        label_batch = team.client.post(team.url("batches"), json={"size": 5}, headers=team.ann)
        assert [e["item"]["id"] for e in label_batch.json()["items"]] == [team.item_ids[1]]
        team.refused(
            403, "POST", "reviews", team.ann, json={**decision, "item_id": team.item_ids[1]}
        )
        # Bea holds the split item from the review queue: ann still may not decide it.
        review_batch = team.client.post(
            team.url("batches"), json={"size": 5, "queue": "review"}, headers=team.bea
        )
        assert [e["item"]["id"] for e in review_batch.json()["items"]] == [team.item_ids[0]]
        team.refused(403, "POST", "reviews", team.ann, json=decision)
        # Bea, who holds it, may.
        decided = team.client.post(team.url("reviews"), json=decision, headers=team.bea)
        assert decided.status_code == 201, decided.text

    def test_reading_someone_elses_answers_or_reviews_is_refused(self, team: Team) -> None:
        team.refused(403, "GET", "annotations", team.ann, params={"annotator": "import-x"})
        team.refused(403, "GET", "reviews", team.ann, params={"reviewer": "someone-else"})
