"""The committed spec is the app's spec: regenerate with `make openapi`."""

import json
from pathlib import Path

from app.cli import write_openapi

ROOT = Path(__file__).resolve().parents[1]


def test_committed_spec_matches_the_app(tmp_path: Path) -> None:
    fresh = tmp_path / "openapi.json"
    write_openapi(fresh)
    committed = ROOT / "openapi" / "openapi.json"
    assert committed.read_text() == fresh.read_text(), (
        "openapi/openapi.json is stale: run `make openapi`"
    )


def test_spec_follows_the_conventions(tmp_path: Path) -> None:
    write_openapi(tmp_path / "spec.json")
    spec = json.loads((tmp_path / "spec.json").read_text())
    operations = [op for path in spec["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert "createItems" in ids and "getProjectStats" in ids
    assert all(op.get("summary") for op in operations)
    ingest = spec["paths"]["/v1/projects/{project_id}/items"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson"} <= ingest.keys()
    assert "ItemIn" in spec["components"]["schemas"]
    for path, methods in spec["paths"].items():
        for op in methods.values():
            if "requestBody" in op:
                # An undecodable body (400) and an oversized one (413) never reach the route.
                for status in ("400", "413"):
                    assert "application/problem+json" in op["responses"][status]["content"], path
        if path.startswith("/v1"):
            for op in methods.values():
                assert "application/problem+json" in op["responses"]["401"]["content"], path
                assert (
                    "422" not in op["responses"]
                    or "application/problem+json" in op["responses"]["422"]["content"]
                )
