"""The hands-off loop: its setting, its decisions (retrain after N labels, activate only a
version at least as good on the same held-out items, rescore new items, auto-accept), batches
while the active version's scoring runs, turning it off, and nothing of it on an answer's
request path."""

import threading
import time
from datetime import timedelta
from typing import Any, cast

import numpy as np
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.models.base import utcnow
from app.models.job import JobKind, JobStatus
from app.models.job_kinds import ScorePoolParams
from app.models.model_version import ModelVersion, registry_version_name
from app.services import jobs
from app.services.predictions import prediction_rows, upsert_predictions
from tests.api.test_registry import LABELS, labeled_project, train
from tests.corpus import labeled_corpus
from tests.factories import auth, ingest, make_key, make_project

LOOP = {"labels_per_round": 30, "target_accuracy": 0.9}


def after_two_checks(client: TestClient) -> None:
    """Return once two watcher passes began and ended after this call."""
    watcher = client.app.state.retrain_watcher  # type: ignore[attr-defined]
    wanted, deadline = watcher.passes + 2, time.monotonic() + 60
    while watcher.passes < wanted:
        assert time.monotonic() < deadline, "no watcher pass ran for 60 s"
        time.sleep(0.01)


def project_jobs(client: TestClient, project_id: int, kind: str) -> list[dict[str, Any]]:
    page = client.get(f"/v1/jobs?project_id={project_id}&kind={kind}&limit=1000").json()
    return cast(list[dict[str, Any]], page["items"])


def settle(client: TestClient, project_id: int) -> None:
    """Watcher passes until the project has no queued or running job (the loop is idle)."""
    deadline = time.monotonic() + 180
    while True:
        after_two_checks(client)
        busy = [
            job
            for status in ("queued", "running")
            for job in client.get(f"/v1/jobs?project_id={project_id}&status={status}").json()[
                "items"
            ]
        ]
        if not busy:
            after_two_checks(client)
            if not any(
                client.get(f"/v1/jobs?project_id={project_id}&status={s}").json()["items"]
                for s in ("queued", "running")
            ):
                return
        assert time.monotonic() < deadline, f"the loop still busy: {busy}"


