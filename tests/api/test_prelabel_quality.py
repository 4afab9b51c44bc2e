"""The acceptance run on real data: 2,000 human labels from the shared Debian dataset,
a trained version, and target-precision prelabels over the rest, checked against truth."""

import random
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import wait_for_job

N_HUMAN = 2_000


@pytest.fixture(scope="module")
def debian_rows(debian_rows_in_file_order: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = list(debian_rows_in_file_order)
    random.Random(7).shuffle(rows)
    return rows


def test_target_precision_auto_accepts_are_right(
    live_client: TestClient, debian_rows: list[dict[str, Any]]
) -> None:
    labels = sorted({r["label"] for r in debian_rows})
    project = live_client.post(
        "/v1/projects",
        json={"name": f"debian-{uuid.uuid4().hex[:6]}", "labels": labels, "phase": "production"},
    ).json()
    base = f"/v1/projects/{project['id']}"
    items = [{"external_id": r["id"], "text": r["text"]} for r in debian_rows]
    truth: dict[int, str] = {}  # the dataset's own label of each stored (non-duplicate) item
    for start in range(0, len(items), 5_000):
        report = live_client.post(f"{base}/items", json=items[start : start + 5_000]).json()
        for result, row in zip(report["results"], debian_rows[start:], strict=False):
            if result["status"] == "created":
                truth[result["id"]] = row["label"]
    ids = list(truth)
    human = [{"item_id": i, "label": truth[i]} for i in ids[:N_HUMAN]]
    assert live_client.post(f"{base}/annotations", json=human).status_code == 200

    clock = time.perf_counter()
    training = live_client.post(f"{base}/models", json={"activate": True})
    assert training.status_code == 202
    trained = wait_for_job(live_client, training.json(), timeout=600)
    assert trained["status"] == "succeeded", trained
    print(f"training job: {time.perf_counter() - clock:.1f}s")
    version = live_client.get(f"{base}/models/1").json()
    assert version["n_train"] == N_HUMAN
    assert version["metrics"]["accuracy"] > 0.6
    wait_for_job(live_client, {"id": trained["result"]["scoring_job_id"]}, timeout=600)

    print(f"+ scoring: {time.perf_counter() - clock:.1f}s")
    response = live_client.post(f"{base}/prelabels", json={"target_precision": 0.95})
    result = wait_for_job(live_client, response.json(), timeout=600)["result"]
    assert result["considered"] == len(ids) - N_HUMAN
    print(f"+ prelabels: {time.perf_counter() - clock:.1f}s")
    accepted = []
    cursor = None
    while True:
        page = live_client.get(
            f"{base}/annotations",
            params={"source": "model", "limit": 1000, **({"cursor": cursor} if cursor else {})},
        ).json()
        accepted.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(accepted) == result["auto_accepted"] > 0.15 * result["considered"]
    correct = sum(1 for a in accepted if a["label"] == truth[a["item_id"]])
    precision = correct / len(accepted)
    print(
        f"auto-accepted {len(accepted)}/{result['considered']}, precision {precision:.4f}, "
        f"expected {result['expected_precision']}"
    )
    assert precision >= 0.93
    estimate = result["expected_precision"]
    assert estimate["ci_low"] <= estimate["estimate"] <= estimate["ci_high"]
