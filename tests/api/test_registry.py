"""Training, versions, activation and pool scoring through HTTP, with jobs really running."""

import threading
import time
from typing import Any, cast

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.registry.algorithms import DEFAULT_ALGORITHM, get_algorithm
from tests.conftest import wait_for_job
from tests.corpus import TOPICS, labeled_corpus

LABELS = sorted(TOPICS)
OLD = "tfidf_logreg"  # the default before hashed_tfidf_sgd


def labeled_project(
    client: TestClient, *, n_labeled: int, n_pool: int, seed: int = 0, **fields: Any
) -> tuple[int, list[int], list[int]]:
    """A project with n_labeled human-labeled items per topic and an unlabeled pool."""
    import uuid

    body = {
        "name": f"registry-{uuid.uuid4().hex[:8]}",
        "labels": LABELS,
        "phase": "production",
        **fields,
    }
    project = client.post("/v1/projects", json=body).json()
    corpus = labeled_corpus(n_labeled + n_pool, seed=seed)
    items = [{"text": text, "external_id": f"{seed}-{i}"} for i, (text, _) in enumerate(corpus)]
    ingested = client.post(f"/v1/projects/{project['id']}/items", json=items).json()
    ids = [r["id"] for r in ingested["results"]]
    labeled_ids = ids[: 3 * n_labeled]
    entries = [
        {"item_id": item_id, "label": label}
        for item_id, (_, label) in zip(labeled_ids, corpus, strict=False)
    ]
    response = client.post(f"/v1/projects/{project['id']}/annotations", json=entries)
    assert response.status_code == 200, response.text
    return project["id"], labeled_ids, ids[3 * n_labeled :]


def train_jobs_after_a_retrain_check(client: TestClient, project_id: int) -> list[dict[str, Any]]:
    """The project's training jobs once a retrain check that began after this call has
    finished (services/retrain_watch.py: checks run off the request path)."""
    watcher = client.app.state.retrain_watcher  # type: ignore[attr-defined]
    wanted, deadline = watcher.passes + 2, time.monotonic() + 60
    while watcher.passes < wanted:
        assert time.monotonic() < deadline, "no retrain check ran for 60 s"
        time.sleep(0.01)
    url = f"/v1/jobs?project_id={project_id}&kind=train_model"
    return cast(list[dict[str, Any]], client.get(url).json()["items"])


def train(client: TestClient, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project_id}/models", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return wait_for_job(client, response.json())


class TestTraining:
    def test_registers_a_version_with_cross_validated_metrics(
        self, live_client: TestClient
    ) -> None:
        project_id, labeled, _ = labeled_project(live_client, n_labeled=20, n_pool=10)
        job = train(live_client, project_id)
        assert job["status"] == "succeeded", job
        assert job["result"]["version"] == 1
        version = live_client.get(f"/v1/projects/{project_id}/models/1").json()
        assert version["algorithm"] == DEFAULT_ALGORITHM == "hashed_tfidf_sgd"
        assert version["params"] == dict(get_algorithm(DEFAULT_ALGORITHM).defaults)
        assert version["n_train"] == len(labeled) == 60
        assert version["label_distribution"] == {label: 20 for label in LABELS}
        assert version["active"] is False
        metrics = version["metrics"]
        assert metrics["n_folds"] == 5
        assert 0.8 <= metrics["accuracy"] <= 1.0
        assert set(metrics["per_label"]) == set(LABELS)
        assert metrics["per_label"]["tech"]["support"] == 20
        assert 0.0 <= metrics["brier"] < 0.5
        assert len(version["train_set_hash"]) == 64

    def test_second_algorithm_and_newest_first_listing(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=0, seed=1)
        assert train(live_client, project_id)["status"] == "succeeded"
        job = train(live_client, project_id, algorithm="hashing_sgd", params={"alpha": 1e-4})
        assert job["status"] == "succeeded", job
        page = live_client.get(f"/v1/projects/{project_id}/models").json()
        assert [(v["version"], v["algorithm"]) for v in page["items"]] == [
            (2, "hashing_sgd"),
            (1, DEFAULT_ALGORITHM),
        ]
        assert page["items"][0]["params"]["alpha"] == 1e-4

    def test_model_made_labels_never_train_the_model(self, live_client: TestClient) -> None:
        project_id, labeled, pool = labeled_project(live_client, n_labeled=10, n_pool=10, seed=2)
        first = train(live_client, project_id, activate=True)
        wait_for_job(live_client, {"id": first["result"]["scoring_job_id"]})
        prelabel = live_client.post(
            f"/v1/projects/{project_id}/prelabels", json={"threshold": 0.01}
        )
        assert wait_for_job(live_client, prelabel.json())["result"]["auto_accepted"] == len(pool)
        second = train(live_client, project_id)
        assert second["result"]["n_train"] == len(labeled)

    def test_synthetic_items_are_capped(self, live_client: TestClient) -> None:
        project_id, labeled, _ = labeled_project(
            live_client, n_labeled=10, n_pool=0, seed=3, synthetic_max_ratio=0.1
        )
        synthetic = [
            {"text": text, "source": "synthetic"} for text, _ in labeled_corpus(10, seed=33)
        ]
        report = live_client.post(f"/v1/projects/{project_id}/items", json=synthetic).json()
        entries = [
            {"item_id": r["id"], "label": label}
            for r, (_, label) in zip(report["results"], labeled_corpus(10, seed=33), strict=True)
        ]
        live_client.post(f"/v1/projects/{project_id}/annotations", json=entries)
        job = train(live_client, project_id)
        # 30 human items allow floor(0.1 * 30 / 0.9) = 3 synthetic ones.
        assert job["result"]["n_train"] == len(labeled) + 3
        version = live_client.get(f"/v1/projects/{project_id}/models/1").json()
        assert version["metrics"]["synthetic_dropped"] == 27