class TestSetting:
    def test_on_off_and_defaults(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        assert project["hands_off"] is None
        url = f"/v1/projects/{project['id']}"
        on = client.patch(url, json={"hands_off": {}}, headers=headers)
        assert on.status_code == 200, on.text
        assert on.json()["hands_off"] == {"labels_per_round": 200, "target_accuracy": 0.95}
        changed = client.patch(url, json={"hands_off": LOOP}, headers=headers).json()
        assert changed["hands_off"] == LOOP
        assert client.get(url, headers=headers).json()["hands_off"] == LOOP
        off = client.patch(url, json={"hands_off": None}, headers=headers).json()
        assert off["hands_off"] is None

    def test_bad_values_are_problems_and_change_nothing(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers, hands_off=LOOP)
        url = f"/v1/projects/{project['id']}"
        for bad in (
            {"labels_per_round": 0},
            {"target_accuracy": 1.5},
            {"target_accuracy": 0.2},
            {"labels_per_round": "many"},
            {"every": 10},
        ):
            response = client.patch(url, json={"hands_off": bad}, headers=headers)
            assert response.status_code == 422, (bad, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["errors"][0]["loc"][:2] == ["body", "hands_off"]
        assert client.get(url, headers=headers).json()["hands_off"] == LOOP


class TestRounds:
    def test_a_round_retrains_activates_scores_and_auto_accepts(
        self, live_client: TestClient
    ) -> None:
        project_id, _, pool = labeled_project(
            live_client, n_labeled=10, n_pool=20, seed=230, hands_off=LOOP
        )
        settle(live_client, project_id)
        [training] = project_jobs(live_client, project_id, "train_model")
        assert training["created_by"] == "hands-off"
        assert training["params"]["activate"] == "if_better"
        assert training["result"]["activated"] is True  # nothing was active yet
        [scoring] = project_jobs(live_client, project_id, "score_pool")
        assert scoring["status"] == "succeeded" and scoring["result"]["scored"] == len(pool)
        [prelabel] = project_jobs(live_client, project_id, "prelabel")
        assert prelabel["created_by"] == "hands-off" and prelabel["status"] == "succeeded"
        assert prelabel["params"]["target_pool_accuracy"] == LOOP["target_accuracy"]
        assert prelabel["result"]["mode"] == "target_pool_accuracy"
        assert prelabel["result"]["auto_accepted"] > 0
        items = live_client.get(f"/v1/projects/{project_id}/items?limit=1000").json()["items"]
        by_model = [i for i in items if i["resolved_by"] == "model"]
        assert len(by_model) == prelabel["result"]["auto_accepted"]
        # What the model is unsure about stays in the label queue for batches to rank.
        assert {i["status"] for i in items if i["resolved_by"] is None} <= {"unlabeled"}
        assert prelabel["result"]["needs_review"] == 0

        # The next N human labels start the next round; both versions compared on them.
        unsure = [i["id"] for i in items if i["status"] == "unlabeled"]
        truth = [label for _, label in labeled_corpus(30, seed=230)[30:]]
        label_of = dict(zip(pool, truth, strict=True))
        answered = (unsure + [i["id"] for i in by_model])[:30]
        more = [{"item_id": i, "label": label_of[i]} for i in answered]
        assert live_client.post(f"/v1/projects/{project_id}/annotations", json=more).is_success
        settle(live_client, project_id)
        trainings = project_jobs(live_client, project_id, "train_model")
        assert [job["created_by"] for job in trainings] == ["hands-off", "hands-off"]
        version = live_client.get(f"/v1/projects/{project_id}/models/2").json()
        check = version["metrics"]["activation"]
        assert check["basis"] == "held_out" and check["n_items"] == 30
        assert check["active_version"] == 1
        assert check["activated"] == (check["new_score"] >= check["active_score"])
        assert version["active"] is check["activated"]

    def test_new_items_are_scored_without_a_full_scoring(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(
            live_client, n_labeled=10, n_pool=10, seed=231, hands_off=LOOP
        )
        settle(live_client, project_id)
        texts = [text for text, _ in labeled_corpus(5, seed=2310)]
        body = [{"text": f"{text} new", "external_id": f"new-{k}"} for k, text in enumerate(texts)]
        report = live_client.post(f"/v1/projects/{project_id}/items", json=body).json()
        new_ids = [entry["id"] for entry in report["results"]]
        settle(live_client, project_id)
        scorings = project_jobs(live_client, project_id, "score_pool")
        assert len(scorings) == 2
        extra = scorings[-1]
        assert extra["created_by"] == "hands-off" and extra["status"] == "succeeded"
        assert extra["params"]["item_ids"] == new_ids
        assert extra["result"]["scored"] == len(new_ids)
        for item_id in new_ids:
            detail = live_client.get(f"/v1/projects/{project_id}/items/{item_id}").json()
            assert detail["predictions"][0]["model_version"] == "registry:1"
        # Scored once: the next passes find nothing new to score.
        settle(live_client, project_id)
        assert len(project_jobs(live_client, project_id, "score_pool")) == 2

    def test_a_failed_round_waits_for_the_next_labels(self, live_client: TestClient) -> None:
        project_id, _, pool = labeled_project(
            live_client,
            n_labeled=0,
            n_pool=10,
            seed=235,
            hands_off={"labels_per_round": 5, "target_accuracy": 0.9},
        )
        url = f"/v1/projects/{project_id}/annotations"
        one_label = [{"item_id": i, "label": LABELS[0]} for i in pool[:5]]
        assert live_client.post(url, json=one_label).is_success
        settle(live_client, project_id)
        [failed] = project_jobs(live_client, project_id, "train_model")
        assert failed["status"] == "failed"  # one label only: nothing to learn yet
        assert failed["error"]["type"] == "/problems/not-enough-labels"
        settle(live_client, project_id)
        assert len(project_jobs(live_client, project_id, "train_model")) == 1
        other = [{"item_id": i, "label": LABELS[1]} for i in pool[5:10]]
        assert live_client.post(url, json=other).is_success
        settle(live_client, project_id)
        trainings = project_jobs(live_client, project_id, "train_model")
        assert [job["status"] for job in trainings] == ["failed", "succeeded"]

    def test_turning_it_off_stops_the_loop(self, live_client: TestClient) -> None:
        project_id, _, pool = labeled_project(
            live_client, n_labeled=10, n_pool=20, seed=232, hands_off=LOOP
        )
        settle(live_client, project_id)
        assert len(project_jobs(live_client, project_id, "train_model")) == 1
        off = live_client.patch(f"/v1/projects/{project_id}", json={"hands_off": None})
        assert off.status_code == 200 and off.json()["hands_off"] is None
        answers = [{"item_id": i, "label": LABELS[0]} for i in pool[:30]]  # 30 new labels
        assert live_client.post(f"/v1/projects/{project_id}/annotations", json=answers).is_success
        live_client.post(
            f"/v1/projects/{project_id}/items",
            json=[{"text": "a brand new item after the loop stopped", "external_id": "late"}],
        )
        settle(live_client, project_id)
        counts = {
            kind: len(project_jobs(live_client, project_id, kind))
            for kind in ("train_model", "score_pool", "prelabel")
        }
        assert counts == {"train_model": 1, "score_pool": 1, "prelabel": 1}


def test_a_worse_version_is_not_activated(live_client: TestClient) -> None:
    """Judged on the same held-out items: the labels the active version never saw."""
    project_id, _, pool = labeled_project(live_client, n_labeled=10, n_pool=20, seed=233)
    first = train(live_client, project_id, activate=True)
    assert first["result"]["activated"] is True
    truth = [label for _, label in labeled_corpus(30, seed=233)[30:]]
    answers = [{"item_id": i, "label": label} for i, label in zip(pool, truth, strict=False)]
    assert live_client.post(f"/v1/projects/{project_id}/annotations", json=answers).is_success
    # Two hashed features for the whole vocabulary: a model that can barely tell texts apart.
    worse = train(
        live_client,
        project_id,
        algorithm="hashing_sgd",
        params={"n_features_log2": 1},
        activate="if_better",
    )
    assert worse["status"] == "succeeded", worse
    assert worse["result"]["activated"] is False
    version = live_client.get(f"/v1/projects/{project_id}/models/2").json()
    check = version["metrics"]["activation"]
    assert check["basis"] == "held_out" and check["n_items"] == len(pool)
    assert check["new_score"] < check["active_score"]
    assert version["active"] is False
    assert live_client.get(f"/v1/projects/{project_id}/models/1").json()["active"] is True
    better = train(live_client, project_id, activate="if_better")
    assert better["result"]["activated"] is True


def test_an_answer_and_an_ingest_do_no_loop_work(live_client: TestClient) -> None:
    """The loop's checks run on the watcher thread only: the statements of an answer, and of
    an ingest (its new items are scored by a job the watcher queues), never read jobs,
    model versions or predictions, however the project's loop is set."""
    project_id, _, pool = labeled_project(
        live_client, n_labeled=10, n_pool=10, seed=234, hands_off=LOOP
    )
    settle(live_client, project_id)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name != "retrain-watch":
            statements.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        response = live_client.post(
            f"/v1/projects/{project_id}/annotations",
            json=[{"item_id": pool[0], "label": LABELS[0]}],
        )
        ingested = live_client.post(
            f"/v1/projects/{project_id}/items",
            json=[{"text": "an item ingested while a model is active", "external_id": "x"}],
        )
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.text
    assert ingested.status_code == 200 and ingested.json()["created"] == 1
    assert statements  # the answer and the item were written
    loop_work = [
        s
        for s in statements
        if "FROM model_version" in s or "FROM job" in s or "INTO job" in s or "prediction" in s
    ]
    assert loop_work == []


# --- batches while the active version's pool scoring runs ------------------------------------


def _version(
    session: Session, project_id: int, number: int, *, active: bool, minutes_ago: float
) -> ModelVersion:
    version = ModelVersion(
        project_id=project_id,
        version=number,
        algorithm="tfidf_logreg",
        params={},
        labels=["negative", "neutral", "positive"],
        n_train=0,
        train_item_ids=[],
        train_labels=[],
        train_set_hash=f"hash-{number}",
        label_distribution={},
        metrics={"accuracy": 1.0, "macro_f1": 1.0},
        training_seconds=0.0,
        active=active,
        activated_at=utcnow() - timedelta(minutes=minutes_ago),
    )
    session.add(version)
    session.flush()
    return version


def _scores(session: Session, project_id: int, version: int, item_ids: list[int]) -> None:
    rng = np.random.default_rng(version)
    probabilities = rng.dirichlet(np.ones(3), size=len(item_ids))
    upsert_predictions(
        session,
        prediction_rows(
            project_id=project_id,
            item_ids=item_ids,
            probabilities=probabilities,
            labels=["negative", "neutral", "positive"],
            model_version=registry_version_name(version),
            source="registry",
        ),
    )


class TestBatchesDuringScoring:
    def _pool(self, client: TestClient, session: Session) -> tuple[dict[str, str], int, list[int]]:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        items = [{"text": f"item number {k}", "external_id": f"e{k}"} for k in range(40)]
        report = ingest(client, headers, project["id"], items)
        return headers, project["id"], [entry["id"] for entry in report["results"]]

    def _scoring_job(self, session: Session, version: ModelVersion) -> Any:
        """The pool scoring of the version's activation, as make_active queues it."""
        job = jobs.new_job(
            session,
            project_id=version.project_id,
            kind=JobKind.score_pool,
            params=ScorePoolParams(version=version.version),
            created_by="registry",
        )
        version.scoring_job_id = job.id
        session.add(version)
        session.flush()
        return job

    def _batch(self, client: TestClient, headers: dict[str, str], project_id: int) -> Any:
        body = {"size": 10, "random_share": 0.0}
        response = client.post(f"/v1/projects/{project_id}/batches", json=body, headers=headers)
        assert response.status_code == 201, response.text
        client.delete(f"/v1/projects/{project_id}/batches/{response.json()['id']}", headers=headers)
        return response.json()

    def test_ranked_by_the_previous_version_until_scoring_ends(
        self, client: TestClient, session: Session
    ) -> None:
        headers, project_id, ids = self._pool(client, session)
        _version(session, project_id, 1, active=False, minutes_ago=10)
        _scores(session, project_id, 1, ids)
        active = _version(session, project_id, 2, active=True, minutes_ago=1)
        _scores(session, project_id, 2, ids[:5])  # scoring has reached 5 items so far
        job = self._scoring_job(session, active)
        for status in (JobStatus.queued, JobStatus.running):
            job.status = status
            session.add(job)
            session.flush()
            batch = self._batch(client, headers, project_id)
            assert (batch["ranked_by"], batch["model_version"]) == ("previous_model", "registry:1")
            assert batch["strategy"] == "margin"
            assert not any(entry["exploration"] for entry in batch["items"])
            assert all(entry["score"] is not None for entry in batch["items"])
            stored = client.get(
                f"/v1/projects/{project_id}/batches/{batch['id']}", headers=headers
            ).json()
            assert stored["ranked_by"] == "previous_model"
        job.status = JobStatus.succeeded
        session.add(job)
        session.flush()
        batch = self._batch(client, headers, project_id)
        assert (batch["ranked_by"], batch["model_version"]) == ("active_model", "registry:2")

    def test_without_a_previous_version_the_scores_so_far_say_so(
        self, client: TestClient, session: Session
    ) -> None:
        headers, project_id, ids = self._pool(client, session)
        active = _version(session, project_id, 1, active=True, minutes_ago=1)
        self._scoring_job(session, active).status = JobStatus.running
        session.flush()
        cold = self._batch(client, headers, project_id)
        assert (cold["strategy"], cold["ranked_by"]) == ("cold_start", None)
        _scores(session, project_id, 1, ids[:5])
        batch = self._batch(client, headers, project_id)
        assert (batch["ranked_by"], batch["model_version"]) == ("partial_scores", "registry:1")
        explorers = [entry for entry in batch["items"] if entry["exploration"]]
        assert len(explorers) == 5  # the top-up beyond the 5 scored items is marked

    def test_random_and_named_models(self, client: TestClient, session: Session) -> None:
        headers, project_id, ids = self._pool(client, session)
        _version(session, project_id, 1, active=True, minutes_ago=1)
        _scores(session, project_id, 1, ids)
        body: dict[str, Any] = {"size": 5, "strategy": "random"}
        url = f"/v1/projects/{project_id}/batches"
        assert client.post(url, json=body, headers=headers).json()["ranked_by"] is None
        body = {"size": 5, "model_version": "registry:1"}
        assert client.post(url, json=body, headers=headers).json()["ranked_by"] == (
            "requested_model"
        )
