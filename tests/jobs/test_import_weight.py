"""The API process and an import job never load the ML stack (docs/design.md, "Import weight").

scikit-learn alone costs 180 MB (it imports pandas and pyarrow); an import job that loaded it
could not keep the 300 MB peak that bench/import_jsonl.py measures. A fresh interpreter
starts the app, accepts a JSONL file import and a click-log import over HTTP, runs both jobs
exactly as a job process does (run_job with JOB_FUNCTIONS), and reports which heavy
libraries it loaded: none may be.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.jobs.kinds import JOB_FUNCTIONS
from app.models.job import JobKind
from tests.databases import fresh_database

HEAVY = ("sklearn", "cleanlab", "skops", "pandas", "pyarrow", "openai")
ROOT = Path(__file__).resolve().parents[2]


def probe(database_url: str) -> dict[str, Any]:
    """Run in a fresh interpreter: what the app and two import jobs loaded."""
    from fastapi.testclient import TestClient

    from app.jobs.execute import run_job
    from app.main import create_app
    from app.migrations import upgrade
    from app.settings import Settings

    upgrade(database_url)
    secret = "lw_" + "p" * 43
    settings = Settings(database_url=database_url, bootstrap_admin_key=secret)
    with TestClient(create_app(settings)) as client:
        enqueued: list[int] = []
        client.app.state.runner.enqueue = enqueued.append  # type: ignore[attr-defined]
        client.headers["Authorization"] = f"Bearer {secret}"
        loaded_by_api = sorted(name for name in HEAVY if name in sys.modules)
        project = client.post(
            "/v1/projects",
            json={"name": "weights", "labels": ["relevant", "not_relevant"], "phase": "production"},
        ).json()
        rows = [{"id": f"r{i}", "text": f"row {i}", "label": "relevant"} for i in range(50)]
        client.post(
            f"/v1/projects/{project['id']}/imports/upload",
            data={
                "kind": "file",
                "mapping": json.dumps({"external_id": "id", "text": "text", "label": "label"}),
            },
            files={"file": ("rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())},
        ).raise_for_status()
        results = [{"doc_id": "d1", "position": 1, "clicked": True, "dwell_time": 40}]
        client.post(
            f"/v1/projects/{project['id']}/imports",
            json={"kind": "click_logs", "sessions": [{"query": "q", "results": results}]},
        ).raise_for_status()
        database = client.app.state.database  # type: ignore[attr-defined]
        for job_id in enqueued:
            run_job(database, settings, job_id, functions=JOB_FUNCTIONS, enqueue=enqueued.append)
        jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in enqueued]
    return {
        "loaded_by_api": loaded_by_api,
        "loaded_after_jobs": sorted(name for name in HEAVY if name in sys.modules),
        "jobs": [(job["kind"], job["status"], job["error"]) for job in jobs],
    }


def test_the_api_and_import_jobs_load_no_ml_library(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        code = (
            "import json, sys; from tests.jobs.test_import_weight import probe; "
            "print(json.dumps(probe(sys.argv[1])))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["jobs"] == [
        ["import_file", "succeeded", None],
        ["import_click_logs", "succeeded", None],
    ]
    assert report["loaded_by_api"] == []
    assert report["loaded_after_jobs"] == []


def test_every_job_kind_names_a_function() -> None:
    assert set(JOB_FUNCTIONS) == set(JobKind)
    for kind in JobKind:
        assert callable(JOB_FUNCTIONS[kind]), kind