class TestTrainingRefusals:
    def test_too_few_labels_is_a_409_naming_what_is_missing(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=3, n_pool=0, seed=4)
        response = live_client.post(f"/v1/projects/{project_id}/models", json={})
        assert response.status_code == 409
        problem = response.json()
        assert problem["type"] == "/problems/not-enough-labels"
        assert "at least 5" in problem["detail"] and "sports: 3" in problem["detail"]
        assert live_client.get(f"/v1/jobs?project_id={project_id}").json()["items"] == []

    def test_a_pilot_waiting_for_second_answers_says_why_and_what_to_do(
        self, live_client: TestClient
    ) -> None:
        project_id, labeled, _ = labeled_project(
            live_client, n_labeled=6, n_pool=2, seed=5, phase="pilot"
        )
        response = live_client.post(f"/v1/projects/{project_id}/models", json={})
        assert response.status_code == 409
        problem = response.json()
        assert problem["type"] == "/problems/not-enough-labels"
        detail = problem["detail"]
        assert "this project has none" in detail
        # Why: every answered item waits for its second answer, because of the pilot phase.
        assert f"{len(labeled)} items have human answers but fewer than the 2" in detail
        assert "pilot phase" in detail
        # What to do: answer them, or move the project to production.
        assert f"POST /v1/projects/{project_id}/batches" in detail
        assert f'PATCH /v1/projects/{project_id} with "phase": "production"' in detail
        assert problem["context"] == {
            "label_counts": {},
            "min_per_label": 5,
            "items_waiting_for_answers": len(labeled),
            "answers_required": 2,
            "phase": "pilot",
        }
        # Moved to production, the same single answers settle the items: training starts.
        moved = live_client.patch(
            f"/v1/projects/{project_id}",
            json={"phase": "production", "force": True, "reason": "one answer is enough here"},
        )
        assert moved.status_code == 200, moved.text
        assert live_client.post(f"/v1/projects/{project_id}/models", json={}).status_code == 202

    def test_a_production_project_short_of_labels_names_no_waiting_items(
        self, live_client: TestClient
    ) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=3, n_pool=0, seed=6)
        problem = live_client.post(f"/v1/projects/{project_id}/models", json={}).json()
        assert "fewer than" not in problem["detail"] and "pilot" not in problem["detail"]
        assert problem["context"]["items_waiting_for_answers"] == 0
        assert problem["context"]["label_counts"] == dict.fromkeys(LABELS, 3)

    def test_one_class_is_a_409(self, live_client: TestClient) -> None:
        import uuid

        project = live_client.post(
            "/v1/projects",
            json={
                "name": f"one-{uuid.uuid4().hex[:6]}",
                "labels": ["a", "b"],
                "phase": "production",
            },
        ).json()
        items = [{"text": f"only one class {i}"} for i in range(10)]
        ids = [
            r["id"]
            for r in live_client.post(f"/v1/projects/{project['id']}/items", json=items).json()[
                "results"
            ]
        ]
        live_client.post(
            f"/v1/projects/{project['id']}/annotations",
            json=[{"item_id": i, "label": "a"} for i in ids],
        )
        response = live_client.post(f"/v1/projects/{project['id']}/models", json={})
        assert response.status_code == 409
        assert "a: 10" in response.json()["detail"]

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"algorithm": "nope"}, ["body", "algorithm"]),
            ({"algorithm": OLD, "params": {"C": -1.0}}, ["body", "params", "C"]),
            ({"params": {"bogus": 1}}, ["body", "params", "bogus"]),
            ({"params": {"C": 1.0}}, ["body", "params", "C"]),  # not a param of the default
            ({"params": {"alpha": -1.0}}, ["body", "params", "alpha"]),
            ({"params": {"n_features_log2": 30}}, ["body", "params", "n_features_log2"]),
            ({"params": {"class_weight": "auto"}}, ["body", "params", "class_weight"]),
            (
                {"algorithm": OLD, "params": {"char_ngram_min": 6, "char_ngram_max": 4}},
                ["body", "params", "char_ngram_min"],
            ),
            (
                {"algorithm": "hashing_sgd", "params": {"n_features_log2": 40}},
                ["body", "params", "n_features_log2"],
            ),
            ({"algorithm": OLD, "params": {"tol": 10**300}}, ["body", "params", "tol"]),
            ({"algorithm": OLD, "params": {"tol": 1e300}}, ["body", "params", "tol"]),
            ({"algorithm": OLD, "params": {"min_df": 5000}}, ["body", "params", "min_df"]),
        ],
    )
    def test_bad_algorithm_or_params_are_422(
        self, live_client: TestClient, body: dict[str, Any], loc: list[Any]
    ) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=5, n_pool=0, seed=5)
        response = live_client.post(f"/v1/projects/{project_id}/models", json=body)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == loc


