"""One annotation writer (`services/annotation_writer.py`) for every caller, through HTTP:
an answer from the annotations API, a prelabel job's auto-accept or a click-log import's
implicit label closes the lease its annotator name holds on the item (which only the writer
does; the jobs' own writers never did), and a later one replaces it the same way (the old
answer kept as history, retired the moment its successor was written, the item re-derived).
A static check keeps every other module from writing the annotation table."""

import ast
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi.testclient import TestClient

from tests.conftest import wait_for_job

APP = Path(__file__).resolve().parents[2] / "app"
WRITER = APP / "services" / "annotation_writer.py"


def new_project(client: TestClient, labels: list[str]) -> int:
    body = {"name": f"writer-{uuid.uuid4().hex[:8]}", "labels": labels, "phase": "production"}
    response = client.post("/v1/projects", json=body)
    assert response.status_code == 201, response.text
    project_id: int = response.json()["id"]
    return project_id


def project_with_an_item(client: TestClient) -> tuple[int, int]:
    project_id = new_project(client, ["positive", "negative"])
    response = client.post(
        f"/v1/projects/{project_id}/items", json=[{"text": f"text {uuid.uuid4().hex}"}]
    )
    assert response.status_code == 200, response.text
    item_id: int = response.json()["results"][0]["id"]
    return project_id, item_id


def succeeded(client: TestClient, response: Any) -> None:
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json())
    assert job["status"] == "succeeded", job["error"]


def answer_through_the_api(client: TestClient, project_id: int, item_id: int, label: str) -> None:
    entry = {"item_id": item_id, "label": label, "annotator": "ann"}
    response = client.post(f"/v1/projects/{project_id}/annotations", json=[entry])
    assert response.status_code == 200, response.text


def answer_by_prelabel(
    client: TestClient, project_id: int, item_id: int, label: str, confidence: float = 0.9
) -> None:
    """An external model predicts `label` for the item; a prelabel job with that model
    (threshold 0.8) auto-accepts it when it is confident enough."""
    version = f"ext-{uuid.uuid4().hex[:6]}"
    other = "negative" if label == "positive" else "positive"
    probabilities = {label: confidence, other: round(1 - confidence, 6)}
    entry = {"item_id": item_id, "model_version": version, "probabilities": probabilities}
    response = client.post(f"/v1/projects/{project_id}/predictions", json=[entry])
    assert response.status_code == 200, response.text
    body = {"model_version": version, "threshold": 0.8, "audit_share": 0}
    succeeded(client, client.post(f"/v1/projects/{project_id}/prelabels", json=body))


def import_clicks(client: TestClient, project_id: int, position: int, clicked: bool) -> None:
    """One search for "shoes" that showed "d1" at `position`, read for a minute or not."""
    shown = {"doc_id": "d1", "position": position, "clicked": clicked, "dwell_time": 60 * clicked}
    session = {"query": "shoes", "results": [shown]}
    body = {"kind": "click_logs", "annotator": "clicks", "sessions": [session]}
    succeeded(client, client.post(f"/v1/projects/{project_id}/imports", json=body))


def click_project_with_an_item(client: TestClient) -> tuple[int, int]:
    """The pair's item from an import whose rules give it no label (shown low, no click)."""
    project_id = new_project(client, ["relevant", "not_relevant"])
    import_clicks(client, project_id, position=7, clicked=False)
    [item] = client.get(f"/v1/projects/{project_id}/items").json()["items"]
    return project_id, item["id"]


def answer_by_clicks(client: TestClient, project_id: int, _item_id: int, label: str) -> None:
    """Read at the top: relevant; skipped at the top: not relevant."""
    import_clicks(client, project_id, position=1, clicked=label == "relevant")


class Caller(NamedTuple):
    annotator: str  # the name the caller writes under
    labels: tuple[str, str]  # its first answer, then the one that replaces it
    resolved_by: str  # what the item then says resolved it
    start: Callable[[TestClient], tuple[int, int]]  # a project and an unanswered item of it
    answer: Callable[[TestClient, int, int, str], None]  # the caller answers the item


