"""A job logs its life in the request log's JSON format: one line when it starts, one when it
ends (succeeded with its duration and a short result, failed with its problem type, or
cancelled), each with the job's id and kind. Run through run_job, which both runners use."""

from collections.abc import Iterator
from typing import Any

import pytest

from app.db import Database
from app.errors import NotFound
from app.jobs.context import JobCancelled, JobContext
from app.jobs.execute import run_job, short_result
from app.models.job import Job, JobKind
from app.models.job_kinds import JobResult, ScorePoolParams, ScorePoolResult
from app.services.jobs import new_job
from app.settings import Settings
from tests.jobs.conftest import JsonLines


@pytest.fixture
def database(live_settings: Settings) -> Iterator[Database]:
    database = Database(live_settings)
    yield database
    database.engine.dispose()


def run_one(
    database: Database, settings: Settings, function: Any, log: JsonLines
) -> tuple[int, list[dict[str, Any]]]:
    """Queue a score_pool job, run it with `function`, and return its id and its log lines."""
    with database.session(write=True) as session:
        job = new_job(
            session,
            project_id=None,
            kind=JobKind.score_pool,
            params=ScorePoolParams(version=1),
            created_by="t",
        )
        session.commit()
        assert job.id is not None
        job_id = job.id
    run_job(
        database,
        settings,
        job_id,
        functions={JobKind.score_pool.value: function},
        enqueue=lambda _: None,
    )
    lines = [line for line in log.lines if line.get("job_id") == job_id]
    return job_id, lines


def check_start(line: dict[str, Any], job_id: int) -> None:
    assert line["msg"] == "job started" and line["level"] == "info"
    assert line["logger"] == "labelwise.jobs" and line["ts"]
    assert (line["job_id"], line["kind"], line["project_id"]) == (job_id, "score_pool", None)


def test_a_succeeded_job_logs_its_start_and_its_end_with_a_short_result(
    database: Database, live_settings: Settings, job_log: JsonLines
) -> None:
    def score(context: JobContext) -> JobResult:
        return ScorePoolResult(version=1, scored=42, model_version="registry:1")

    job_id, lines = run_one(database, live_settings, score, job_log)
    assert len(lines) == 2
    check_start(lines[0], job_id)
    end = lines[1]
    assert end["msg"] == "job succeeded" and end["level"] == "info"
    assert (end["job_id"], end["kind"]) == (job_id, "score_pool")
    assert isinstance(end["duration_ms"], float) and end["duration_ms"] >= 0
    assert end["result"] == {"version": 1, "scored": 42, "model_version": "registry:1"}
    with database.session() as session:
        assert session.get(Job, job_id).status == "succeeded"  # type: ignore[union-attr]


def test_a_failed_job_logs_its_problem_type(
    database: Database, live_settings: Settings, job_log: JsonLines
) -> None:
    def missing(context: JobContext) -> JobResult:
        raise NotFound("The model version 1 is gone.")

    job_id, lines = run_one(database, live_settings, missing, job_log)
    assert [line["msg"] for line in lines] == ["job started", "job failed"]
    check_start(lines[0], job_id)
    end = lines[1]
    assert end["level"] == "warning"
    assert (end["job_id"], end["kind"], end["problem"]) == (
        job_id,
        "score_pool",
        "/problems/not-found",
    )
    assert end["duration_ms"] >= 0 and "result" not in end


def test_a_crashed_job_logs_internal_error(
    database: Database, live_settings: Settings, job_log: JsonLines
) -> None:
    def crash(context: JobContext) -> JobResult:
        raise RuntimeError("boom")

    job_id, lines = run_one(database, live_settings, crash, job_log)
    ends = [line for line in lines if line["msg"] == "job failed"]
    assert len(ends) == 1 and ends[0]["problem"] == "/problems/internal-error"
    check_start(lines[0], job_id)
    assert lines[-1] is ends[0]


def test_a_cancelled_job_logs_it(
    database: Database, live_settings: Settings, job_log: JsonLines
) -> None:
    def cancelled(context: JobContext) -> JobResult:
        raise JobCancelled

    job_id, lines = run_one(database, live_settings, cancelled, job_log)
    assert [line["msg"] for line in lines] == ["job started", "job cancelled"]
    assert (lines[1]["job_id"], lines[1]["kind"]) == (job_id, "score_pool")
    assert lines[1]["duration_ms"] >= 0 and "problem" not in lines[1]


def test_the_short_result_keeps_scalars_and_leaves_out_collections_and_long_text() -> None:
    result = {
        "kind": "simulate_active_learning",
        "n_items": 10,
        "accuracy": 0.5,
        "activated": True,
        "target_accuracy": None,
        "algorithm": "hashing_sgd",
        "summary": "x" * 200,
        "curves": {"random": [[1, 0.5]]},
        "item_ids": [1, 2],
    }
    assert short_result(result) == {
        "n_items": 10,
        "accuracy": 0.5,
        "activated": True,
        "target_accuracy": None,
        "algorithm": "hashing_sgd",
    }
