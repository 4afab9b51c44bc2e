"""Schema fuzzing: Schemathesis sends generated requests to every operation of the committed spec.

The committed `openapi/openapi.json` is the contract, so the cases come from it, not from the
live app's spec. The app runs with its real lifespan (bootstrap admin key, job runner) on a
migrated database of its own, reached in-process over ASGI, with an admin key. No response may
be a 5xx, and each one's status code, content type and body must be the ones the spec declares
(a problem type its operation does not declare is answered as a 500, so it fails too).
Every operation is fuzzed; nothing is excluded. See docs/hardening.md.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import Case, SerializationContext
from schemathesis.config import SchemathesisConfig

from app.main import create_app
from app.settings import Settings
from tests.conftest import ADMIN_SECRET, check_declared_problems
from tests.fake_llm import FakeLLM

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"

# The first project of a fresh database: the fixture below creates it and checks its id. Pinning
# `{project_id}` makes the project's operations reach their own logic instead of stopping at a
# 404 (unknown ids are covered by the API tests); every other parameter is generated.
SEEDED_PROJECT_ID = 1
SEEDED_LABELS = ("bug", "feature")

CONFIG = SchemathesisConfig.from_dict(
    {
        # Reproducible in CI: a fixed seed, derandomized generation, no example database.
        "seed": 20261129,
        # Bounded: 15 examples per operation and phase; under a minute per database.
        "generation": {"max-examples": 15, "deterministic": True, "database": "none"},
        # A hard per-request deadline: a hung request fails the test instead of stalling CI.
        "request-timeout": 30,
        # Half of the generated labels are the seeded project's, so annotations, reviews,
        # production samples, project examples and synthetic requests get past the
        # "unknown label" 422 too.
        "dictionaries": {"labels": {"values": list(SEEDED_LABELS)}},
        "parameters": {
            "project_id": SEEDED_PROJECT_ID,
            **{
                f"body.{path}": {"dictionary": "labels", "probability": 0.5}
                for path in ("label", "[*].label", "predictions[*].label", "examples[*].label")
            },
        },
    }
)

schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_SECRET}"}


@schemathesis.serializer("application/x-ndjson")
def ndjson(_: SerializationContext, value: Any) -> bytes:
    """Streamed ingest: the spec's schema is one item, sent as one line (a list as many)."""
    if isinstance(value, bytes):
        return value
    lines = value if isinstance(value, list) else [value]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@pytest.fixture(scope="module")
def fuzzed_app(live_settings: Settings) -> Iterator[FastAPI]:
    """The app as deployed: an LLM endpoint configured (a fake one, so POST /synthetic is
    accepted rather than 503 llm-not-configured), and one project with labeled items."""
    with FakeLLM() as llm:
        settings = live_settings.model_copy(
            update={
                "llm_base_url": llm.base_url,
                "llm_model": "fake-model",
                "llm_max_retries": 0,
                # Generated webhook URLs may name public addresses: send to none of them.
                "webhooks_sender": False,
            }
        )
        # An answer whose problem type its operation does not declare becomes a 500 here too.
        app = check_declared_problems(create_app(settings))
        with TestClient(app, headers=ADMIN_HEADERS) as client:
            seed_project(client)
        # Schemathesis starts the lifespan again on its first request and ends it after each
        # test (its pytest plugin), so every operation runs against a started app.
        yield app


def seed_project(client: TestClient) -> None:
    project = client.post(
        "/v1/projects",
        json={"name": "fuzzed", "labels": list(SEEDED_LABELS), "phase": "production"},
    )
    assert project.status_code == 201, project.text
    assert project.json()["id"] == SEEDED_PROJECT_ID
    items = client.post(
        f"/v1/projects/{SEEDED_PROJECT_ID}/items",
        json=[
            {"external_id": f"t-{i}", "text": f"ticket number {i} about a {topic}"}
            for i, topic in enumerate(["crash", "request", "error", "wish"] * 3)
        ],
    )
    assert items.status_code == 200, items.text
    ids = [result["id"] for result in items.json()["results"]]
    annotations = client.post(
        f"/v1/projects/{SEEDED_PROJECT_ID}/annotations",
        json=[
            {"item_id": item_id, "label": "bug" if i % 2 == 0 else "feature"}
            for i, item_id in enumerate(ids[:8])
        ],
    )
    assert annotations.status_code == 200, annotations.text


@schema.parametrize()
def test_every_operation_conforms(case: Case[Any], fuzzed_app: FastAPI) -> None:
    case.call_and_validate(app=fuzzed_app, headers=ADMIN_HEADERS, checks=CHECKS)
