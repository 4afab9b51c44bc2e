"""Continuous labeling through HTTP: production predictions in, the daily review sample, the
disagreement report and the disagreements as training signal."""

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from app.deps import get_now
from app.ml.thresholds import wilson_interval
from app.models.base import Role
from app.models.item import Item
from app.models.production import ProductionPrediction
from app.models.project import Project
from app.registry.algorithms import get_algorithm
from app.services import model_versions
from tests.conftest import wait_for_job
from tests.factories import annotate, auth, ingest, make_key, make_project, unique

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 2026-03-02 is a Monday


class Clock:
    """The app's clock (deps.get_now), moved by the test instead of waiting."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(app: FastAPI, client: TestClient) -> Clock:
    clock = Clock(MONDAY)
    app.dependency_overrides[get_now] = clock  # the client fixture clears the overrides
    return clock


@pytest.fixture
def headers(session: Session) -> dict[str, str]:
    return auth(make_key(session, role=Role.service))


def sampling_project(
    client: TestClient, headers: dict[str, str], *, low: int, random: int, below: float = 0.5
) -> int:
    sampling = {"daily_low_confidence": low, "daily_random": random, "low_confidence_below": below}
    project = make_project(client, headers, production_sampling=sampling)
    assert project["production_sampling"] == sampling
    return int(project["id"])


def entry(external_id: str, confidence: object = 0.9, **fields: Any) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "text": f"production text {external_id}",
        "label": "positive",
        "confidence": confidence,
        "model_version": "prod-1",
        **fields,
    }


def post(
    client: TestClient, headers: dict[str, str], project_id: int, entries: list[Any]
) -> dict[str, Any]:
    response = client.post(
        f"/v1/projects/{project_id}/production-samples",
        json={"predictions": entries},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def items_by_external_id(
    client: TestClient, headers: dict[str, str], project_id: int
) -> dict[str, dict[str, Any]]:
    response = client.get(f"/v1/projects/{project_id}/items?limit=1000", headers=headers)
    return {i["external_id"]: i for i in response.json()["items"]}


def count_rows(session: Session, project_id: int) -> tuple[int, int]:
    """(items, production predictions) of a project."""
    n_items = session.exec(
        select(func.count()).select_from(Item).where(col(Item.project_id) == project_id)
    ).one()
    n_predictions = session.exec(
        select(func.count())
        .select_from(ProductionPrediction)
        .where(col(ProductionPrediction.project_id) == project_id)
    ).one()
    return n_items, n_predictions


def review(
    client: TestClient, headers: dict[str, str], project_id: int, item_id: int, label: str
) -> None:
    response = client.post(
        f"/v1/projects/{project_id}/reviews",
        json={"item_id": item_id, "label": label},
        headers=headers,
    )
    assert response.status_code == 201, response.text


class TestCreateProductionSamples:
    def test_items_are_upserted_and_predictions_stored(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=0, random=0)
        [known, twin] = ingest(
            client,
            headers,
            project_id,
            [
                {"external_id": "k-1", "text": "known text", "metadata": {"team": "a"}},
                {"external_id": "k-2", "text": "an identical text"},
            ],
        )["results"]
        predicted = "2026-03-01T23:00:00-02:00"
        entries = [
            entry("k-1", text="known text", predicted_at=predicted),
            entry("new-1", metadata={"route": "/checkout"}, label="negative", confidence=0.25),
            entry("new-2", text="An   IDENTICAL text"),
        ]
        report = post(client, headers, project_id, entries)
        assert (report["stored"], report["unchanged"], report["failed"]) == (3, 0, 0)
        assert report["items_created"] == 1 and report["entered_review"] == 0
        statuses = [(r["status"], r["item_status"]) for r in report["results"]]
        assert statuses == [("stored", "unchanged"), ("stored", "created"), ("stored", "duplicate")]
        assert report["results"][0]["item_id"] == known["id"]
        assert report["results"][2]["item_id"] == twin["id"]
        assert report["quota"]["day"] == "2026-03-02"

        stored = items_by_external_id(client, headers, project_id)
        # An existing item keeps its source and metadata; a new one is a production item.
        assert (stored["k-1"]["source"], stored["k-1"]["metadata"]) == ("manual", {"team": "a"})
        assert stored["new-1"]["source"] == "production"
        assert stored["new-1"]["metadata"] == {"route": "/checkout"}
        assert stored["new-1"]["status"] == "unlabeled"

        rows = session.exec(
            select(ProductionPrediction)
            .where(col(ProductionPrediction.project_id) == project_id)
            .order_by(col(ProductionPrediction.id))
        ).all()
        assert [r.id for r in rows] == [r["prediction_id"] for r in report["results"]]
        assert rows[0].predicted_at == datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
        assert rows[1].predicted_at == rows[1].received_at == MONDAY  # default: when received
        assert (rows[1].label, rows[1].confidence, rows[1].model_version) == (
            "negative",
            0.25,
            "prod-1",
        )
        assert all(r.sampled_at is None and r.sample_reason is None for r in rows)

    def test_a_retried_request_stores_nothing_twice(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=0, random=0)
        at = "2026-03-02T08:00:00Z"
        entries = [entry("r-1", predicted_at=at), entry("r-2", predicted_at=at)]
        first = post(client, headers, project_id, entries)
        clock.now += timedelta(minutes=5)
        # The same again (a retry), the same prediction twice, and a new prediction.
        again = post(
            client,
            headers,
            project_id,
            [*entries, entries[0], entry("r-1", predicted_at=at, confidence=0.8)],
        )
        assert [r["status"] for r in again["results"]] == [
            "unchanged",
            "unchanged",
            "unchanged",
            "stored",
        ]
        ids = [r["prediction_id"] for r in first["results"]]
        assert [r["prediction_id"] for r in again["results"][:3]] == [*ids, ids[0]]
        assert count_rows(session, project_id) == (2, 3)

    def test_bad_entries_fail_alone_and_write_nothing(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=10, random=10)
        entries: list[Any] = [
            entry("good"),
            entry("b-1", label="happy"),
            entry("b-2", confidence=1.5),
            entry("b-3", confidence="high"),
            entry("b-4", confidence=True),
            entry("b-5", predicted_at="2026-03-02T08:00:00"),
            entry("b-6", text="   "),
            entry("b-7", text="nul \u0000 inside"),
            entry("b-8", extra=1),
            {k: v for k, v in entry("b-9").items() if k != "model_version"},
            "not an object",
            entry("b-11", predicted_at="2026-03-02T09:10:00Z"),  # ten minutes ahead of the clock
            entry("b-12", predicted_at="2026-03-02T10:00:00+01:00"),  # now, in another offset
        ]
        report = post(client, headers, project_id, entries)
        assert (report["stored"], report["failed"]) == (2, len(entries) - 2)
        problems = {r["index"]: r["problem"] for r in report["results"] if r["status"] == "failed"}
        assert all(p["status"] == 422 for p in problems.values())
        assert problems[1]["errors"][0]["loc"] == ["body", "predictions", 1, "label"]
        assert "happy" in problems[1]["detail"]
        expected_fields = {2: "confidence", 3: "confidence", 4: "confidence", 5: "predicted_at"}
        expected_fields |= {6: "text", 7: "text", 8: "extra", 9: "model_version"}
        expected_fields |= {11: "predicted_at"}
        for index, field in expected_fields.items():
            assert problems[index]["errors"][0]["loc"] == ["body", "predictions", index, field]
        assert problems[10]["errors"][0]["loc"] == ["body", "predictions", 10]
        # Only the good entries' items exist, and only they were sampled.
        assert set(items_by_external_id(client, headers, project_id)) == {"good", "b-12"}
        assert count_rows(session, project_id) == (2, 2)
        assert report["entered_review"] == 2

    def test_an_update_to_another_items_text_fails_alone(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=10, random=10)
        ingest(
            client,
            headers,
            project_id,
            [{"external_id": "k-1", "text": "one"}, {"external_id": "k-2", "text": "two"}],
        )
        report = post(client, headers, project_id, [entry("k-1", text="two"), entry("new")])
        failed, stored = report["results"]
        assert (failed["status"], failed["problem"]["status"]) == ("failed", 409)
        assert failed["problem"]["type"] == "/problems/duplicate-text"
        assert failed["problem"]["errors"][0]["loc"] == ["body", "predictions", 0]
        assert stored["status"] == "stored" and report["entered_review"] == 1
        texts = {k: v["text"] for k, v in items_by_external_id(client, headers, project_id).items()}
        assert texts["k-1"] == "one"
        assert count_rows(session, project_id) == (3, 1)

    def test_every_entry_failing_is_a_422_and_writes_nothing(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=10, random=10)
        response = client.post(
            f"/v1/projects/{project_id}/production-samples",
            json={"predictions": [entry("x", label="happy"), entry("y", confidence=-0.1)]},
            headers=headers,
        )
        assert response.status_code == 422
        body = response.json()
        assert body["type"] == "/problems/validation-error"
        assert [e["loc"] for e in body["errors"]] == [
            ["body", "predictions", 0, "label"],
            ["body", "predictions", 1, "confidence"],
        ]
        assert count_rows(session, project_id) == (0, 0)

    @pytest.mark.parametrize(
        "body",
        [
            [],
            {},
            {"predictions": []},
            {"predictions": {"external_id": "x"}},
            {"predictions": [entry("x")], "sample": True},
            "predictions",
        ],
    )
    def test_bad_bodies_are_422_and_write_nothing(
        self,
        client: TestClient,
        session: Session,
        headers: dict[str, str],
        clock: Clock,
        body: Any,
    ) -> None:
        project_id = sampling_project(client, headers, low=10, random=10)
        response = client.post(
            f"/v1/projects/{project_id}/production-samples", json=body, headers=headers
        )
        assert response.status_code == 422
        assert response.json()["type"] == "/problems/validation-error"
        assert count_rows(session, project_id) == (0, 0)

    def test_more_entries_than_the_limit_is_413(
        self, client_with: Any, session: Session, headers: dict[str, str]
    ) -> None:
        small = client_with(max_items_per_request=2)
        project_id = sampling_project(small, headers, low=1, random=1)
        response = small.post(
            f"/v1/projects/{project_id}/production-samples",
            json={"predictions": [entry("a"), entry("b"), entry("c")]},
            headers=headers,
        )
        assert response.status_code == 413
        assert count_rows(session, project_id) == (0, 0)

    def test_annotator_keys_are_forbidden_and_unknown_projects_404(
        self, client: TestClient, session: Session, headers: dict[str, str]
    ) -> None:
        project_id = sampling_project(client, headers, low=1, random=1)
        annotator = auth(make_key(session, role=Role.annotator))
        base = f"/v1/projects/{project_id}/production-samples"
        forbidden = [
            client.post(base, json={"predictions": [entry("a")]}, headers=annotator),
            client.get(f"{base}/report", headers=annotator),
            client.get(f"{base}/disagreements", headers=annotator),
        ]
        assert [r.status_code for r in forbidden] == [403, 403, 403]
        assert count_rows(session, project_id) == (0, 0)
        missing = client.post(
            "/v1/projects/999999/production-samples",
            json={"predictions": [entry("a")]},
            headers=headers,
        )
        assert missing.status_code == 404


class TestSamplingConfig:
    def test_defaults_and_partial_patch(self, client: TestClient, headers: dict[str, str]) -> None:
        project = make_project(client, headers)
        assert project["production_sampling"] == {
            "daily_random": 20,
            "daily_low_confidence": 30,
            "low_confidence_below": 0.6,
        }
        patched = client.patch(
            f"/v1/projects/{project['id']}",
            json={"production_sampling": {"daily_random": 5}},
            headers=headers,
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["production_sampling"] == {
            "daily_random": 5,
            "daily_low_confidence": 30,
            "low_confidence_below": 0.6,
        }

    @pytest.mark.parametrize(
        "sampling",
        [
            {"daily_random": -1},
            {"daily_low_confidence": 1.5},
            {"low_confidence_below": 1.2},
            {"daily_random": None},
            {"daily_rnd": 3},
        ],
    )
    def test_bad_settings_are_422(
        self, client: TestClient, headers: dict[str, str], sampling: dict[str, Any]
    ) -> None:
        project = make_project(client, headers)
        url = f"/v1/projects/{project['id']}"
        patched = client.patch(url, json={"production_sampling": sampling}, headers=headers)
        assert patched.status_code == 422, patched.text
        assert client.get(url, headers=headers).json()["production_sampling"]["daily_random"] == 20
        created = client.post(
            "/v1/projects",
            json={"name": unique("p"), "labels": ["a", "b"], "production_sampling": sampling},
            headers=headers,
        )
        assert created.status_code == 422


class TestDailySampling:
    def test_lowest_confidence_first_then_random_among_the_rest(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=2, random=3, below=0.5)
        confidences = [0.9, 0.3, 0.45, 0.2, 0.8, 0.7, 0.49, 0.95, 0.6, 0.5]
        entries = [entry(f"e-{i}", c) for i, c in enumerate(confidences)]
        report = post(client, headers, project_id, entries)
        reasons = {r["index"]: r["sample_reason"] for r in report["results"]}
        low = sorted(i for i, reason in reasons.items() if reason == "production_low_confidence")
        random = [i for i, reason in reasons.items() if reason == "production_random"]
        assert low == [1, 3]  # 0.3 and 0.2: the two lowest below 0.5
        assert len(random) == 3 and not set(random) & set(low)
        assert report["entered_review"] == 5
        assert report["quota"] | {"day": None} == {
            "day": None,
            "daily_low_confidence": 2,
            "daily_random": 3,
            "low_confidence_below": 0.5,
            "sampled_low_confidence": 2,
            "sampled_random": 3,
        }
        stored = items_by_external_id(client, headers, project_id)
        for index, reason in reasons.items():
            item = stored[f"e-{index}"]
            if reason is None:
                assert (item["status"], item["review_reason"]) == ("unlabeled", None)
                continue
            assert (item["status"], item["review_reason"]) == ("needs_review", reason)
            assert item["suggested_label"] == "positive"
            assert item["suggestion_confidence"] == pytest.approx(confidences[index])

        # The sampled items are what the review queue hands out.
        reviewer = auth(make_key(session, role=Role.annotator))
        batch = client.post(
            f"/v1/projects/{project_id}/batches",
            json={"size": 10, "queue": "review"},
            headers=reviewer,
        )
        assert batch.status_code == 201, batch.text
        handed_out = {i["item"]["external_id"]: i for i in batch.json()["items"]}
        assert set(handed_out) == {f"e-{i}" for i in [*low, *random]}
        assert {i["review_reason"] for i in handed_out.values()} == {
            "production_low_confidence",
            "production_random",
        }
        # Reviewers decide blind: the production label would anchor the measurement.
        assert {i["suggested_label"] for i in handed_out.values()} == {None}
        assert {i["item"]["suggested_label"] for i in handed_out.values()} == {None}

    def test_quotas_are_exact_over_a_day_and_renewed_the_next(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=2, random=3, below=0.5)

        def sampled(report: dict[str, Any]) -> Counter[str]:
            return Counter(r["sample_reason"] for r in report["results"] if r["sample_reason"])

        first = post(client, headers, project_id, [entry("a-1", 0.1), entry("a-2", 0.9)])
        assert sampled(first) == {"production_low_confidence": 1, "production_random": 1}
        clock.now += timedelta(hours=3)
        second = post(
            client,
            headers,
            project_id,
            [entry(f"b-{i}", c) for i, c in enumerate([0.4, 0.3, 0.9, 0.8, 0.7, 0.6])],
        )
        # One low-confidence place left (the lowest, 0.3), two random ones.
        assert sampled(second) == {"production_low_confidence": 1, "production_random": 2}
        assert second["results"][1]["sample_reason"] == "production_low_confidence"
        assert (second["quota"]["sampled_low_confidence"], second["quota"]["sampled_random"]) == (
            2,
            3,
        )
        clock.now += timedelta(hours=8)  # 20:00, still Monday
        third = post(client, headers, project_id, [entry(f"c-{i}", 0.1) for i in range(4)])
        assert third["entered_review"] == 0 and not sampled(third)

        clock.now = datetime(2026, 3, 3, 0, 30, tzinfo=UTC)  # Tuesday: new quotas
        fourth = post(
            client, headers, project_id, [entry("d-1", 0.2), entry("d-2", 0.3), entry("d-3")]
        )
        # Monday's unsampled predictions are not Tuesday's sample.
        assert fourth["entered_review"] == 3
        assert sampled(fourth) == {"production_low_confidence": 2, "production_random": 1}
        assert fourth["quota"]["day"] == "2026-03-03"

        per_day = session.exec(
            select(ProductionPrediction.sample_reason, func.count())
            .where(
                col(ProductionPrediction.project_id) == project_id,
                col(ProductionPrediction.sampled_at).is_not(None),
            )
            .group_by(col(ProductionPrediction.sample_reason))
        ).all()
        assert dict(per_day) == {"production_low_confidence": 4, "production_random": 4}
        in_review = client.get(
            f"/v1/projects/{project_id}/items?status=needs_review&limit=1000", headers=headers
        ).json()["items"]
        assert len(in_review) == 8

    def test_raising_a_quota_mid_day_samples_todays_earlier_predictions(
        self, client: TestClient, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=0, random=1)
        first = post(client, headers, project_id, [entry(f"a-{i}") for i in range(4)])
        assert first["entered_review"] == 1
        client.patch(
            f"/v1/projects/{project_id}",
            json={"production_sampling": {"daily_random": 3}},
            headers=headers,
        )
        clock.now += timedelta(hours=1)
        second = post(client, headers, project_id, [entry("b-1")])
        # Two more places: drawn among today's five unsampled predictions, earlier ones too.
        assert second["entered_review"] == 2
        assert second["quota"]["sampled_random"] == 3

    def test_settled_items_and_other_review_reasons_are_left_alone(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=50, random=50)
        texts = {name: f"production text {name}" for name in ("answered", "reviewed", "audit")}
        ids = {
            name: r["id"]
            for name, r in zip(
                texts,
                ingest(
                    client,
                    headers,
                    project_id,
                    [{"external_id": n, "text": t} for n, t in texts.items()],
                )["results"],
                strict=True,
            )
        }
        annotate(client, headers, project_id, [{"item_id": ids["answered"], "label": "neutral"}])
        review(client, headers, project_id, ids["reviewed"], "negative")
        audited = session.get(Item, ids["audit"])
        assert audited is not None
        audited.review_reason, audited.status = "audit", "needs_review"
        session.add(audited)
        session.commit()

        report = post(
            client,
            headers,
            project_id,
            [entry(name, 0.1) for name in texts] + [entry("fresh", 0.1)],
        )
        assert [r["sample_reason"] for r in report["results"]] == [
            None,
            None,
            None,
            "production_low_confidence",
        ]
        stored = items_by_external_id(client, headers, project_id)
        assert (stored["answered"]["status"], stored["answered"]["resolved_label"]) == (
            "labeled",
            "neutral",
        )
        assert stored["reviewed"]["resolved_by"] == "review"
        assert stored["reviewed"]["review_reason"] is None
        assert stored["audit"]["review_reason"] == "audit"
        assert stored["audit"]["suggested_label"] is None

        # An item already waiting as a production sample is not sampled again the next day.
        clock.now += timedelta(days=1)
        again = post(client, headers, project_id, [entry("fresh", 0.05, label="negative")])
        assert again["results"][0]["sample_reason"] is None
        fresh = items_by_external_id(client, headers, project_id)["fresh"]
        assert (fresh["review_reason"], fresh["suggested_label"]) == (
            "production_low_confidence",
            "positive",
        )

    def test_an_item_predicted_twice_in_a_day_is_sampled_once(
        self, client: TestClient, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=0, random=10)
        report = post(
            client, headers, project_id, [entry("same"), entry("same", 0.7), entry("other")]
        )
        assert report["entered_review"] == 2
        reasons = [r["sample_reason"] for r in report["results"]]
        assert reasons == [None, "production_random", "production_random"]


def decide(
    client: TestClient,
    headers: dict[str, str],
    project_id: int,
    report: dict[str, Any],
    decisions: dict[int, str],
    *,
    by_annotation: set[int] = frozenset(),  # type: ignore[assignment]
) -> None:
    """Decide entry index -> label: by a review, or for by_annotation by human consensus."""
    for index, label in decisions.items():
        item_id = report["results"][index]["item_id"]
        if index in by_annotation:
            annotate(client, headers, project_id, [{"item_id": item_id, "label": label}])
        else:
            review(client, headers, project_id, item_id, label)


def expected_stats(rows: list[tuple[str, str | None]]) -> dict[str, Any]:
    """(production label, human label or None) pairs -> the report's numbers."""
    decided = [(model, human) for model, human in rows if human is not None]
    disagreed = sum(model != human for model, human in decided)
    if not decided:
        return {
            "n_sampled": len(rows),
            "n_decided": 0,
            "n_disagreed": 0,
            "disagreement_rate": None,
            "ci_low": None,
            "ci_high": None,
        }
    low, high = wilson_interval(disagreed, len(decided))
    return {
        "n_sampled": len(rows),
        "n_decided": len(decided),
        "n_disagreed": disagreed,
        "disagreement_rate": round(disagreed / len(decided), 4),
        "ci_low": round(low, 4),
        "ci_high": round(high, 4),
    }


