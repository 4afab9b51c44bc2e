"""Hostile input on the write endpoints: each gets a clear 4xx problem and changes nothing.

Oversized bodies, runaway nesting, invalid UTF-8, NaN and Infinity, control characters in
labels, and on the lists enormous limits and forged cursors (docs/hardening.md).
"""

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, SQLModel, func, select

from app.models.annotation import Annotation
from app.models.base import MAX_JSON_DEPTH
from app.models.item import Item
from app.models.prediction import Prediction
from app.models.production import ProductionPrediction
from app.models.project import Project
from tests.conftest import ClientFactory
from tests.factories import auth, ingest, make_key, make_project

JSON = "application/json"
NDJSON = "application/x-ndjson"
TABLES: tuple[type[SQLModel], ...] = (Project, Item, Annotation, Prediction, ProductionPrediction)


def counts(session: Session) -> dict[str, int]:
    return {
        table.__name__: session.exec(select(func.count()).select_from(table)).one()
        for table in TABLES
    }


def nested(depth: int) -> Any:
    """A JSON object `depth` levels deep: {"k": {"k": ... 1}}."""
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


@dataclass(frozen=True)
class Target:
    path: str  # under /v1/projects/{id}; "" is POST /v1/projects itself
    media_type: str
    # The body around one value: an entry whose `slot` holds `value` (already JSON text).
    wrap: Callable[[int, str], str]


TARGETS = {
    "items-json": Target(
        "/items", JSON, lambda item, value: f'[{{"text": "hostile", "data": {{"x": {value}}}}}]'
    ),
    "items-ndjson": Target(
        "/items",
        NDJSON,
        lambda item, value: f'{{"text": "hostile", "metadata": {{"x": {value}}}}}\n',
    ),
    "annotations": Target(
        "/annotations",
        JSON,
        lambda item, value: f'[{{"item_id": {item}, "label": "positive", "duration_ms": {value}}}]',
    ),
    "projects": Target(
        "",
        JSON,
        lambda item, value: (
            f'{{"name": "hostile", "labels": ["a", "b"], "auto_accept_threshold": {value}}}'
        ),
    ),
    "predictions": Target(
        "/predictions",
        JSON,
        lambda item, value: (
            f'[{{"item_id": {item}, "model_version": "m", '
            f'"probabilities": {{"positive": {value}, "negative": 0.5}}}}]'
        ),
    ),
    "production-samples": Target(
        "/production-samples",
        JSON,
        lambda item, value: (
            '{"predictions": [{"external_id": "p-1", "text": "hostile", "label": "positive", '
            f'"confidence": 0.5, "model_version": "m", "metadata": {{"x": {value}}}}}]}}'
        ),
    ),
}


@dataclass
class Setup:
    client: TestClient
    session: Session
    headers: dict[str, str]
    project_id: int
    item_id: int

    def post(self, target: Target, body: bytes) -> Any:
        url = f"/v1/projects{'/' + str(self.project_id) + target.path if target.path else ''}"
        return self.client.post(
            url, content=body, headers={**self.headers, "content-type": target.media_type}
        )

    def refused(self, target: Target, body: bytes, statuses: tuple[int, ...]) -> dict[str, Any]:
        """Post the body; it must be a 4xx problem among `statuses` that wrote nothing."""
        before = counts(self.session)
        response = self.post(target, body)
        assert response.status_code in statuses, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert counts(self.session) == before
        problem: dict[str, Any] = response.json()
        return problem


def setup_for(client: TestClient, session: Session) -> Setup:
    headers = auth(make_key(session))
    project = make_project(client, headers)
    item_id = ingest(client, headers, project["id"], [{"text": "seed"}])["results"][0]["id"]
    return Setup(client, session, headers, project["id"], item_id)


@pytest.fixture
def setup(client: TestClient, session: Session) -> Setup:
    return setup_for(client, session)


def test_a_well_formed_body_is_accepted_by_every_target(setup: Setup) -> None:
    """The baseline: with a harmless value each target body writes something, so the
    refusals below are about the hostile value, not a broken body."""
    harmless = {"annotations": "5", "projects": "0.9", "predictions": "0.5"}
    for name, target in TARGETS.items():
        body = target.wrap(setup.item_id, harmless.get(name, '"ok"'))
        response = setup.post(target, body.encode())
        assert response.status_code in (200, 201), (name, response.text)


