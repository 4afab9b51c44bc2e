"""The committed spec is the app's spec (regenerate with `make openapi`), a valid one that
generators read well: docs/clients.md says what each check protects."""

import json
import subprocess
import tomllib
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from app.cli import write_openapi
from app.models.job_kinds import RESULT_MODELS
from tests.node_tools import node_bin, node_env

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "openapi" / "openapi.json"

# Every operation's id: what generated clients call it. Renaming a route function renames a
# client method, so a change here is a breaking change for clients: make it on purpose.
OPERATION_IDS = {
    ("GET", "/healthz"): "getHealth",
    ("GET", "/metrics"): "getMetrics",
    ("GET", "/readyz"): "getReadiness",
    ("GET", "/v1/algorithms"): "listAlgorithms",
    ("GET", "/v1/me"): "whoAmI",
    ("GET", "/v1/webhooks"): "listWebhooks",
    ("POST", "/v1/webhooks"): "createWebhook",
    ("GET", "/v1/webhooks/{webhook_id}"): "getWebhook",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "deleteWebhook",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "listDeliveries",
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): "retryDelivery",
    ("GET", "/v1/api-keys"): "listApiKeys",
    ("POST", "/v1/api-keys"): "createApiKey",
    ("DELETE", "/v1/api-keys/{key_id}"): "deleteApiKey",
    ("GET", "/v1/jobs"): "listJobs",
    ("GET", "/v1/jobs/{job_id}"): "getJob",
    ("POST", "/v1/jobs/{job_id}/cancel"): "cancelJob",
    ("POST", "/v1/jobs/{job_id}/retry"): "retryJob",
    ("GET", "/v1/projects"): "listProjects",
    ("POST", "/v1/projects"): "createProject",
    ("GET", "/v1/projects/{project_id}"): "getProject",
    ("PATCH", "/v1/projects/{project_id}"): "updateProject",
    ("GET", "/v1/projects/{project_id}/active-learning"): "getActiveLearning",
    ("POST", "/v1/projects/{project_id}/active-learning/simulations"): "createSimulation",
    ("GET", "/v1/projects/{project_id}/agreement"): "getAgreement",
    ("GET", "/v1/projects/{project_id}/annotations"): "listAnnotations",
    ("POST", "/v1/projects/{project_id}/annotations"): "createAnnotations",
    ("POST", "/v1/projects/{project_id}/batches"): "createBatch",
    ("DELETE", "/v1/projects/{project_id}/batches/{batch_id}"): "deleteBatch",
    ("GET", "/v1/projects/{project_id}/batches/{batch_id}"): "getBatch",
    ("POST", "/v1/projects/{project_id}/batches/{batch_id}/skip"): "skipBatchItems",
    ("POST", "/v1/projects/{project_id}/batches/{batch_id}/renew"): "renewBatch",
    ("GET", "/v1/projects/{project_id}/consensus"): "getConsensus",
    ("GET", "/v1/projects/{project_id}/cost"): "getCost",
    ("GET", "/v1/projects/{project_id}/dataset-versions"): "listDatasetVersions",
    ("POST", "/v1/projects/{project_id}/dataset-versions"): "createDatasetVersion",
    ("GET", "/v1/projects/{project_id}/dataset-versions/{version}"): "getDatasetVersion",
    ("GET", "/v1/projects/{project_id}/dataset-versions/{version}/diff"): "diffDatasetVersions",
    ("GET", "/v1/projects/{project_id}/dataset-versions/{version}/export"): (
        "exportDatasetVersion"
    ),
    ("POST", "/v1/projects/{project_id}/imports"): "createImport",
    ("POST", "/v1/projects/{project_id}/imports/upload"): "createFileImport",
    ("GET", "/v1/projects/{project_id}/items"): "listItems",
    ("POST", "/v1/projects/{project_id}/items"): "createItems",
    ("GET", "/v1/projects/{project_id}/items/{item_id}"): "getItem",
    ("GET", "/v1/projects/{project_id}/label-issues"): "listLabelIssueReports",
    ("POST", "/v1/projects/{project_id}/label-issues"): "createLabelIssueReport",
    ("GET", "/v1/projects/{project_id}/label-issues/{report_id}"): "getLabelIssueReport",
    ("GET", "/v1/projects/{project_id}/models"): "listModelVersions",
    ("POST", "/v1/projects/{project_id}/models"): "createModelVersion",
    ("GET", "/v1/projects/{project_id}/models/{version}"): "getModelVersion",
    ("POST", "/v1/projects/{project_id}/models/{version}/activate"): "activateModelVersion",
    ("GET", "/v1/projects/{project_id}/phase-changes"): "listPhaseChanges",
    ("POST", "/v1/projects/{project_id}/predictions"): "createPredictions",
    ("POST", "/v1/projects/{project_id}/prelabels"): "createPrelabels",
    ("GET", "/v1/projects/{project_id}/prelabels/audit"): "getPrelabelAudit",
    ("POST", "/v1/projects/{project_id}/production-samples"): "createProductionSamples",
    ("GET", "/v1/projects/{project_id}/production-samples/disagreements"): (
        "listProductionDisagreements"
    ),
    ("GET", "/v1/projects/{project_id}/production-samples/report"): "getProductionReport",
    ("GET", "/v1/projects/{project_id}/reviews"): "listReviews",
    ("POST", "/v1/projects/{project_id}/reviews"): "createReview",
    ("GET", "/v1/projects/{project_id}/stats"): "getProjectStats",
    ("POST", "/v1/projects/{project_id}/synthetic"): "createSyntheticItems",
}