CALLERS = {
    "api": Caller(
        "ann", ("positive", "negative"), "consensus", project_with_an_item, answer_through_the_api
    ),
    "prelabel": Caller(
        "model:prelabel",
        ("positive", "negative"),
        "model",
        project_with_an_item,
        answer_by_prelabel,
    ),
    "click_logs": Caller(
        "clicks",
        ("relevant", "not_relevant"),
        "user_behavior",
        click_project_with_an_item,
        answer_by_clicks,
    ),
}


def answers(
    client: TestClient, project_id: int, item_id: int, annotator: str, **params: Any
) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/projects/{project_id}/annotations",
        params={"item_id": item_id, "annotator": annotator, **params},
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.mark.parametrize("name", sorted(CALLERS))
def test_every_caller_writes_through_the_one_writer(live_client: TestClient, name: str) -> None:
    caller = CALLERS[name]
    project_id, item_id = caller.start(live_client)
    # The annotator name holds a lease on the item: closing it on an answer is the writer's.
    response = live_client.post(
        f"/v1/projects/{project_id}/batches", json={"size": 1, "annotator": caller.annotator}
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    assert [(e["item"]["id"], e["lease"]) for e in batch["items"]] == [(item_id, "live")]
    first, second = caller.labels

    caller.answer(live_client, project_id, item_id, first)
    state = live_client.get(f"/v1/projects/{project_id}/batches/{batch['id']}").json()
    assert [e["lease"] for e in state["items"]] == ["answered"]
    caller.answer(live_client, project_id, item_id, second)

    old, new = answers(live_client, project_id, item_id, caller.annotator, include_history=True)
    assert (old["label"], old["is_current"]) == (first, False)
    assert (new["label"], new["is_current"], new["replaced_at"]) == (second, True, None)
    assert old["replaced_at"] == new["created_at"]  # retired in the write of its successor
    assert answers(live_client, project_id, item_id, caller.annotator) == [new]
    item = live_client.get(f"/v1/projects/{project_id}/items/{item_id}").json()
    assert (item["resolved_label"], item["resolved_by"]) == (second, caller.resolved_by)


def test_an_unsure_prelabel_withdraws_the_earlier_auto_accept(live_client: TestClient) -> None:
    project_id, item_id = project_with_an_item(live_client)
    answer_by_prelabel(live_client, project_id, item_id, "positive")
    answer_by_prelabel(live_client, project_id, item_id, "negative", confidence=0.6)
    [withdrawn] = answers(live_client, project_id, item_id, "model:prelabel", include_history=True)
    assert (withdrawn["label"], withdrawn["is_current"]) == ("positive", False)
    assert withdrawn["replaced_at"] is not None
    item = live_client.get(f"/v1/projects/{project_id}/items/{item_id}").json()
    assert (item["status"], item["resolved_label"]) == ("needs_review", None)
    assert (item["review_reason"], item["suggested_label"]) == ("low_confidence", "negative")


def _writes_annotations(tree: ast.Module) -> list[str]:
    """Where a module builds an Annotation row, names the annotation table, or (importing
    Annotation) sets an answer's current/replaced state."""
    imports_annotation = any(
        isinstance(node, ast.ImportFrom) and any(a.name == "Annotation" for a in node.names)
        for node in ast.walk(tree)
    )
    history = ("is_current", "replaced_at") if imports_annotation else ()  # reviews have theirs
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_annotation(node.func):
            found.append(f"line {node.lineno}: Annotation(...)")
        elif not isinstance(node, ast.Attribute):
            continue
        elif node.attr == "__table__" and _is_annotation(node.value):
            found.append(f"line {node.lineno}: Annotation.__table__")
        elif isinstance(node.ctx, ast.Store) and node.attr in history:
            found.append(f"line {node.lineno}: .{node.attr} = ...")
    return found


def _is_annotation(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "Annotation"


def test_only_the_writer_writes_annotations() -> None:
    offenders = {
        str(path.relative_to(APP)): found
        for path in sorted(APP.rglob("*.py"))
        if path != WRITER and path.parent.name != "models"
        if (found := _writes_annotations(ast.parse(path.read_text())))
    }
    assert offenders == {}
    assert _writes_annotations(ast.parse(WRITER.read_text()))  # the check sees the writer's