def strip(stats: dict[str, Any], key: str) -> tuple[Any, dict[str, Any]]:
    stats = dict(stats)
    return stats.pop(key), stats


class TestProductionReport:
    def test_rates_by_period_label_version_and_reason(
        self, client: TestClient, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=2, random=100, below=0.5)
        # (external id, production label, confidence, version, predicted day, human label)
        plan = [
            ("p-0", "positive", 0.2, "v1", "2026-02-23", "negative"),
            ("p-1", "positive", 0.9, "v1", "2026-02-23", "positive"),
            ("p-2", "negative", 0.3, "v1", "2026-02-24", "negative"),
            ("p-3", "negative", 0.8, "v2", "2026-02-24", "positive"),
            ("p-4", "neutral", 0.9, "v2", "2026-03-01", "neutral"),
            ("p-5", "positive", 0.7, "v2", "2026-03-02", "neutral"),
            ("p-6", "neutral", 0.6, "v2", "2026-03-02", None),
            ("p-7", "negative", 0.95, "v1", "2026-03-02", "negative"),
        ]
        entries = [
            entry(name, conf, label=label, model_version=version, predicted_at=f"{day}T08:00:00Z")
            for name, label, conf, version, day, _ in plan
        ]
        report = post(client, headers, project_id, entries)
        reasons = [r["sample_reason"] for r in report["results"]]
        assert (
            reasons
            == ["production_low_confidence"] * 1
            + ["production_random"]
            + ["production_low_confidence"]
            + ["production_random"] * 5
        )
        decisions = {i: human for i, (*_, human) in enumerate(plan) if human is not None}
        decide(client, headers, project_id, report, decisions, by_annotation={4, 7})

        def rows(keep: Any = lambda _: True) -> list[tuple[str, str | None]]:
            return [(p[1], p[5]) for p in plan if keep(p)]

        url = f"/v1/projects/{project_id}/production-samples/report"
        daily = client.get(url, headers=headers).json()
        assert daily["bucket"] == "day" and daily["sampling"]["daily_low_confidence"] == 2
        assert daily["overall"] == expected_stats(rows())
        assert [strip(s, "period_start") for s in daily["by_period"]] == [
            (day, expected_stats(rows(lambda p, d=day: p[4] == d)))
            for day in sorted({p[4] for p in plan})
        ]
        assert [strip(s, "label") for s in daily["by_label"]] == [
            (label, expected_stats(rows(lambda p, x=label: p[1] == x)))
            for label in ("negative", "neutral", "positive")
        ]
        assert [strip(s, "model_version") for s in daily["by_model_version"]] == [
            (v, expected_stats(rows(lambda p, x=v: p[3] == x))) for v in ("v1", "v2")
        ]
        low_names = {"p-0", "p-2"}
        assert [strip(s, "sample_reason") for s in daily["by_sample_reason"]] == [
            ("production_low_confidence", expected_stats(rows(lambda p: p[0] in low_names))),
            ("production_random", expected_stats(rows(lambda p: p[0] not in low_names))),
        ]
        assert daily["confusions"] == [
            {"production_label": "negative", "human_label": "positive", "n": 1},
            {"production_label": "positive", "human_label": "negative", "n": 1},
            {"production_label": "positive", "human_label": "neutral", "n": 1},
        ]

        weekly = client.get(url, params={"bucket": "week"}, headers=headers).json()
        assert [strip(s, "period_start") for s in weekly["by_period"]] == [
            ("2026-02-23", expected_stats(rows(lambda p: p[4] < "2026-03-02"))),
            ("2026-03-02", expected_stats(rows(lambda p: p[4] >= "2026-03-02"))),
        ]

        v2_random = client.get(
            url,
            params={"model_version": "v2", "sample_reason": "production_random"},
            headers=headers,
        ).json()
        assert (v2_random["model_version"], v2_random["sample_reason"]) == (
            "v2",
            "production_random",
        )
        assert v2_random["overall"] == expected_stats(rows(lambda p: p[3] == "v2"))
        assert [s["model_version"] for s in v2_random["by_model_version"]] == ["v2"]

    def test_an_empty_report(
        self, client: TestClient, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=0, random=0)
        post(client, headers, project_id, [entry("unsampled")])
        report = client.get(
            f"/v1/projects/{project_id}/production-samples/report", headers=headers
        ).json()
        assert report["overall"] == expected_stats([])
        assert report["by_period"] == report["by_label"] == report["confusions"] == []

    @pytest.mark.parametrize(
        "params",
        [{"bucket": "month"}, {"sample_reason": "random"}, {"model_version": ""}],
    )
    def test_bad_queries_are_422(
        self, client: TestClient, headers: dict[str, str], params: dict[str, str]
    ) -> None:
        project_id = sampling_project(client, headers, low=0, random=0)
        response = client.get(
            f"/v1/projects/{project_id}/production-samples/report", params=params, headers=headers
        )
        assert response.status_code == 422