# Names generators write beside the per-tag API modules (openapi-python-client: api/, models/,
# client.py, errors.py, types.py): a tag spelled like one would shadow it.
GENERATOR_NAMES = {"api", "client", "errors", "models", "types"}

# Response schemas whose models leave keys out when they serialize, so those fields may be
# absent: a job's params and result keep only the fields the job set (app/models/job_kinds.py),
# a problem has no `errors` or `context` when there are none, a column mapping drops the
# columns it leaves unused.
OMITS_KEYS = {
    "ApplyConsensusResult",
    "ImportFileResult",
    "ImportSqlParams",
    "ImportSqlResult",
    "PrelabelParams",
    "PrelabelResult",
    "ScorePoolParams",
    "ScorePoolResult",
    "SimulateActiveLearningParams",
    "SimulateActiveLearningResult",
    "TrainModelParams",
    "Problem",
    "ColumnMapping",
    "SqlColumnMapping",
}

# Enums with the same values that are different things: reading and writing file formats.
SAME_VALUES_APART = {frozenset({"ExportFormat", "FileFormat"})}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The app's spec, freshly written."""
    path = tmp_path_factory.mktemp("spec") / "openapi.json"
    write_openapi(path)
    built: dict[str, Any] = json.loads(path.read_text())
    return built


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def reachable(spec: dict[str, Any], node: Any) -> set[str]:
    """The component schemas `node` refers to, directly or through other schemas."""
    schemas = spec["components"]["schemas"]
    found: set[str] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, dict):
            ref = current.get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found.add(name)
                    pending.append(schemas[name])
            pending.extend(v for k, v in current.items() if k != "$ref")
        elif isinstance(current, list):
            pending.extend(current)
    return found


def request_and_response_schemas(spec: dict[str, Any]) -> tuple[set[str], set[str]]:
    requests: set[str] = set()
    responses: set[str] = set()
    for _, _, operation in operations(spec):
        requests |= reachable(spec, [operation.get("requestBody"), operation.get("parameters")])
        responses |= reachable(spec, operation["responses"])
    return requests, responses


def test_committed_spec_matches_the_app(tmp_path: Path) -> None:
    fresh = tmp_path / "openapi.json"
    write_openapi(fresh)
    assert SPEC.read_text() == fresh.read_text(), (
        "openapi/openapi.json is stale: run `make openapi`"
    )


def test_committed_spec_is_valid_openapi() -> None:
    validate(json.loads(SPEC.read_text()))