class TestActivationAndScoring:
    def test_activation_scores_the_unlabeled_pool(self, live_client: TestClient) -> None:
        project_id, labeled, pool = labeled_project(live_client, n_labeled=10, n_pool=15, seed=6)
        assert train(live_client, project_id)["status"] == "succeeded"
        response = live_client.post(f"/v1/projects/{project_id}/models/1/activate")
        assert response.status_code == 200, response.text
        assert response.json()["model"]["active"] is True
        scoring = wait_for_job(live_client, response.json()["scoring_job"])
        assert scoring["status"] == "succeeded", scoring
        assert scoring["result"]["scored"] == len(pool)
        detail = live_client.get(f"/v1/projects/{project_id}/items/{pool[0]}").json()
        [prediction] = detail["predictions"]
        assert prediction["model_version"] == "registry:1"
        assert prediction["label"] in LABELS
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-3
        assert 0 <= prediction["margin"] <= prediction["confidence"] <= 1
        # Human-labeled items are not part of the pool.
        assert (
            live_client.get(f"/v1/projects/{project_id}/items/{labeled[0]}").json()["predictions"]
            == []
        )

    def test_activating_another_version_deactivates_the_first(
        self, live_client: TestClient
    ) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=10, n_pool=3, seed=7)
        train(live_client, project_id, activate=True)
        train(live_client, project_id, algorithm="hashing_sgd")
        live_client.post(f"/v1/projects/{project_id}/models/2/activate")
        versions = live_client.get(f"/v1/projects/{project_id}/models").json()["items"]
        assert [(v["version"], v["active"]) for v in versions] == [(2, True), (1, False)]

    def test_unknown_version_is_404(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=5, n_pool=0, seed=8)
        assert live_client.get(f"/v1/projects/{project_id}/models/9").status_code == 404
        assert live_client.post(f"/v1/projects/{project_id}/models/9/activate").status_code == 404


