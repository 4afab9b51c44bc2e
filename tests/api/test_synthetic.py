"""Synthetic generation through the real `openai` client and HTTP to a scripted fake LLM
(tests/fake_llm.py): the cap held exactly, 429s and malformed answers survived, invalid
texts never stored, provenance recorded, no endpoint configured refused up front."""

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.errors import LLMRefused
from app.migrations import upgrade
from app.models.base import Role
from app.services import synthetic
from app.settings import Settings
from app.sources import llm
from app.tasks import synthetic as generation
from tests.conftest import ADMIN_SECRET, ClientFactory, started_app, wait_for_job
from tests.databases import fresh_database
from tests.factories import annotate, auth, ingest, make_key, make_project, unique
from tests.fake_llm import FakeLLM, chat, error, rate_limited

MAX_TEXT_CHARS = 200
GUIDELINES = "Positive: the customer says they are happy with the product."
EXAMPLE = "Loved it, five stars, would buy again."


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


@pytest.fixture(scope="module")
def llm_client(
    backend: str, tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLM
) -> Iterator[TestClient]:
    """The app with its real job runner, configured to call the fake LLM."""
    tmp = tmp_path_factory.mktemp(f"synthetic-{backend}")
    with fresh_database(backend, tmp) as url:
        upgrade(url)
        settings = Settings(
            database_url=url,
            data_dir=tmp,
            bootstrap_admin_key=ADMIN_SECRET,
            llm_base_url=fake_llm.base_url,
            llm_model="fake-model",
            llm_api_key="sk-test",
            llm_timeout_seconds=5,
            llm_max_retries=3,
            max_text_chars=MAX_TEXT_CHARS,
        )
        with started_app(settings) as client:
            yield client


def labeled_project(client: TestClient, *, n_human: int, **fields: Any) -> tuple[int, list[str]]:
    """A project with n_human items labeled by a human (alternating positive/negative)."""
    project = make_project(
        client,
        {},
        guidelines=GUIDELINES,
        examples=[{"text": EXAMPLE, "label": "positive"}],
        **fields,
    )
    texts = [f"Human written review number {k} of {project['id']}" for k in range(n_human)]
    report = ingest(client, {}, project["id"], [{"text": t} for t in texts])
    ids = [r["id"] for r in report["results"]]
    labels = ["positive", "negative"]
    annotate(
        client,
        {},
        project["id"],
        [{"item_id": i, "label": labels[k % 2]} for k, i in enumerate(ids)],
    )
    return project["id"], texts