class TestOversizedBodies:
    @pytest.mark.parametrize("name", [n for n in TARGETS if TARGETS[n].media_type == JSON])
    def test_a_body_over_the_limit_is_413(
        self, client_with: ClientFactory, session: Session, name: str
    ) -> None:
        setup = setup_for(client_with(max_body_bytes=4_096), session)
        # A well-formed body, its size in a long string: a note, a description, a text.
        long = json.dumps("x" * 5_000)
        values = {"annotations": f'5, "note": {long}', "projects": f'0.9, "description": {long}'}
        if name == "predictions":
            entry = TARGETS[name].wrap(setup.item_id, "0.5")[1:-1]
            body = "[" + ", ".join([entry] * 60) + "]"
        else:
            body = TARGETS[name].wrap(setup.item_id, values.get(name, long))
        assert len(body) > 4_096
        problem = setup.refused(TARGETS[name], body.encode(), (413,))
        assert "4096 bytes" in problem["detail"]

    def test_an_ndjson_line_over_the_line_limit_fails_alone(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        setup = setup_for(client_with(max_ndjson_line_bytes=1_024), session)
        line = TARGETS["items-ndjson"].wrap(setup.item_id, json.dumps("x" * 2_000))
        problem = setup.refused(TARGETS["items-ndjson"], line.encode(), (422,))
        assert "over 1024 bytes" in json.dumps(problem)


class TestDeepNesting:
    @pytest.mark.parametrize("name", ["items-json", "items-ndjson", "production-samples"])
    def test_data_and_metadata_past_the_depth_limit_are_422(self, setup: Setup, name: str) -> None:
        # {"x": <value>} adds one level to the value's own depth.
        body = TARGETS[name].wrap(setup.item_id, json.dumps(nested(MAX_JSON_DEPTH)))
        problem = setup.refused(TARGETS[name], body.encode(), (422,))
        assert f"nested more than {MAX_JSON_DEPTH} levels deep" in json.dumps(problem)

    @pytest.mark.parametrize("name", ["items-json", "production-samples"])
    def test_data_at_the_depth_limit_is_stored(self, setup: Setup, name: str) -> None:
        body = TARGETS[name].wrap(setup.item_id, json.dumps(nested(MAX_JSON_DEPTH - 1)))
        response = setup.post(TARGETS[name], body.encode())
        assert response.status_code == 200, response.text

    def test_nesting_in_arrays_counts_too(self, setup: Setup) -> None:
        deep_list = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
        body = TARGETS["items-json"].wrap(setup.item_id, deep_list)
        setup.refused(TARGETS["items-json"], body.encode(), (422,))

    @pytest.mark.parametrize("name", list(TARGETS))
    def test_a_body_nested_past_the_parser_is_a_4xx(self, setup: Setup, name: str) -> None:
        body = TARGETS[name].wrap(setup.item_id, "[" * 100_000 + "]" * 100_000)
        setup.refused(TARGETS[name], body.encode(), (400, 422))


class TestInvalidUtf8:
    @pytest.mark.parametrize("name", list(TARGETS))
    def test_invalid_utf8_is_a_4xx(self, setup: Setup, name: str) -> None:
        body = TARGETS[name].wrap(setup.item_id, '"\x00BAD"').encode()
        body = body.replace(b"\x00BAD", b"\xff\xfe\xc3")
        setup.refused(TARGETS[name], body, (400, 422))


class TestNonFiniteNumbers:
    @pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
    @pytest.mark.parametrize("name", list(TARGETS))
    def test_nan_and_infinity_are_422(self, setup: Setup, name: str, value: str) -> None:
        body = TARGETS[name].wrap(setup.item_id, value)
        setup.refused(TARGETS[name], body.encode(), (422,))

    def test_an_overflowing_number_literal_is_422(self, setup: Setup) -> None:
        """1e400 parses to infinity: refused like the Infinity literal."""
        for name in ("annotations", "projects", "predictions", "production-samples"):
            body = TARGETS[name].wrap(setup.item_id, "1e400")
            setup.refused(TARGETS[name], body.encode(), (422,))


CONTROL_LABELS = ["red\x1b[31m", "two\nlines", "tab\there", "bell\x07", "del\x7f", "c1\x85x"]


class TestControlCharactersInLabels:
    @pytest.mark.parametrize("label", CONTROL_LABELS)
    def test_creating_a_project_with_one_is_422(self, setup: Setup, label: str) -> None:
        body = json.dumps({"name": "ctl", "labels": ["fine", label]})
        problem = setup.refused(TARGETS["projects"], body.encode(), (422,))
        assert problem["errors"][0]["loc"] == ["body", "labels", 1]
        assert "control characters" in problem["errors"][0]["msg"]

    @pytest.mark.parametrize("label", CONTROL_LABELS[:2])
    def test_patching_labels_with_one_is_422(self, setup: Setup, label: str) -> None:
        url = f"/v1/projects/{setup.project_id}"
        before = setup.client.get(url, headers=setup.headers).json()
        labels = [*before["labels"], label]
        response = setup.client.patch(url, json={"labels": labels}, headers=setup.headers)
        assert response.status_code == 422, response.text
        assert setup.client.get(url, headers=setup.headers).json() == before

    def test_annotating_with_one_is_422(self, setup: Setup) -> None:
        body = json.dumps([{"item_id": setup.item_id, "label": "positive\x1b"}])
        setup.refused(TARGETS["annotations"], body.encode(), (422,))

    def test_surrounding_whitespace_is_still_trimmed_not_refused(self, setup: Setup) -> None:
        response = setup.client.post(
            "/v1/projects", json={"name": "trim", "labels": [" a\n", "b"]}, headers=setup.headers
        )
        assert response.status_code == 201 and response.json()["labels"] == ["a", "b"]


LISTS = [
    "/v1/projects",
    "/v1/projects/{id}/items",
    "/v1/projects/{id}/annotations",
    "/v1/projects/{id}/reviews",
    "/v1/api-keys",
    "/v1/jobs",
]


def forged(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_CURSORS = {
    "not base64": "!!!not-base64!!!",
    "not json": forged(b"\xff\xfe garbage"),
    "a list": forged(b"[1]"),
    "no after": forged(b'{"before": 5}'),
    "a string id": forged(b'{"after": "5"}'),
    "a float id": forged(b'{"after": 5.0}'),
    "a bool id": forged(b'{"after": true}'),
    "zero": forged(b'{"after": 0}'),
    "negative": forged(b'{"after": -1}'),
    "overflowing": forged(b'{"after": 1e400}'),
    "a huge integer": forged(b'{"after": ' + b"9" * 4_000 + b"}"),
    "nested past the parser": forged(b"[" * 5_000),
    "NaN": forged(b'{"after": NaN}'),
}


class TestPaging:
    @pytest.mark.parametrize("path", LISTS)
    @pytest.mark.parametrize("cursor", list(FORGED_CURSORS.values()), ids=list(FORGED_CURSORS))
    def test_a_forged_cursor_is_422(self, setup: Setup, path: str, cursor: str) -> None:
        url = path.format(id=setup.project_id)
        response = setup.client.get(url, params={"cursor": cursor}, headers=setup.headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [{"loc": ["query", "cursor"], "msg": "invalid cursor"}]

    @pytest.mark.parametrize("path", LISTS)
    @pytest.mark.parametrize("limit", ["0", "-5", "abc", "1e3", "1.5", "9" * 5_000])
    def test_a_limit_that_is_not_a_page_size_is_422(
        self, setup: Setup, path: str, limit: str
    ) -> None:
        url = path.format(id=setup.project_id)
        response = setup.client.get(url, params={"limit": limit}, headers=setup.headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["query", "limit"]

    def test_an_enormous_limit_is_clamped_to_the_maximum(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        """The contract clamps `limit` (API.md: default 100, max 1000) rather than refusing."""
        setup = setup_for(client_with(max_page_size=2), session)
        ingest(setup.client, setup.headers, setup.project_id, [{"text": "b"}, {"text": "c"}])
        url = f"/v1/projects/{setup.project_id}/items"
        page = setup.client.get(url, params={"limit": str(10**30)}, headers=setup.headers)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) == 2 and page.json()["next_cursor"] is not None