def test_redocly_lint_is_clean() -> None:
    """Against redocly.yaml: no error and no warning."""
    tools = node_bin()
    done = subprocess.run(
        [tools / "redocly", "lint", SPEC, "--config", ROOT / "redocly.yaml", "--format=json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=node_env(),
        timeout=300,
    )
    report = json.loads(done.stdout)
    problems = [(p["ruleId"], p["message"], p["location"]) for p in report["problems"]]
    assert report["totals"]["errors"] == report["totals"]["warnings"] == 0, problems
    assert done.returncode == 0, done.stderr


def test_spec_follows_the_conventions(spec: dict[str, Any]) -> None:
    assert all(op.get("summary") for _, _, op in operations(spec))
    ingest = spec["paths"]["/v1/projects/{project_id}/items"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson"} <= ingest.keys()
    assert "ItemIn" in spec["components"]["schemas"]
    for _, path, op in operations(spec):
        if "requestBody" in op:
            # An undecodable body (400) and an oversized one (413) never reach the route.
            for status in ("400", "413"):
                assert "application/problem+json" in op["responses"][status]["content"], path
        if path.startswith("/v1"):
            assert "application/problem+json" in op["responses"]["401"]["content"], path
            assert (
                "422" not in op["responses"]
                or "application/problem+json" in op["responses"]["422"]["content"]
            )


def test_operation_ids_are_the_pinned_ones(spec: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for method, path, op in operations(spec)}
    assert ids == OPERATION_IDS
    assert len(set(ids.values())) == len(ids)


def test_no_tag_is_a_generator_name(spec: dict[str, Any]) -> None:
    tags = {tag for _, _, op in operations(spec) for tag in op["tags"]}
    assert "model-versions" in tags
    assert not {tag.replace("-", "_") for tag in tags} & GENERATOR_NAMES


def test_info_servers_and_security(spec: dict[str, Any]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert spec["info"]["version"] == version("labelwise") == pyproject["project"]["version"]
    assert spec["info"]["license"]["identifier"] == pyproject["project"]["license"]["text"]
    assert spec["servers"] and all(server["url"] for server in spec["servers"])
    for _, path, op in operations(spec):
        if path.startswith("/v1"):
            assert op["security"] == [{"HTTPBearer": []}], path
        else:
            assert op["security"] == [], path


def test_each_kind_of_body_is_its_own_operation(spec: dict[str, Any]) -> None:
    """Generators give an operation one body type: the JSON imports and the file upload are
    two operations; NDJSON ingest, which no generator expresses, is a documented raw call."""
    for _, path, op in operations(spec):
        types = set(op.get("requestBody", {}).get("content", {}))
        assert len(types - {"application/x-ndjson"}) <= 1, path
    imports = "/v1/projects/{project_id}/imports"
    assert spec["paths"][imports]["post"]["requestBody"]["content"].keys() == {"application/json"}
    upload = spec["paths"][f"{imports}/upload"]["post"]["requestBody"]["content"]
    assert upload.keys() == {"multipart/form-data"}


def test_every_enum_is_one_named_component(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    enums = {name: schema["enum"] for name, schema in schemas.items() if "enum" in schema}
    inline: list[str] = []
    pending: list[tuple[str, Any]] = [("#/paths", spec["paths"])]
    pending += [
        (f"#/components/schemas/{n}", {k: v for k, v in s.items() if k != "enum"})
        for n, s in schemas.items()
    ]
    while pending:
        where, node = pending.pop()
        if isinstance(node, dict):
            if "enum" in node:
                inline.append(where)
            pending.extend((f"{where}/{k}", v) for k, v in node.items())
        elif isinstance(node, list):
            pending.extend((f"{where}/{i}", v) for i, v in enumerate(node))
    assert inline == [], "declare these enums as an Enum class or a named TypeAliasType"
    by_values = Counter(frozenset(values) for values in enums.values())
    shared = [
        frozenset(name for name, values in enums.items() if frozenset(values) == same)
        for same, count in by_values.items()
        if count > 1
    ]
    assert set(shared) <= SAME_VALUES_APART, "one concept, one enum"
    strategy = schemas["BatchCreate"]["properties"]["strategy"]["anyOf"][0]
    simulation = schemas["SimulationRequest"]["properties"]["strategies"]["items"]
    assert strategy == simulation == {"$ref": "#/components/schemas/Strategy"}


def test_schema_names_are_unique_and_plain(spec: dict[str, Any]) -> None:
    """No `X-Input`/`X-Output` pair (FastAPI's names when a request and a response share a
    model whose schemas differ): generators name classes by title and collide."""
    schemas = spec["components"]["schemas"]
    assert not [name for name in schemas if "-" in name]
    titles = Counter(schema.get("title", name) for name, schema in schemas.items())
    assert [title for title, count in titles.items() if count > 1] == []


def test_request_fields_with_defaults_are_optional(spec: dict[str, Any]) -> None:
    requests, _ = request_and_response_schemas(spec)
    schemas = spec["components"]["schemas"]
    defaulted = 0
    for name in requests:
        required = set(schemas[name].get("required", []))
        for field, schema in schemas[name].get("properties", {}).items():
            if "default" in schema:
                defaulted += 1
                assert field not in required, f"{name}.{field}"
    assert defaulted > 40


def test_response_fields_are_required_unless_the_model_omits_keys(spec: dict[str, Any]) -> None:
    """The server sends every field of a response model (ResponseModel): a generated client
    reads them without checks for absent keys."""
    _, responses = request_and_response_schemas(spec)
    schemas = spec["components"]["schemas"]
    optional = {
        f"{name}.{field}"
        for name in responses - OMITS_KEYS
        for field in schemas[name].get("properties", {})
        if field not in schemas[name].get("required", [])
    }
    assert optional == set()
    for name in OMITS_KEYS:
        assert name in responses
        schema = schemas[name]
        assert set(schema["properties"]) - set(schema.get("required", [])), name
    counts = schemas["IngestReport"]
    assert {"created", "updated", "unchanged", "duplicates", "failed"} <= set(counts["required"])


def test_job_results_are_a_union_told_apart_by_kind(spec: dict[str, Any]) -> None:
    job = spec["components"]["schemas"]["JobPublic"]
    assert "result" in job["required"]
    union = job["properties"]["result"]["anyOf"][0]
    assert union["discriminator"]["propertyName"] == "kind"
    assert union["discriminator"]["mapping"] == {
        kind: f"#/components/schemas/{model.__name__}" for kind, model in RESULT_MODELS.items()
    }