def test_algorithms_are_listed(live_client: TestClient) -> None:
    names = {a["name"] for a in live_client.get("/v1/algorithms").json()}
    assert {"hashed_tfidf_sgd", "tfidf_logreg", "hashing_sgd", "features_logreg"} <= names


def test_the_old_default_still_trains_and_scores(live_client: TestClient) -> None:
    project_id, _, pool = labeled_project(live_client, n_labeled=10, n_pool=5, seed=12)
    job = train(live_client, project_id, algorithm="tfidf_logreg", activate=True)
    assert job["status"] == "succeeded", job
    scoring = wait_for_job(live_client, {"id": job["result"]["scoring_job_id"]})
    assert scoring["result"]["scored"] == len(pool)
    version = live_client.get(f"/v1/projects/{project_id}/models/1").json()
    assert (version["algorithm"], version["params"]["C"]) == ("tfidf_logreg", 10.0)


class TestParallelScoring:
    """A pool of PARALLEL_MIN_CHUNKS chunks or more is predicted in worker processes."""

    def scored_project(
        self, client: TestClient, seed: int
    ) -> tuple[int, list[int], dict[int, Any]]:
        """An active version that scored its 420-item pool in this process (one 5,000-item
        chunk), and what it stored: item id -> (label, confidence, margin, probabilities)."""
        project_id, _, pool = labeled_project(client, n_labeled=10, n_pool=140, seed=seed)
        job = train(client, project_id, activate=True)
        scoring = wait_for_job(client, {"id": job["result"]["scoring_job_id"]})
        assert scoring["result"]["scored"] == len(pool) == 420
        return project_id, pool, self.stored(client, project_id)

    @staticmethod
    def stored(client: TestClient, project_id: int) -> dict[int, Any]:
        settings = client.app.state.settings  # type: ignore[attr-defined]
        engine = sa.create_engine(settings.resolved_database_url)
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT item_id, label, confidence, margin, probabilities FROM prediction "
                    "WHERE project_id = :p AND model_version = 'registry:1'"
                ),
                {"p": project_id},
            ).all()
        engine.dispose()
        return {row[0]: tuple(row[1:]) for row in rows}

    @staticmethod
    def run_scoring(client: TestClient, project_id: int, *, cancel: bool) -> None:
        """run_score_pool itself, on a running score_pool job row, in chunks of 100."""
        from app.db import Database
        from app.jobs.context import JobContext, worker_name
        from app.jobs.execute import running_here
        from app.models.job import JobKind, JobStatus
        from app.models.job_kinds import ScorePoolParams
        from app.services.jobs import new_job
        from app.tasks import scoring

        settings = client.app.state.settings.model_copy(  # type: ignore[attr-defined]
            update={"scoring_chunk_size": 100}
        )
        database = Database(settings)
        with database.session(write=True) as session:
            job = new_job(
                session,
                project_id=project_id,
                kind=JobKind.score_pool,
                params=ScorePoolParams(version=1),
                created_by="t",
            )
            job.status, job.worker, job.cancel_requested = JobStatus.running, worker_name(), cancel
            session.add(job)
            session.commit()
            assert job.id is not None
            context = JobContext(
                job_id=job.id,
                project_id=project_id,
                params=job.params,
                database=database,
                settings=settings,
            )
        assert scoring.SCORING_PROCESSES == 2  # the test machines have two cores or more
        try:
            with running_here(job.id):  # or the app's stale-job sweep fails it under us
                result = scoring.run_score_pool(context)
            assert result.scored == 420
        finally:
            database.engine.dispose()

    def test_workers_store_exactly_what_scoring_here_stored(self, live_client: TestClient) -> None:
        project_id, pool, inline = self.scored_project(live_client, seed=13)
        self.run_scoring(live_client, project_id, cancel=False)
        parallel = self.stored(live_client, project_id)
        assert sorted(parallel) == sorted(pool)  # one prediction per item, no more
        for item_id, (label, confidence, margin, probabilities) in inline.items():
            again = parallel[item_id]
            assert again[0] == label
            assert again[1] == pytest.approx(confidence, abs=1e-6)
            assert again[2] == pytest.approx(margin, abs=1e-6)
            assert again[3] == probabilities

    def test_a_cancelled_scoring_leaves_only_correct_scores(self, live_client: TestClient) -> None:
        from app.jobs.context import JobCancelled

        project_id, _, inline = self.scored_project(live_client, seed=14)
        engine = sa.create_engine(live_client.app.state.settings.resolved_database_url)  # type: ignore[attr-defined]
        with engine.begin() as connection:
            connection.execute(
                sa.text("DELETE FROM prediction WHERE project_id = :p"), {"p": project_id}
            )
        engine.dispose()
        with pytest.raises(JobCancelled):
            # Cancelled before it starts: it stops at its first progress point, after the
            # first chunk is stored; the chunks in the workers are dropped.
            self.run_scoring(live_client, project_id, cancel=True)
        left = self.stored(live_client, project_id)
        assert len(left) == 100
        for item_id, values in left.items():
            assert values[0] == inline[item_id][0]
            assert values[3] == inline[item_id][3]


