"""The Labelwise flow through the generated Python client (openapi-python-client): create a
project, ingest (JSON, and NDJSON by hand), fetch a batch as each of two annotators and
answer it, read the agreement, train a model and read the job's typed result; then upload a
file to import (multipart).

tests/test_clients.py type-checks it with the generated package under `mypy --strict` and runs
it against a live server; docs/clients.md shows how to build it. Prints a JSON summary.

    python clients/python/flow.py <base-url> <admin-key>   (labelwise_client on PYTHONPATH)
"""

import io
import json
import sys
import time
import uuid
from typing import TypeVar

from labelwise_client import AuthenticatedClient
from labelwise_client.api.annotations import create_annotations
from labelwise_client.api.api_keys import create_api_key
from labelwise_client.api.batches import create_batch
from labelwise_client.api.imports import create_file_import
from labelwise_client.api.items import create_items
from labelwise_client.api.jobs import get_job
from labelwise_client.api.model_versions import create_model_version
from labelwise_client.api.projects import create_project
from labelwise_client.api.quality import get_agreement
from labelwise_client.models import (
    AnnotationIn,
    ApiKeyCreate,
    BatchCreate,
    ColumnMapping,
    FileImportForm,
    ImportFileResult,
    IngestReport,
    ItemIn,
    JobPublic,
    JobStatus,
    ModelTrainRequest,
    Problem,
    ProjectCreate,
    Role,
    TrainModelResult,
)
from labelwise_client.types import File, Unset

T = TypeVar("T")
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def ok(answer: T | Problem | None, what: str) -> T:
    """The answer's body, or an error naming the problem the server sent."""
    if isinstance(answer, Problem):
        raise RuntimeError(f"{what}: {answer.status} {answer.type_}: {answer.detail}")
    if answer is None:
        raise RuntimeError(f"{what}: an undocumented answer")
    return answer


def main(base_url: str, admin_key: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    admin = AuthenticatedClient(base_url=base_url, token=admin_key)

    def annotator(name: str) -> AuthenticatedClient:
        body = ApiKeyCreate(name=f"{name}-{suffix}", role=Role.ANNOTATOR)
        key = ok(create_api_key.sync(client=admin, body=body), "creating a key").key
        return AuthenticatedClient(base_url=base_url, token=key)

    annotators = [annotator("py-ann"), annotator("py-bea")]
    new_project = ProjectCreate(
        name=f"py-client-{suffix}", labels=["bug", "feature"], annotators_per_item=2
    )
    project = ok(create_project.sync(client=admin, body=new_project), "creating the project")
    texts = [
        text
        for i in range(6)
        for text in (
            f"The app crashes with error {i} when I save",
            f"Please add dark mode option {i} to settings",
        )
    ]
    items = [ItemIn(text=text, external_id=f"py-{i}") for i, text in enumerate(texts)]
    # Half as a JSON array, through the generated method...
    ingest = ok(create_items.sync(project.id, client=admin, body=items[:6]), "ingesting")
    # ...half streamed as NDJSON, which generators cannot express: a raw call on the client's
    # own httpx client (it carries the key), its answer read with the generated model.
    streamed = admin.get_httpx_client().post(
        f"/v1/projects/{project.id}/items",
        content=(json.dumps(item.to_dict()).encode() + b"\n" for item in items[6:]),
        headers={"Content-Type": "application/x-ndjson"},
    )
    streamed.raise_for_status()
    # Counts the server always sends are plain ints, never Unset.
    created: int = ingest.created + IngestReport.from_dict(streamed.json()).created

    answered = 0
    for client in annotators:
        # Only `size`: every other field has a server default and is optional.
        batch = ok(
            create_batch.sync(project.id, client=client, body=BatchCreate(size=12)),
            "fetching a batch",
        )
        answers = [
            AnnotationIn(
                item_id=entry.item.id,
                label="bug" if "crashes" in entry.item.text else "feature",
            )
            for entry in batch.items
        ]
        report = ok(create_annotations.sync(project.id, client=client, body=answers), "answering")
        answered += report.created

    agreement = ok(get_agreement.sync(project.id, client=admin), "reading the agreement")

    training = ModelTrainRequest(algorithm="tfidf_logreg")
    accepted = ok(create_model_version.sync(project.id, client=admin, body=training), "training")
    job = wait_for_job(admin, accepted.id)
    # A union told apart by `kind`: the training job's result is a TrainModelResult.
    if job.status != JobStatus.SUCCEEDED or not isinstance(job.result, TrainModelResult):
        raise RuntimeError(f"training did not succeed: {job.to_dict()}")
    result = job.result

    # A file import is its own operation: a multipart upload, `mapping` a JSON part.
    rows = b"body\nThe export button does nothing\nAdd a CSV export\n"
    upload = FileImportForm(
        file=File(payload=io.BytesIO(rows), file_name="tickets.csv"),
        mapping=ColumnMapping(text="body"),
    )
    accepted = ok(create_file_import.sync(project.id, client=admin, body=upload), "uploading")
    imported = wait_for_job(admin, accepted.id).result
    if not isinstance(imported, ImportFileResult) or isinstance(imported.items, Unset):
        raise RuntimeError(f"the import did not succeed: {imported}")

    summary = {
        "project_id": project.id,
        "created": created,
        "answered": answered,
        "krippendorff_alpha": agreement.krippendorff_alpha,
        "band": agreement.interpretation.band.value,
        "job_id": job.id,
        "version": result.version,
        "model_version": result.model_version,
        "macro_f1": result.macro_f1,
        "import_job_id": accepted.id,
        "imported": imported.items.created,
    }
    print(json.dumps(summary))


def wait_for_job(client: AuthenticatedClient, job_id: int) -> JobPublic:
    deadline = time.monotonic() + 120
    while True:
        job = ok(get_job.sync(job_id, client=client), "polling")
        if job.status in FINISHED:
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job.status}")
        time.sleep(0.1)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python clients/python/flow.py <base-url> <admin-key>")
    main(sys.argv[1], sys.argv[2])
