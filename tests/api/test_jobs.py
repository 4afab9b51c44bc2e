"""Jobs as a resource: polling, listing, cancel, retry, failures and restarts."""

import os
import socket
import subprocess
import sys

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from app.db import Database
from app.main import create_app
from app.models.base import utcnow
from app.models.job import Job, JobKind, JobStatus
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
        params={"algorithm": algorithm, "params": {}, "activate": activate},
        created_by="t",
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
            params={"version": 1},
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
        assert body["params"] == {"version": 1}
        assert retried.headers["location"] == f"/v1/jobs/{body['id']}"
        # Only a finished, unsuccessful job can be retried.
        assert client.post(f"/v1/jobs/{body['id']}/retry", headers=headers).status_code == 409

    def test_list_filters_by_project_status_and_kind(
        self, client: TestClient, session: Session
    ) -> None:
        headers = auth(make_key(session))
        project = make_project(client, headers)
        other = make_project(client, headers)
        for project_id, kind in (
            (project["id"], JobKind.prelabel),
            (project["id"], JobKind.score_pool),
            (other["id"], JobKind.prelabel),
        ):
            new_job(session, project_id=project_id, kind=kind, params={}, created_by="t")
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
            session, project_id=project["id"], kind=JobKind.prelabel, params={}, created_by="t"
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
                session, project_id=None, kind=JobKind.prelabel, params={}, created_by="t"
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