class TestFeaturesAlgorithm:
    def test_trains_and_scores_on_numeric_feature_vectors(self, live_client: TestClient) -> None:
        import random
        import uuid

        rng = random.Random(9)
        project = live_client.post(
            "/v1/projects",
            json={
                "name": f"vec-{uuid.uuid4().hex[:6]}",
                "labels": ["low", "high"],
                "phase": "production",
            },
        ).json()
        base = f"/v1/projects/{project['id']}"

        def vector(label: str) -> list[float]:
            centre = 0.0 if label == "low" else 3.0
            return [centre + rng.gauss(0, 0.5), centre + rng.gauss(0, 0.5)]

        labels = ["low", "high"] * 10
        items = [
            {"text": f"row {i}", "data": {"features": vector(lab)}} for i, lab in enumerate(labels)
        ]
        items += [{"text": "pool high", "data": {"features": [3.1, 2.9]}}]
        items += [
            {"text": "no vector", "data": {}},
            {"text": "bad vector", "data": {"features": ["x"]}},
        ]
        ids = [r["id"] for r in live_client.post(f"{base}/items", json=items).json()["results"]]
        live_client.post(
            f"{base}/annotations",
            json=[{"item_id": i, "label": lab} for i, lab in zip(ids, labels, strict=False)],
        )
        job = train(live_client, project["id"], algorithm="features_logreg", activate=True)
        assert job["status"] == "succeeded", job
        assert job["result"]["n_train"] == 20 and job["result"]["accuracy"] >= 0.9
        scoring = wait_for_job(live_client, {"id": job["result"]["scoring_job_id"]})
        assert scoring["result"]["scored"] == 1  # the two items without a usable vector are skipped
        detail = live_client.get(f"{base}/items/{ids[20]}").json()
        assert detail["predictions"][0]["label"] == "high"


