"""Jobs as a resource: polling, listing, cancel, retry, failures and restarts."""

import os
import socket
import subprocess
import sys
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.db import Database
from app.main import create_app
from app.models.base import utcnow
from app.models.job import Job, JobKind, JobStatus
from app.models.job_kinds import PrelabelParams, ScorePoolParams, TrainModelParams
from app.models.model_version import ModelVersion
from app.services.jobs import new_job
from app.settings import Settings
from tests.api.test_registry import labeled_project, train
from tests.conftest import started_app, wait_for_job, wait_until_running
from tests.factories import auth, make_key, make_project


def queued_training(session: Session, project_id: int, *, algorithm: str, activate: bool) -> Job:
    """A training job queued directly, past the endpoint's checks (which would refuse some)."""
    return new_job(
        session,
        project_id=project_id,
        kind=JobKind.train_model,
        params=TrainModelParams(algorithm=algorithm, params={}, activate=activate),
        created_by="t",
    )


PRELABEL = PrelabelParams(
    model_version="registry:1",
    threshold=0.9,
    target_precision=None,
    item_ids=None,
    limit=None,
    audit_share=0.0,
)


def dead_pid() -> int:
    """The pid of a process that has exited (so a job claiming it was interrupted)."""
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(process.stdout)


class TestJobResource:
    def test_unknown_job_is_404(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        response = client.get("/v1/jobs/987654", headers=headers)
        assert response.status_code == 404

    def test_cancel_a_queued_job_then_retry_it(self, client: TestClient, session: Session) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        job = new_job(
            session,
            project_id=project["id"],
            kind=JobKind.score_pool,
            params=ScorePoolParams(version=1),
            created_by="t",
        )
        session.commit()
        cancelled = client.post(f"/v1/jobs/{job.id}/cancel", headers=headers)
        assert cancelled.status_code == 200
        assert (cancelled.json()["status"], cancelled.json()["retryable"]) == ("cancelled", True)
        again = client.post(f"/v1/jobs/{job.id}/cancel", headers=headers)
        assert again.status_code == 409
        retried = client.post(f"/v1/jobs/{job.id}/retry", headers=headers)
        assert retried.status_code == 202
        body = retried.json()
        assert body["retry_of"] == job.id and body["status"] == "queued"
        assert body["params"] == {"kind": "score_pool", "version": 1}
        assert retried.headers["location"] == f"/v1/jobs/{body['id']}"
        # Only a finished, unsuccessful job can be retried; the 409 says what to do instead.
        queued = client.post(f"/v1/jobs/{body['id']}/retry", headers=headers)
        assert queued.status_code == 409
        assert f"cancel it first (POST /v1/jobs/{body['id']}/cancel)" in queued.json()["detail"]

    def test_list_filters_by_project_status_and_kind(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        other = make_project(client, headers)
        for project_id, kind, params in (
            (project["id"], JobKind.prelabel, PRELABEL),
            (project["id"], JobKind.score_pool, ScorePoolParams(version=1)),
            (other["id"], JobKind.prelabel, PRELABEL),
        ):
            new_job(session, project_id=project_id, kind=kind, params=params, created_by="t")
        session.commit()
        mine = client.get(f"/v1/jobs?project_id={project['id']}", headers=headers).json()["items"]
        assert [j["kind"] for j in mine] == ["prelabel", "score_pool"]
        prelabels = client.get(
            f"/v1/jobs?project_id={project['id']}&kind=prelabel&status=queued", headers=headers
        ).json()
        assert len(prelabels["items"]) == 1
        assert client.get("/v1/jobs?status=bogus", headers=headers).status_code == 422

    def test_annotators_neither_read_nor_cancel_jobs(
        self, client: TestClient, session: Session
    ) -> None:
        """Annotators start no jobs, and a job's params can hold an import's SQL."""
        from app.models.base import Role

        admin = auth(make_key(session))
        project = make_project(client, admin)
        job = new_job(
            session,
            project_id=project["id"],
            kind=JobKind.prelabel,
            params=PRELABEL,
            created_by="t",
        )
        session.commit()
        annotator = auth(make_key(session, role=Role.annotator))
        assert client.get(f"/v1/jobs/{job.id}", headers=annotator).status_code == 403
        assert client.get("/v1/jobs", headers=annotator).status_code == 403
        assert client.post(f"/v1/jobs/{job.id}/cancel", headers=annotator).status_code == 403
        assert client.get(f"/v1/jobs/{job.id}", headers=admin).status_code == 200


class TestFailuresAndRestarts:
    def test_a_failing_job_leaves_a_problem_and_no_data(
        self, live_client: TestClient, live_settings: Settings
    ) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=2, n_pool=0, seed=60)
        # Queued directly (the endpoint would refuse it with a 409): the job itself must fail.
        database = Database(live_settings)
        with database.session(write=True) as session:
            job = queued_training(session, project_id, algorithm="tfidf_logreg", activate=True)
            session.commit()
        live_client.app.state.runner.enqueue(job.id)  # type: ignore[attr-defined]
        finished = wait_for_job(live_client, {"id": job.id})
        assert finished["status"] == "failed"
        assert finished["retryable"] is True
        assert finished["error"]["status"] == 409
        assert finished["error"]["type"] == "/problems/not-enough-labels"
        assert live_client.get(f"/v1/projects/{project_id}/models").json()["items"] == []
        database.engine.dispose()

    def test_a_job_interrupted_by_a_crash_fails_at_the_next_start_and_can_be_retried(
        self, live_settings: Settings
    ) -> None:
        with started_app(live_settings) as client:
            project_id, _, _ = labeled_project(client, n_labeled=10, n_pool=0, seed=61)
        database = Database(live_settings)
        with database.session(write=True) as session:
            job = queued_training(session, project_id, algorithm="hashing_sgd", activate=False)
            job.status, job.worker = JobStatus.running, f"{socket.gethostname()}:{dead_pid()}"
            session.add(job)
            session.commit()
        with started_app(live_settings) as client:  # "the next start"
            failed = client.get(f"/v1/jobs/{job.id}").json()
            assert failed["status"] == "failed"
            assert failed["error"]["type"] == "/problems/job-interrupted"
            assert f"/v1/jobs/{job.id}/retry" in failed["error"]["detail"]
            retried = client.post(f"/v1/jobs/{job.id}/retry").json()
            assert wait_for_job(client, retried)["status"] == "succeeded"
        database.engine.dispose()

    def test_a_running_job_of_a_live_process_is_left_alone(self, live_settings: Settings) -> None:
        database = Database(live_settings)
        with database.session(write=True) as session:
            job = new_job(
                session, project_id=None, kind=JobKind.prelabel, params=PRELABEL, created_by="t"
            )
            job.status, job.worker = JobStatus.running, f"{socket.gethostname()}:{os.getppid()}"
            job.heartbeat_at = utcnow()
            session.add(job)
            session.commit()
        with TestClient(create_app(live_settings)):
            pass
        with database.session() as session:
            assert session.get(Job, job.id).status == JobStatus.running  # type: ignore[union-attr]
            session.get(Job, job.id)
        database.engine.dispose()

    def test_after_a_restart_the_active_version_predicts_without_retraining(
        self, live_settings: Settings
    ) -> None:
        with started_app(live_settings) as client:
            project_id, _, pool = labeled_project(client, n_labeled=10, n_pool=5, seed=62)
            job = train(client, project_id, activate=True)
            wait_for_job(client, {"id": job["result"]["scoring_job_id"]})
        with started_app(live_settings) as client:  # a new start: nothing cached
            response = client.post(f"/v1/projects/{project_id}/prelabels", json={"threshold": 0.01})
            result = wait_for_job(client, response.json())["result"]
            assert result["auto_accepted"] == len(pool)
            assert result["model_version"] == "registry:1"  # loaded from the database
            kinds = [
                j["kind"] for j in client.get(f"/v1/jobs?project_id={project_id}").json()["items"]
            ]
            assert kinds.count("train_model") == 1
        database = Database(live_settings)
        with database.session() as session:
            versions = session.exec(
                select(ModelVersion).where(ModelVersion.project_id == project_id)
            ).all()
            assert len(versions) == 1 and versions[0].active
        database.engine.dispose()


class TestCancelRunning:
    def test_a_running_training_job_stops_at_its_next_fold_and_saves_nothing(
        self, live_client: TestClient
    ) -> None:
        project_id, _, _ = labeled_project(live_client, n_labeled=1_500, n_pool=0, seed=63)
        job = live_client.post(f"/v1/projects/{project_id}/models", json={}).json()
        wait_until_running(live_client, job)
        cancel = live_client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancel.status_code == 200
        finished = wait_for_job(live_client, job)
        assert finished["status"] == "cancelled", finished
        assert finished["result"] is None and finished["retryable"] is True
        assert live_client.get(f"/v1/projects/{project_id}/models").json()["items"] == []


class TestJobProcess:
    def test_jobs_run_in_a_child_process_whose_death_fails_only_its_job(
        self, live_client: TestClient
    ) -> None:
        import signal

        project_id, _, _ = labeled_project(live_client, n_labeled=1_500, n_pool=0, seed=64)
        job = live_client.post(f"/v1/projects/{project_id}/models", json={}).json()
        current = wait_until_running(live_client, job)
        host, _, pid = current["worker"].rpartition(":")
        assert host == socket.gethostname() and int(pid) != os.getpid()  # not the API process
        os.kill(int(pid), signal.SIGKILL)
        failed = wait_for_job(live_client, job)
        assert failed["status"] == "failed"
        assert failed["error"]["type"] == "/problems/job-interrupted"
        # The runner replaces the dead process: the retry succeeds.
        retried = live_client.post(f"/v1/jobs/{job['id']}/retry").json()
        assert wait_for_job(live_client, retried)["status"] == "succeeded"


# Rows as the code stored them before params and results carried `kind` (raw dicts).
OLD_ROWS: list[dict[str, Any]] = [
    {
        "kind": JobKind.train_model,
        "params": {"algorithm": "tfidf_logreg", "params": {"C": 1.0}, "activate": "if_better"},
        "result": {
            "version": 3,
            "model_version": "registry:3",
            "n_train": 40,
            "n_user_behavior": 0,
            "dataset_version": 2,
            "accuracy": 0.9,
            "macro_f1": 0.88,
            "training_seconds": 0.5,
            "activated": False,
            "scoring_job_id": None,
        },
    },
    {
        "kind": JobKind.score_pool,
        "params": {"version": 3},
        "result": {"version": 3, "scored": 0, "superseded": True},
    },
    {
        "kind": JobKind.apply_consensus,
        "params": {},
        "result": {"method": "dawid_skene", "changed": 0, "skipped": "superseded by job 9"},
    },
    {
        "kind": JobKind.import_click_logs,
        "params": {
            "kind": "click_logs",
            "min_dwell_seconds": 30.0,
            "max_position": 3,
            "annotator": "user_behavior",
            "sessions": 1,
            "impressions": 1,
            "payload": {"sessions": [{"query": "q", "results": []}]},
        },
        "result": None,
    },
]


class TestOldRows:
    def test_rows_stored_without_kind_read_over_http(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        ids = []
        for row in OLD_ROWS:
            done = row["result"] is not None
            job = Job(
                project_id=project["id"],
                kind=row["kind"],
                status=JobStatus.succeeded if done else JobStatus.queued,
                progress=1.0 if done else 0.0,
                params=row["params"],
                result=row["result"],
                created_by="before-kind",
            )
            session.add(job)
            session.flush()
            ids.append(job.id)
        session.commit()

        listed = client.get(f"/v1/jobs?project_id={project['id']}", headers=headers)
        assert listed.status_code == 200, listed.text
        for row, job_id, from_list in zip(OLD_ROWS, ids, listed.json()["items"], strict=True):
            one = client.get(f"/v1/jobs/{job_id}", headers=headers)
            assert one.status_code == 200, one.text
            body = one.json()
            assert from_list == body
            # The same fields and values as stored, with `kind` added; the payload left out.
            public = {k: v for k, v in row["params"].items() if k != "payload"}
            params_kind = public.get("kind", row["kind"])
            assert body["params"] == {**public, "kind": params_kind}
            if row["result"] is None:
                assert body["result"] is None
            else:
                assert body["result"] == {**row["result"], "kind": row["kind"]}