class TestDisagreements:
    def test_pages_of_disagreements_with_filters(
        self, client: TestClient, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=0, random=100)
        # Humans: disagree on 0, 1, 3, 5, 6 (6 by consensus), agree on 2 and 4, 7 undecided.
        humans = ["negative", "neutral", "positive", "negative", "positive", "positive", "neutral"]
        labels = [
            "positive",
            "positive",
            "positive",
            "positive",
            "positive",
            "negative",
            "negative",
        ]
        versions = ["v1", "v2", "v1", "v1", "v1", "v2", "v1"]
        entries = [
            entry(f"d-{i}", 0.5 + i / 100, label=label, model_version=version)
            for i, (label, version) in enumerate(zip(labels, versions, strict=True))
        ] + [entry("d-7")]
        report = post(client, headers, project_id, entries)
        assert report["entered_review"] == 8
        decide(client, headers, project_id, report, dict(enumerate(humans)), by_annotation={6})

        url = f"/v1/projects/{project_id}/production-samples/disagreements"
        seen: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get(url, params=params, headers=headers).json()
            seen += page["items"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        disagreeing = [0, 1, 3, 5, 6]
        assert pages == 3
        assert [d["external_id"] for d in seen] == [f"d-{i}" for i in disagreeing]
        first = seen[0]
        assert first == {
            "prediction_id": report["results"][0]["prediction_id"],
            "item_id": report["results"][0]["item_id"],
            "external_id": "d-0",
            "text": "production text d-0",
            "production_label": "positive",
            "confidence": 0.5,
            "model_version": "v1",
            "human_label": "negative",
            "decided_by": "review",
            "predicted_at": MONDAY.isoformat().replace("+00:00", "Z"),
            "sample_reason": "production_random",
        }
        assert seen[-1]["decided_by"] == "consensus"

        v2 = client.get(url, params={"model_version": "v2"}, headers=headers).json()
        assert [d["external_id"] for d in v2["items"]] == ["d-1", "d-5"]
        negative = client.get(url, params={"label": "negative"}, headers=headers).json()
        assert [d["external_id"] for d in negative["items"]] == ["d-5", "d-6"]
        bad = client.get(url, params={"cursor": "nonsense"}, headers=headers)
        assert bad.status_code == 422

    def test_resolved_production_items_are_in_the_next_training_set(
        self, client: TestClient, session: Session, headers: dict[str, str], clock: Clock
    ) -> None:
        project_id = sampling_project(client, headers, low=0, random=100)
        entries = [entry(f"t-{i}", label="positive") for i in range(12)]
        report = post(client, headers, project_id, entries)
        humans = {i: "positive" if i % 2 else "negative" for i in range(12)}
        decide(client, headers, project_id, report, humans)
        disagreements = client.get(
            f"/v1/projects/{project_id}/production-samples/disagreements", headers=headers
        ).json()["items"]
        assert len(disagreements) == 6
        project = session.get(Project, project_id)
        assert project is not None
        training = model_versions.build_training_set(
            session, project=project, algorithm=get_algorithm("tfidf_logreg")
        )
        labels = dict(zip(training.item_ids, training.labels, strict=True))
        for disagreement in disagreements:
            assert labels[disagreement["item_id"]] == disagreement["human_label"]


def test_prelabels_leave_production_samples_to_their_reviewers(live_client: TestClient) -> None:
    project = live_client.post(
        "/v1/projects",
        json={
            "name": unique("prod-prelabel"),
            "labels": ["positive", "negative"],
            "phase": "production",
            "production_sampling": {"daily_low_confidence": 1, "daily_random": 0},
        },
    ).json()
    url = f"/v1/projects/{project['id']}"
    report = live_client.post(
        f"{url}/production-samples",
        json={"predictions": [entry("s-1", 0.1), entry("s-2", 0.9)]},
    ).json()
    assert [r["sample_reason"] for r in report["results"]] == ["production_low_confidence", None]
    external = [
        {"item_id": r["item_id"], "probabilities": {"negative": 1.0}, "model_version": "svc"}
        for r in report["results"]
    ]
    assert live_client.post(f"{url}/predictions", json=external).status_code == 200
    job = live_client.post(f"{url}/prelabels", json={"model_version": "svc", "threshold": 0.5})
    assert job.status_code == 202, job.text
    done = wait_for_job(live_client, job.json())
    assert done["status"] == "succeeded", done
    assert done["result"]["auto_accepted"] == 1
    sampled = live_client.get(f"{url}/items/{report['results'][0]['item_id']}").json()
    assert (sampled["status"], sampled["review_reason"]) == (
        "needs_review",
        "production_low_confidence",
    )
    assert (sampled["suggested_label"], sampled["resolved_label"]) == ("positive", None)
    other = live_client.get(f"{url}/items/{report['results'][1]['item_id']}").json()
    assert (other["resolved_by"], other["resolved_label"]) == ("model", "negative")


def test_auto_accepted_items_are_sampled_and_a_model_label_is_no_decision(
    live_client: TestClient,
) -> None:
    project = live_client.post(
        "/v1/projects",
        json={
            "name": unique("prod-auto"),
            "labels": ["positive", "negative"],
            "phase": "production",
            "production_sampling": {"daily_low_confidence": 0, "daily_random": 10},
        },
    ).json()
    url = f"/v1/projects/{project['id']}"
    ids = [
        r["id"]
        for r in live_client.post(
            f"{url}/items",
            json=[{"external_id": n, "text": f"production text {n}"} for n in ("m-1", "m-2")],
        ).json()["results"]
    ]
    external = [
        {"item_id": i, "probabilities": {"negative": 1.0}, "model_version": "svc"} for i in ids
    ]
    assert live_client.post(f"{url}/predictions", json=external).status_code == 200
    job = live_client.post(
        f"{url}/prelabels", json={"model_version": "svc", "threshold": 0.5, "audit_share": 0}
    )
    assert wait_for_job(live_client, job.json())["result"]["auto_accepted"] == 2

    report = live_client.post(
        f"{url}/production-samples", json={"predictions": [entry("m-1"), entry("m-2")]}
    ).json()
    assert report["entered_review"] == 2
    item = live_client.get(f"{url}/items/{ids[0]}").json()
    assert (item["status"], item["resolved_by"], item["resolved_label"]) == (
        "needs_review",
        "model",
        "negative",
    )
    overall = live_client.get(f"{url}/production-samples/report").json()["overall"]
    assert (overall["n_sampled"], overall["n_decided"]) == (2, 0)
    reviewed = live_client.post(f"{url}/reviews", json={"item_id": ids[0], "label": "negative"})
    assert reviewed.status_code == 201, reviewed.text
    overall = live_client.get(f"{url}/production-samples/report").json()["overall"]
    assert (overall["n_decided"], overall["n_disagreed"]) == (1, 1)


def test_concurrent_requests_never_exceed_the_quota(live_client: TestClient) -> None:
    """Four requests at once, each able to fill the day's quota alone: the project lock makes
    them count one after another (PostgreSQL; SQLite serialises writers anyway)."""
    project = live_client.post(
        "/v1/projects",
        json={
            "name": unique("prod-race"),
            "labels": ["positive", "negative"],
            "phase": "production",
            "production_sampling": {"daily_low_confidence": 3, "daily_random": 4},
        },
    ).json()
    url = f"/v1/projects/{project['id']}/production-samples"
    barrier = threading.Barrier(4)
    reports: list[dict[str, Any]] = []

    def send(worker: int) -> None:
        entries = [entry(f"w{worker}-{i}", 0.1 + i / 100) for i in range(10)]
        barrier.wait()
        response = live_client.post(url, json={"predictions": entries})
        assert response.status_code == 200, response.text
        reports.append(response.json())

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 4
    assert sum(r["entered_review"] for r in reports) == 7
    report = live_client.get(f"{url}/report").json()
    assert {s["sample_reason"]: s["n_sampled"] for s in report["by_sample_reason"]} == {
        "production_low_confidence": 3,
        "production_random": 4,
    }