class TestAutoRetrain:
    def test_retrains_after_n_new_human_labels(self, live_client: TestClient) -> None:
        project_id, labeled, pool = labeled_project(
            live_client, n_labeled=10, n_pool=10, seed=90, retrain_after_labels=30
        )
        [first] = train_jobs_after_a_retrain_check(live_client, project_id)
        assert first["created_by"] == "auto-retrain" and first["params"]["activate"] == "if_better"
        finished = wait_for_job(live_client, first)
        assert finished["result"]["activated"] is True  # nothing was active yet
        wait_for_job(live_client, {"id": finished["result"]["scoring_job_id"]})

        corpus = labeled_corpus(20, seed=90)[30:]  # the pool's true labels
        entries = [
            {"item_id": i, "label": label} for i, (_, label) in zip(pool, corpus, strict=True)
        ]
        live_client.post(f"/v1/projects/{project_id}/annotations", json=entries[:29])
        assert len(train_jobs_after_a_retrain_check(live_client, project_id)) == 1
        live_client.post(f"/v1/projects/{project_id}/annotations", json=entries[29:])
        after_30 = train_jobs_after_a_retrain_check(live_client, project_id)
        assert len(after_30) == 2
        second = wait_for_job(live_client, after_30[1])
        assert second["result"]["n_train"] == len(labeled) + 30

    def test_counts_labels_newer_than_the_newest_training_data(
        self, live_client: TestClient
    ) -> None:
        """A changed label is new information and counts; labels the newest version already
        saw never do, however the project's labeled count compares with its n_train."""
        project_id, labeled, pool = labeled_project(live_client, n_labeled=10, n_pool=10, seed=96)
        train(live_client, project_id, activate=True)
        patched = live_client.patch(f"/v1/projects/{project_id}", json={"retrain_after_labels": 5})
        assert patched.status_code == 200, patched.text

        answers = [{"item_id": i, "label": LABELS[0]} for i in pool[:4]]
        assert live_client.post(f"/v1/projects/{project_id}/annotations", json=answers).is_success
        assert len(train_jobs_after_a_retrain_check(live_client, project_id)) == 1
        relabeled = live_client.get(f"/v1/projects/{project_id}/items/{labeled[0]}").json()
        other = next(label for label in LABELS if label != relabeled["resolved_label"])
        change = [{"item_id": labeled[0], "label": other}]
        assert live_client.post(f"/v1/projects/{project_id}/annotations", json=change).is_success
        # 4 new items + 1 changed label; the labeled count grew by 4
        assert len(train_jobs_after_a_retrain_check(live_client, project_id)) == 2

    def test_a_review_counts_and_an_answer_does_not_check(self, live_client: TestClient) -> None:
        """Reviews label items too; the answer request itself never asks whether to retrain
        (its cost must not depend on retrain_after_labels: bench/request_cost.py)."""
        project_id, _, pool = labeled_project(
            live_client, n_labeled=10, n_pool=5, seed=95, retrain_after_labels=1000
        )
        train(live_client, project_id, activate=True)
        live_client.patch(f"/v1/projects/{project_id}", json={"retrain_after_labels": 2})
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
        finally:
            sa.event.remove(sa.Engine, "before_cursor_execute", record)
        assert response.status_code == 200, response.text
        assert not [s for s in statements if "FROM model_version" in s or "labeled_at >" in s]
        assert len(train_jobs_after_a_retrain_check(live_client, project_id)) == 1
        review = {"item_id": pool[1], "label": LABELS[1]}
        assert live_client.post(f"/v1/projects/{project_id}/reviews", json=review).is_success
        assert len(train_jobs_after_a_retrain_check(live_client, project_id)) == 2

    def test_off_by_default(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=20, n_pool=0, seed=91)
        assert train_jobs_after_a_retrain_check(live_client, project_id) == []


class TestTrainingFailuresAreProblems:
    def test_nan_params_are_422(self, live_client: TestClient) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=5, n_pool=0, seed=92)
        response = live_client.post(
            f"/v1/projects/{project_id}/models",
            content='{"params": {"C": NaN}}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "params", "C"]

    def test_params_scikit_learn_refuses_fail_the_job_with_a_409(
        self, live_client: TestClient
    ) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=5, n_pool=0, seed=93)
        job = train(live_client, project_id, algorithm=OLD, params={"min_df": 500})
        assert job["status"] == "failed"
        assert job["error"]["type"] == "/problems/training-refused"
        assert "min_df" in job["error"]["detail"] or "max_df" in job["error"]["detail"]
        assert live_client.get(f"/v1/projects/{project_id}/models").json()["items"] == []


def test_auto_retrain_never_activates_a_worse_version(live_client: TestClient) -> None:
    import random

    project_id, _, pool = labeled_project(live_client, n_labeled=10, n_pool=60, seed=94)
    first = train(live_client, project_id, activate=True)
    assert first["result"]["macro_f1"] > 0.9
    live_client.patch(f"/v1/projects/{project_id}", json={"retrain_after_labels": 150})
    rng = random.Random(0)
    noise = [{"item_id": i, "label": rng.choice(LABELS)} for i in pool[:160]]
    live_client.post(f"/v1/projects/{project_id}/annotations", json=noise)
    jobs = train_jobs_after_a_retrain_check(live_client, project_id)
    second = wait_for_job(live_client, jobs[-1])
    assert second["status"] == "succeeded"
    assert second["result"]["macro_f1"] < first["result"]["macro_f1"]
    assert second["result"]["activated"] is False
    versions = live_client.get(f"/v1/projects/{project_id}/models").json()["items"]
    assert [(v["version"], v["active"]) for v in versions] == [(2, False), (1, True)]
