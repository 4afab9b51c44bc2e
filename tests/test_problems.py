"""The problem types: one class each, documented from the classes, declared on operations.

The check that every answered problem type is declared by its operation runs during the
whole suite (tests/conftest.py wraps the app's problem handlers); this module checks the
types themselves, the generated docs/errors.md, and that the check fires.
"""

import json
from http import HTTPStatus
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.routing import ProblemRouter
from app.cli import write_openapi
from app.errors import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPES,
    AppError,
    Conflict,
    LeaseHeldByAnother,
    NoActiveModel,
    NotFound,
    TrainingRefused,
    declared_problems,
    problem_responses,
)
from app.errors_doc import render
from tests.conftest import UNDECLARED_PROBLEMS, check_declared_problems

ROOT = Path(__file__).resolve().parents[1]


def test_committed_errors_doc_matches_the_classes() -> None:
    committed = (ROOT / "docs" / "errors.md").read_text()
    assert committed == render(), "docs/errors.md is stale: run `make openapi`"


@pytest.mark.parametrize("kind", list(PROBLEM_TYPES.values()), ids=list(PROBLEM_TYPES))
def test_each_type_is_its_own_class_with_a_title_and_a_when(kind: type[AppError]) -> None:
    assert PROBLEM_TYPES[kind.slug] is kind
    assert kind.title == HTTPStatus(kind.status).phrase
    assert len(kind.when()) > 20
    problem = kind.problem("what happened")
    assert (problem.type, problem.title, problem.status) == (
        f"/problems/{kind.slug}",
        kind.title,
        kind.status,
    )
    assert not (kind.job_only and kind.entry_only)


def test_a_second_class_for_a_slug_is_refused() -> None:
    with pytest.raises(TypeError, match="slug 'conflict'"):

        class Again(Conflict):
            """Another conflict."""

            slug = "conflict"

    with pytest.raises(TypeError, match="names its own slug"):

        class Unnamed(Conflict):
            """A conflict without a slug of its own."""


def test_specific_types_are_caught_as_their_general_type() -> None:
    with pytest.raises(Conflict):
        raise NoActiveModel("no model")


def test_job_and_entry_types_cannot_be_declared() -> None:
    with pytest.raises(TypeError, match="never a response"):
        problem_responses(TrainingRefused)


def test_the_spec_names_every_declared_type_and_no_job_only_one(tmp_path: Path) -> None:
    write_openapi(tmp_path / "spec.json")
    spec = json.loads((tmp_path / "spec.json").read_text())
    answered: set[str] = set()
    for methods in spec["paths"].values():
        for operation in methods.values():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                kinds = declared_problems(response)
                assert kinds and {k.status for k in kinds} == {int(status)}
                assert all(k.slug in response["description"] for k in kinds)
                for ref in response["content"][PROBLEM_MEDIA_TYPE]["examples"].values():
                    name = ref["$ref"].removeprefix("#/components/examples/")
                    example = spec["components"]["examples"][name]["value"]
                    assert example["status"] == int(status)
                    assert example["type"] == f"/problems/{name}"
                answered |= {k.slug for k in kinds}
    never_answered = {s for s, k in PROBLEM_TYPES.items() if k.job_only or k.entry_only}
    assert not answered & never_answered
    # Every other type is some operation's answer (method-not-allowed: the framework's;
    # cors-refused: the CORS layer's, before any operation).
    assert set(PROBLEM_TYPES) - never_answered - answered == {"method-not-allowed", "cors-refused"}


def test_route_types_add_to_the_router_types() -> None:
    router = ProblemRouter(responses=problem_responses(NotFound))

    @router.get("/batch", responses=problem_responses(LeaseHeldByAnother, Conflict))
    def batch() -> None: ...

    app = FastAPI()
    app.include_router(router)
    responses = app.openapi()["paths"]["/batch"]["get"]["responses"]
    assert [k.slug for k in declared_problems(responses["404"])] == ["not-found"]
    assert [k.slug for k in declared_problems(responses["409"])] == [
        "conflict",
        "lease-held-by-another",
    ]


def test_an_undeclared_problem_type_fails_the_test_that_met_it() -> None:
    from app.main import handle_app_error

    router = ProblemRouter(responses=problem_responses(NotFound))

    @router.get("/declared")
    def declared() -> None:
        raise NotFound("no such thing")

    @router.get("/undeclared")
    def undeclared() -> None:
        raise NoActiveModel("no model")

    app = FastAPI()
    app.include_router(router)
    app.add_exception_handler(AppError, handle_app_error)
    client = TestClient(check_declared_problems(app), raise_server_exceptions=False)
    assert client.get("/declared").status_code == 404
    assert not UNDECLARED_PROBLEMS
    answer = client.get("/undeclared")
    assert answer.status_code == 500 and "/problems/no-active-model" in answer.json()["detail"]
    assert [answer.json()["detail"]] == UNDECLARED_PROBLEMS
    UNDECLARED_PROBLEMS.clear()  # met on purpose: not this test's failure
