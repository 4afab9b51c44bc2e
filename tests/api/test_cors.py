"""CORS for browser front-ends on other origins (LABELWISE_CORS_ORIGINS), and the 405's Allow.

What a real browser makes of these headers is tests/e2e/test_browser.py's part; here, the
headers themselves, on every route and on every kind of answer, errors included.
"""

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import Session

from app.cli import main
from app.main import create_app
from app.middleware import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS
from app.settings import Settings, get_settings
from tests.conftest import ClientFactory
from tests.factories import auth, make_key, make_project

FRONT_END = "http://label.example.test:3000"
OTHER = "http://evil.example.test"


def preflight(
    client: TestClient, path: str, *, origin: str = FRONT_END, method: str = "POST", **extra: str
) -> Any:
    headers = {"Origin": origin, "Access-Control-Request-Method": method, **extra}
    return client.options(path, headers=headers)


def comma_set(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def concrete(template: str) -> str:
    """A path of the template, every parameter 1."""
    return re.sub(r"\{[^}]+\}", "1", template)


def matcher(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")


@pytest.fixture
def cors(client_with: ClientFactory) -> TestClient:
    return client_with(cors_origins=[FRONT_END])


@pytest.fixture(scope="module")
def spec_paths(settings: Settings) -> dict[str, set[str]]:
    """Every path template of the spec with its methods."""
    spec = create_app(settings).openapi()
    return {path: {m.upper() for m in methods} for path, methods in spec["paths"].items()}


class TestSettings:
    def test_origins_are_comma_separated_and_compared_as_browsers_send_them(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("LABELWISE_CORS_ORIGINS", " https://Label.Example.com, http://x:8080 ,")
        assert Settings().cors_origins == ["https://label.example.com", "http://x:8080"]
        monkeypatch.setenv("LABELWISE_CORS_ORIGINS", "")
        assert Settings().cors_origins == []
        assert Settings().cors_allow_credentials is False

    @pytest.mark.parametrize(
        ("origins", "message"),
        [
            ("https://label.example.com/", "not an origin"),
            ("https://label.example.com/app", "not an origin"),
            ("label.example.com", "not an origin"),
            ("*, https://label.example.com", "stands alone"),
        ],
    )
    def test_what_no_browser_sends_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, origins: str, message: str
    ) -> None:
        monkeypatch.setenv("LABELWISE_CORS_ORIGINS", origins)
        with pytest.raises(ValidationError, match=message):
            Settings()

    def test_a_wildcard_with_credentials_is_refused_and_serve_says_why(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("LABELWISE_CORS_ORIGINS", "*")
        assert Settings().cors_origins == ["*"]
        monkeypatch.setenv("LABELWISE_CORS_ALLOW_CREDENTIALS", "true")
        with pytest.raises(ValidationError, match="cannot be combined"):
            Settings()
        monkeypatch.setenv("LABELWISE_CORS_ORIGINS", FRONT_END)
        assert Settings().cors_allow_credentials is True  # with listed origins: allowed
        monkeypatch.setenv("LABELWISE_CORS_ORIGINS", "*")
        get_settings.cache_clear()
        try:
            assert main(["serve"]) == 2
        finally:
            get_settings.cache_clear()
        error = capsys.readouterr().err
        assert "LABELWISE_CORS_ORIGINS='*' cannot be combined with" in error
        assert "LABELWISE_CORS_ALLOW_CREDENTIALS" in error


class TestSameOriginByDefault:
    def test_no_cors_headers_and_a_preflight_is_a_405_naming_the_methods(
        self, client: TestClient, session: Session
    ) -> None:
        answer = client.get("/v1/projects", headers={**auth(make_key(session)), "Origin": OTHER})
        assert answer.status_code == 200
        assert not [h for h in answer.headers if h.startswith("access-control-")]
        refused = preflight(client, "/v1/projects")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, POST"
        assert "access-control-allow-origin" not in refused.headers


class TestPreflight:
    def test_every_operation_answers_a_preflight_for_its_method(
        self, cors: TestClient, spec_paths: dict[str, set[str]]
    ) -> None:
        asked = ", ".join(CORS_ALLOW_HEADERS)
        for template, methods in spec_paths.items():
            for method in methods:
                answer = preflight(
                    cors,
                    concrete(template),
                    method=method,
                    **{"Access-Control-Request-Headers": asked},
                )
                assert answer.status_code == 200, (method, template, answer.text)
                assert answer.headers["access-control-allow-origin"] == FRONT_END
                assert method.lower() in comma_set(answer.headers["access-control-allow-methods"])
                allowed = comma_set(answer.headers["access-control-allow-headers"])
                assert {"authorization", "content-type", "x-request-id"} <= allowed
                assert "origin" in comma_set(answer.headers["vary"])

    def test_an_unlisted_origin_or_header_is_refused_in_problem_json(
        self, cors: TestClient
    ) -> None:
        refused = preflight(cors, "/v1/projects", origin=OTHER)
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert problem["type"] == "/problems/cors-refused"
        assert OTHER in problem["detail"] and "LABELWISE_CORS_ORIGINS" in problem["detail"]
        assert "access-control-allow-origin" not in refused.headers
        odd = preflight(cors, "/v1/projects", **{"Access-Control-Request-Headers": "X-Secret"})
        assert odd.status_code == 403 and "x-secret" in odd.json()["detail"]
        trace = preflight(cors, "/v1/projects", method="TRACE")
        assert trace.status_code == 403 and "TRACE" in trace.json()["detail"]


class TestAnswers:
    def test_a_listed_origin_reads_answers_and_the_headers_it_acts_on(
        self, cors: TestClient, session: Session
    ) -> None:
        headers = {**auth(make_key(session)), "Origin": FRONT_END}
        answer = cors.get("/v1/projects", headers=headers)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == FRONT_END
        assert "origin" in comma_set(answer.headers["vary"])
        exposed = comma_set(answer.headers["access-control-expose-headers"])
        assert {h.lower() for h in CORS_EXPOSE_HEADERS} == exposed
        assert {"location", "x-request-id", "x-dataset-content-hash"} <= exposed
        assert "access-control-allow-credentials" not in answer.headers

    def test_an_unlisted_origin_gets_no_grant(self, cors: TestClient, session: Session) -> None:
        answer = cors.get("/v1/projects", headers={**auth(make_key(session)), "Origin": OTHER})
        assert answer.status_code == 200  # the browser, not the server, withholds it
        assert "access-control-allow-origin" not in answer.headers

    def test_error_answers_carry_the_grant_too(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        cors = client_with(cors_origins=[FRONT_END], max_body_bytes=2_000)
        key = {**auth(make_key(session)), "Origin": FRONT_END}
        project = make_project(cors, auth(make_key(session)))
        answers = {
            401: cors.get("/v1/projects", headers={"Origin": FRONT_END}),
            404: cors.get("/v1/projects/999999", headers=key),
            405: cors.put("/v1/projects", headers=key),
            422: cors.post("/v1/projects", json={"labels": "nope"}, headers=key),
            # Refused by the body-limit middleware, before any route.
            413: cors.post(
                f"/v1/projects/{project['id']}/items",
                json=[{"text": f"item {i}"} for i in range(200)],
                headers=key,
            ),
        }
        for status, answer in answers.items():
            assert answer.status_code == status, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.headers["access-control-allow-origin"] == FRONT_END, status
            assert "x-request-id" in comma_set(answer.headers["access-control-expose-headers"])

    def test_a_500_carries_the_grant_too(self, settings: Settings) -> None:
        """Starlette answers a 500 from its outermost middleware: CORS wraps even that."""
        app = create_app(settings.model_copy(update={"cors_origins": [FRONT_END]}))

        @app.get("/boom", include_in_schema=False)
        def boom() -> None:
            raise RuntimeError("a bug")

        # No lifespan: the route needs no database.
        answer = TestClient(app, raise_server_exceptions=False).get(
            "/boom", headers={"Origin": FRONT_END}
        )
        assert answer.status_code == 500
        assert answer.json()["type"] == "/problems/internal-error"
        assert answer.headers["access-control-allow-origin"] == FRONT_END

    def test_any_origin_without_credentials(self, client_with: ClientFactory) -> None:
        anyone = client_with(cors_origins=["*"])
        answer = anyone.get("/healthz", headers={"Origin": OTHER})
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
        assert preflight(anyone, "/v1/projects", origin=OTHER).status_code == 200

    def test_credentials_when_allowed_name_the_origin(self, client_with: ClientFactory) -> None:
        trusted = client_with(cors_origins=[FRONT_END], cors_allow_credentials=True)
        answer = trusted.get("/healthz", headers={"Origin": FRONT_END})
        assert answer.headers["access-control-allow-origin"] == FRONT_END
        assert answer.headers["access-control-allow-credentials"] == "true"


class TestMethodNotAllowed:
    def test_allow_lists_every_method_of_the_path(
        self, client: TestClient, session: Session, spec_paths: dict[str, set[str]]
    ) -> None:
        key = auth(make_key(session))
        templates = [(matcher(t), t) for t in spec_paths]
        for template in spec_paths:
            path = concrete(template)
            # The oracle: the methods of every template this path matches (a literal segment
            # and a parameter can both match it).
            expected = set().union(*(spec_paths[t] for rx, t in templates if rx.match(path)))
            wrong = next(m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in expected)
            answer = client.request(wrong, path, headers=key)
            assert answer.status_code == 405, (wrong, path, answer.text)
            assert answer.json()["type"] == "/problems/method-not-allowed"
            assert answer.headers["allow"] == ", ".join(sorted(expected)), path
            assert answer.headers["allow"] in answer.json()["detail"]

    def test_options_on_the_projects_list_names_get_and_post(self, client: TestClient) -> None:
        answer = client.options("/v1/projects")
        assert (answer.status_code, answer.headers["allow"]) == (405, "GET, POST")