def generate(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/synthetic", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    assert response.json()["kind"] == "synthetic"
    return wait_for_job(client, response.json(), timeout=60)


def synthetic_items(client: TestClient, project_id: int) -> list[dict[str, Any]]:
    page = client.get(f"/v1/projects/{project_id}/items", params={"source": "synthetic"})
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


class TestGenerate:
    def test_survives_a_429_and_a_malformed_answer_stores_only_valid_texts_up_to_the_cap(
        self, llm_client: TestClient, fake_llm: FakeLLM
    ) -> None:
        project_id, human_texts = labeled_project(llm_client, n_human=20)
        answer = [
            "",
            f"  {human_texts[3].upper()}  ",  # the same normalized text as an existing item
            "x" * (MAX_TEXT_CHARS + 1),
            "Fresh one: the blender is great.",
            "fresh   ONE: the blender is GREAT.",  # a duplicate within the answer
            {"text": "  Fresh two: fast delivery, happy.  "},
            "Fresh three: best purchase this year.",
            42,
        ]
        fake_llm.script(
            rate_limited(retry_after="0"),
            chat("Sure! Here are five happy reviews: 1. I love it ..."),
            chat("```json\n" + json.dumps(answer) + "\n```"),
        )
        # 20 human labels at ratio 0.1: floor(0.1 * 20 / 0.9) = 2 synthetic items at most.
        job = generate(llm_client, project_id, label="positive", count=5, temperature=0.7)

        assert job["status"] == "succeeded", job["error"]
        result = job["result"]
        assert (result["requested"], result["allowed"], result["created"]) == (5, 2, 2)
        assert result["capped"] is True
        assert result["rejected"] == {
            "malformed_response": 1,
            "empty": 1,
            "duplicate_existing": 1,
            "too_long": 1,
            "duplicate_in_response": 1,
            "not_a_string": 1,
            "over_cap": 1,
        }
        assert (result["llm_calls"], result["llm_retries"]) == (2, 1)
        assert len(fake_llm.requests) == 3 and fake_llm.pending == 0

        items = synthetic_items(llm_client, project_id)
        assert sorted(i["text"] for i in items) == [
            "Fresh one: the blender is great.",
            "Fresh two: fast delivery, happy.",
        ]
        assert sorted(i["id"] for i in items) == sorted(result["item_ids"])
        sent = fake_llm.requests[-1]
        assert sent["model"] == "fake-model" and sent["temperature"] == 0.7
        assert fake_llm.headers[-1]["authorization"] == "Bearer sk-test"
        for item in items:
            assert item["source"] == "synthetic" and item["status"] == "unlabeled"
            assert item["resolved_label"] is None  # the intended label is metadata only
            assert item["metadata"]["synthetic"] == {
                "model": "fake-model",
                "temperature": 0.7,
                "prompt_sha256": generation.prompt_sha256(sent["messages"]),
                "label": "positive",
                "job_id": job["id"],
            }
        prompt = sent["messages"][-1]["content"]
        assert GUIDELINES in prompt and EXAMPLE in prompt and human_texts[0] in prompt

        # The cap counts the synthetic items already there: nothing more is allowed, and the
        # LLM is not even called.
        fake_llm.script()
        again = generate(llm_client, project_id, label="negative", count=3)
        assert again["status"] == "succeeded", again["error"]
        assert again["result"]["allowed"] == 0 and again["result"]["created"] == 0
        assert again["result"]["capped"] is True
        assert fake_llm.requests == []
        assert len(synthetic_items(llm_client, project_id)) == 2

    def test_the_count_limits_what_is_stored_when_the_llm_answers_more(
        self, llm_client: TestClient, fake_llm: FakeLLM
    ) -> None:
        project_id, _ = labeled_project(llm_client, n_human=6, synthetic_max_ratio=0.5)
        fake_llm.script(chat(json.dumps([f"Generated text {k}" for k in range(10)])))
        job = generate(llm_client, project_id, label="negative", count=4)
        assert job["status"] == "succeeded", job["error"]
        result = job["result"]
        assert (result["requested"], result["allowed"], result["created"]) == (4, 6, 4)
        assert result["capped"] is False and result["rejected"] == {"over_cap": 6}
        assert len(synthetic_items(llm_client, project_id)) == 4
        assert "exactly 4 strings" in fake_llm.requests[0]["messages"][-1]["content"]

    def test_a_4xx_answer_fails_the_job_at_once_and_stores_nothing(
        self, llm_client: TestClient, fake_llm: FakeLLM
    ) -> None:
        project_id, _ = labeled_project(llm_client, n_human=20)
        fake_llm.script(error(401, "invalid api key"), chat('["never asked for"]'))
        job = generate(llm_client, project_id, label="positive", count=2)
        assert job["status"] == "failed"
        assert job["error"]["type"] == "/problems/llm-error"
        assert "401" in job["error"]["detail"]
        assert len(fake_llm.requests) == 1  # not retried
        assert synthetic_items(llm_client, project_id) == []

    def test_persistent_5xx_exhausts_the_retries_and_fails_the_job(
        self, llm_client: TestClient, fake_llm: FakeLLM
    ) -> None:
        project_id, _ = labeled_project(llm_client, n_human=20)
        fake_llm.script(*[error(503, "overloaded", **{"Retry-After": "0"}) for _ in range(5)])
        job = generate(llm_client, project_id, label="positive", count=2)
        assert job["status"] == "failed"
        assert job["error"]["type"] == "/problems/llm-unavailable"
        assert len(fake_llm.requests) == 4  # llm_max_retries = 3
        assert synthetic_items(llm_client, project_id) == []

    def test_answers_that_stay_malformed_end_the_job_after_bounded_attempts(
        self, llm_client: TestClient, fake_llm: FakeLLM
    ) -> None:
        project_id, _ = labeled_project(llm_client, n_human=20)
        fake_llm.script(*[chat("I cannot help with that.") for _ in range(6)])
        job = generate(llm_client, project_id, label="positive", count=2)
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["created"] == 0
        assert job["result"]["rejected"] == {"malformed_response": 4}
        assert job["result"]["stopped"] == "attempts_exhausted"
        assert len(fake_llm.requests) == 4


class TestRequest:
    def test_without_an_llm_endpoint_it_is_a_clear_problem_and_nothing_is_queued(
        self, client: TestClient, app: FastAPI, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        before = list(app.state.runner.enqueued)
        response = client.post(
            f"/v1/projects/{project['id']}/synthetic",
            json={"label": "positive", "count": 3},
            headers=headers,
        )
        assert response.status_code == 503
        assert response.json()["type"] == "/problems/llm-not-configured"
        assert "LABELWISE_LLM_BASE_URL" in response.json()["detail"]
        assert app.state.runner.enqueued == before
        jobs = client.get("/v1/jobs", params={"project_id": project["id"]}, headers=headers)
        assert jobs.json()["items"] == []

    def test_labels_roles_and_one_job_at_a_time(
        self, client_with: ClientFactory, session: Session
    ) -> None:
        client = client_with(llm_base_url="http://127.0.0.1:9/v1", llm_model="m")
        admin = auth(make_key(session))
        project = make_project(client, admin)
        url = f"/v1/projects/{project['id']}/synthetic"

        unknown = client.post(url, json={"label": "sarcastic", "count": 3}, headers=admin)
        assert unknown.status_code == 422
        assert unknown.json()["errors"][0]["loc"] == ["body", "label"]
        for bad in ({"label": "positive", "count": 0}, {"label": "positive", "count": 2, "x": 1}):
            assert client.post(url, json=bad, headers=admin).status_code == 422
        annotator = auth(make_key(session, role=Role.annotator, name=unique("ann")))
        forbidden = client.post(url, json={"label": "positive", "count": 1}, headers=annotator)
        assert forbidden.status_code == 403

        queued = client.post(url, json={"label": "positive", "count": 3}, headers=admin)
        assert queued.status_code == 202
        assert queued.json()["params"] == {
            "kind": "synthetic",
            "label": "positive",
            "count": 3,
            "instructions": None,
            "temperature": synthetic.DEFAULT_TEMPERATURE,
        }
        second = client.post(url, json={"label": "negative", "count": 1}, headers=admin)
        assert second.status_code == 409
        assert second.json()["type"] == "/problems/synthetic-in-progress"


class TestPureParts:
    def test_the_prompt_holds_guidelines_labels_examples_and_instructions(self) -> None:
        messages = generation.build_prompt(
            guidelines="Spam: unsolicited advertising.",
            labels=["spam", "ham"],
            label="spam",
            examples=["WIN A FREE CRUISE now!!!"],
            instructions="Write in French.",
            count=7,
        )
        prompt = messages[-1]["content"]
        assert messages[0]["role"] == "system" and "JSON array" in messages[0]["content"]
        for part in ('"spam"', '"ham"', "Spam: unsolicited advertising.", "WIN A FREE CRUISE"):
            assert part in prompt
        assert "Write in French." in prompt and "exactly 7 strings" in prompt
        same = generation.build_prompt(
            guidelines="Spam: unsolicited advertising.",
            labels=["spam", "ham"],
            label="spam",
            examples=["WIN A FREE CRUISE now!!!"],
            instructions="Write in French.",
            count=7,
        )
        assert generation.prompt_sha256(messages) == generation.prompt_sha256(same)
        other = generation.build_prompt(
            guidelines="",
            labels=["spam", "ham"],
            label="ham",
            examples=[],
            instructions=None,
            count=7,
        )
        assert generation.prompt_sha256(other) != generation.prompt_sha256(messages)
        assert "guidelines" not in other[-1]["content"] and "Examples" not in other[-1]["content"]

    def test_answers_are_parsed_tolerantly_and_validated(self) -> None:
        assert generation.parse_answer('```json\n["a", {"text": "b"}]\n```') == ["a", {"text": "b"}]
        assert generation.parse_answer('{"items": ["a"]}') == ["a"]
        for malformed in (None, "", "Here you go: a, b", '{"a": 1}', '"just a string"'):
            assert generation.parse_answer(malformed) is None
        kept, rejected = generation.validate_texts(
            [" a ", "A", "", "b\x00", "c" * 11, 3, {"text": "d"}], max_chars=10
        )
        assert [text for text, _ in kept] == ["a", "d"]
        assert rejected == {
            "duplicate_in_response": 1,
            "empty": 1,
            "invalid_text": 1,
            "too_long": 1,
            "not_a_string": 1,
        }

    def test_the_cap_formula(self) -> None:
        def allowed(ratio: float, human: int, existing: int, requested: int = 100) -> int:
            return generation.allowed_synthetic(
                ratio=ratio, human_labeled=human, existing_synthetic=existing, requested=requested
            )

        assert allowed(0.1, 20, 0) == 2  # 2 of 22 items = 9% <= 10%, a third would be 13%
        assert allowed(0.1, 20, 2) == 0 and allowed(0.1, 20, 5) == 0
        assert allowed(0.1, 9, 0) == 1 and allowed(0.1, 8, 0) == 0
        assert allowed(0.0, 1000, 0) == 0
        assert allowed(1.0, 0, 50, requested=7) == 7

    def test_backoff_is_exponential_capped_jittered_and_honours_retry_after(self) -> None:
        rng = random.Random(1)
        delays = [llm.backoff_delay(k, rng=rng) for k in range(8)]
        for k, delay in enumerate(delays):
            ceiling = min(llm.BACKOFF_CAP_SECONDS, llm.BACKOFF_BASE_SECONDS * 2**k)
            assert ceiling / 2 <= delay <= ceiling
        assert llm.backoff_delay(0, rng=rng, retry_after=2.5) == 2.5
        assert llm.backoff_delay(0, rng=rng, retry_after=1e6) == 60.0

    def test_the_client_retries_429_and_5xx_with_the_sleeper_but_not_other_4xx(
        self, fake_llm: FakeLLM
    ) -> None:
        client = llm.make_client(
            Settings(llm_base_url=fake_llm.base_url, llm_model="m", llm_timeout_seconds=5)
        )
        slept: list[float] = []
        fake_llm.script(error(500), rate_limited(retry_after="1.5"), chat('["ok"]'))
        content, retries = llm.complete(
            client,
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            temperature=0.5,
            max_retries=3,
            sleep=slept.append,
            rng=random.Random(0),
        )
        assert (content, retries) == ('["ok"]', 2)
        assert 0.25 <= slept[0] <= 0.5 and slept[1] == 1.5
        assert len(fake_llm.requests) == 3

        fake_llm.script(error(400, "bad request"), chat('["never"]'))
        with pytest.raises(LLMRefused, match="400"):
            llm.complete(
                client,
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                temperature=0.5,
                max_retries=3,
                sleep=slept.append,
            )
        assert len(fake_llm.requests) == 1 and len(slept) == 2
