"""Typed job params and results: one model of each per kind, told apart by `kind`, storing the
exact shape a job wrote, and reading rows stored before `kind` was."""

from typing import Any

import pytest
from pydantic import TypeAdapter

from app.models.job import Job, JobKind, JobPublic, JobStatus
from app.models.job_kinds import (
    PARAMS_MODELS,
    RESULT_MODELS,
    ApplyConsensusResult,
    ImportFileParams,
    ImportSqlParams,
    ImportSqlResult,
    JobParams,
    JobResult,
    ScorePoolResult,
    SyntheticResult,
    TrainModelParams,
    TrainModelResult,
)

PARAMS: TypeAdapter[Any] = TypeAdapter(JobParams)
RESULTS: TypeAdapter[Any] = TypeAdapter(JobResult)

SQL_PARAMS = {
    "kind": "sql",
    "connection": "crm",
    "query": "SELECT id, body FROM tickets WHERE team = :team",
    "params": {"team": "a", "since": None},
    "mapping": {"text": "body", "external_id": "id", "metadata": []},
    "max_rows": 100,
    "stable_only": False,
    "source": "existing_db",
    "annotator": "import:crm",
    "query_sha256": "ab" * 32,
}


def test_every_kind_has_a_params_and_a_result_model() -> None:
    assert set(PARAMS_MODELS) == set(RESULT_MODELS) == set(JobKind)
    for kind in JobKind:
        assert RESULT_MODELS[kind].model_fields["kind"].default == kind
        assert PARAMS_MODELS[kind].__name__.endswith("Params")
        assert RESULT_MODELS[kind].__name__.endswith("Result")


def test_the_unions_parse_by_kind() -> None:
    train = PARAMS.validate_python(
        {"kind": "train_model", "algorithm": "tfidf_logreg", "params": {}, "activate": True}
    )
    assert isinstance(train, TrainModelParams) and train.dataset_version is None
    # The import kinds keep the `kind` their params always had: the import kind.
    assert isinstance(PARAMS.validate_python(SQL_PARAMS), ImportSqlParams)
    file_params = PARAMS.validate_python(
        {
            "kind": "file",
            "upload_id": 1,
            "file_name": "rows.csv",
            "format": "csv",
            "size_bytes": 10,
            "file_sha256": "cd" * 32,
            "mapping": {"text": "text"},
            "annotator": "import:rows",
            "source": "existing_db",
        }
    )
    assert isinstance(file_params, ImportFileParams)
    result = RESULTS.validate_python(
        {"kind": "import_sql", "rows_read": 0, "annotator": "import:crm", "provenance": {}}
    )
    assert isinstance(result, ImportSqlResult) and result.items.created == 0
    with pytest.raises(ValueError):
        PARAMS.validate_python({"kind": "bogus"})


def test_a_model_stores_the_fields_it_was_given_and_its_kind() -> None:
    superseded = ScorePoolResult(version=2, scored=0, superseded=True)
    assert superseded.model_dump(mode="json") == {
        "kind": "score_pool",
        "version": 2,
        "scored": 0,
        "superseded": True,
    }
    scored = ScorePoolResult(version=2, model_version="registry:2", scored=5)
    assert scored.model_dump(mode="json") == {
        "kind": "score_pool",
        "version": 2,
        "model_version": "registry:2",
        "scored": 5,
    }
    # A null given is kept: absent and null stay told apart.
    auto = TrainModelParams(algorithm="hashing_sgd", params={}, activate="if_better")
    assert "dataset_version" not in auto.model_dump(mode="json")
    asked = TrainModelParams(
        algorithm="hashing_sgd", params={}, activate=True, dataset_version=None
    )
    assert asked.model_dump(mode="json")["dataset_version"] is None


@pytest.mark.parametrize(
    ("kind", "stored"),
    [
        (
            JobKind.apply_consensus,
            {"method": "majority", "changed": 0, "skipped": "majority is applied per item"},
        ),
        (
            JobKind.apply_consensus,
            {
                "method": "dawid_skene",
                "model_version": None,
                "items_considered": 4,
                "changed": 2,
                "undecided": 1,
                "converged": True,
                "iterations": 7,
            },
        ),
        (
            JobKind.synthetic,  # stopped part-way: the items stored so far, and why
            {
                "requested": 10,
                "allowed": 10,
                "created": 3,
                "capped": False,
                "item_ids": [1, 2, 3],
                "label": "positive",
                "human_labeled": 20,
                "existing_synthetic": 0,
                "synthetic_max_ratio": 1.0,
                "rejected": {"malformed_response": 1},
                "llm_calls": 2,
                "llm_retries": 1,
                "model": "fake-model",
                "temperature": 0.9,
                "prompt_sha256": ["ef" * 32],
                "stopped": "llm-unavailable: The LLM endpoint answered 503.",
            },
        ),
        (JobKind.score_pool, {"version": 1, "scored": 0, "superseded": True}),
    ],
)
def test_old_results_read_back_exactly(kind: JobKind, stored: dict[str, Any]) -> None:
    """A result stored without `kind` reads with its kind's model and keeps its shape."""
    read = RESULT_MODELS[kind].model_validate(stored)
    assert read.model_dump(mode="json") == {"kind": kind, **stored}
    assert RESULTS.validate_python({"kind": kind, **stored}) == read


def test_job_public_picks_the_models_by_the_rows_kind() -> None:
    job = Job(
        id=7,
        kind=JobKind.import_sql,
        status=JobStatus.succeeded,
        params={k: v for k, v in SQL_PARAMS.items()},
        result={"rows_read": 1, "annotator": "import:crm", "provenance": {"kind": "sql"}},
        created_by="t",
    )
    public = JobPublic.of(job)
    assert isinstance(public.params, ImportSqlParams)
    assert isinstance(public.result, ImportSqlResult) and public.result.rows_read == 1
    body = public.model_dump(mode="json")
    assert body["params"] == SQL_PARAMS
    assert body["result"] == {
        "kind": "import_sql",
        "rows_read": 1,
        "annotator": "import:crm",
        "provenance": {"kind": "sql"},
    }


def test_kind_is_required_in_the_spec() -> None:
    """A discriminator must be a required property; every model always serializes it."""
    for model in [*PARAMS_MODELS.values(), *RESULT_MODELS.values()]:
        schema = model.model_json_schema(mode="serialization")
        assert schema["required"][0] == "kind", model.__name__
    for model in (ApplyConsensusResult, SyntheticResult, TrainModelResult):
        assert "kind" in model.model_json_schema()["required"]
