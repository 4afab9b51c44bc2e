"""The README's curl walkthrough runs as written against a real server."""

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, LiveServer

pytestmark = pytest.mark.e2e


def readme_block(heading: str) -> str:
    """The first bash block under a README heading."""
    section = (ROOT / "README.md").read_text().split(f"## {heading}", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, f"the README has no bash block under {heading!r}"
    return match.group(1)


def run_as_pasted(script: str, server: LiveServer) -> list[dict[str, Any]]:
    """Run a README block in bash against the live server; return its JSON output lines."""
    output = paste(script, server)
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def paste(script: str, server: LiveServer) -> str:
    """Run a README block in bash against the live server; return what it printed."""
    assert "LW=http://127.0.0.1:8000" in script and ".venv/bin/labelwise" in script
    script = script.replace("LW=http://127.0.0.1:8000", f"LW={server.base_url}")
    # The same CLI, from whichever environment runs the tests.
    script = script.replace(".venv/bin/labelwise", f"{sys.executable} -m app.cli")
    env = {**os.environ, "LABELWISE_DATABASE_URL": server.database_url}
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_walkthrough_pastes_into_a_shell(live_server: LiveServer) -> None:
    outputs = run_as_pasted(readme_block("Walkthrough with curl"), live_server)
    ingest, streamed, alice, bob, item, stats, agreement, gate = outputs
    assert (ingest["created"], ingest["duplicates"]) == (3, 1)
    assert streamed["created"] == 1
    assert alice["created"] == 2 and bob["created"] == 2
    assert item["status"] == "labeled" and item["resolved_label"] == "bug"
    # ID2 got "feature" and an "I don't know" from its two annotators: a reviewer decides.
    assert (
        stats["items_by_status"]["labeled"] == 1 and stats["items_by_status"]["needs_review"] == 1
    )
    assert stats["cost_total"] == pytest.approx(2 * 0.30 + 2 * 0.05)
    # One shared item with one label in use: agreement cannot be measured, so the pilot stays.
    assert agreement["n_pairable_items"] == 1 and agreement["krippendorff_alpha"] is None
    assert agreement["interpretation"]["band"] == "not_measurable"
    assert gate["status"] == 409 and gate["type"] == "/problems/agreement-below-threshold"


def test_readme_models_walkthrough_pastes_into_a_shell(live_server: LiveServer) -> None:
    outputs = run_as_pasted(readme_block("Models and prelabels with curl"), live_server)
    training, version, prelabel, item = outputs
    assert training["status"] == "succeeded" and training["result"]["version"] == 1
    assert version["n_train"] == 10 and version["active"] is True
    assert prelabel["status"] == "succeeded"
    assert prelabel["result"]["considered"] == 2
    assert prelabel["result"]["auto_accepted"] + prelabel["result"]["needs_review"] == 2
    assert item["suggested_label"] == "bug"
    assert item["predictions"][0]["model_version"] == "registry:1"


def test_readme_batches_walkthrough_pastes_into_a_shell(live_server: LiveServer) -> None:
    outputs = run_as_pasted(readme_block("Batches and active learning with curl"), live_server)
    alice, bob, skipped, released, report = outputs
    assert (alice["strategy"], alice["model_version"]) == ("cold_start", None)
    assert [lease for _, _, lease, _ in alice["items"]] == ["live"] * 3
    started = sorted(item_id for item_id, *_ in alice["items"])
    # Bob gets Alice's three first (in_progress, oldest first), then one fresh item.
    assert [item_id for item_id, *_ in bob["items"][:3]] == started
    assert [status for _, status, _, _ in bob["items"]] == ["in_progress"] * 3 + ["unlabeled"]
    assert [lease for _, _, lease, _ in skipped["items"]] == ["skipped", "live", "live", "live"]
    assert [lease for _, _, lease, _ in released["items"]] == ["skipped"] + ["released"] * 3
    assert [(s["strategy"], s["batches"], s["items"]) for s in report["strategies"]] == [
        ("cold_start", 2, 7)
    ]
    assert report["exploration"] == [] and report["simulation"] is None


def test_readme_cost_walkthrough_pastes_into_a_shell(live_server: LiveServer) -> None:
    [report] = run_as_pasted(readme_block("Cost"), live_server)
    assert [(t["tier"], t["answers"], t["spend"]) for t in report["tiers"]] == [
        ("crowd", 3, 0.15),
        ("in_house", 3, 0.9),
    ]
    assert (report["total_spend"], report["usable_labels"]) == (1.05, 1)
    assert report["cost_per_usable_label"] == 1.05
    assert report["answers"]["useful"] == {"answers": 2, "spend": 0.35}
    assert report["answers"]["abstains"] == {"answers": 1, "spend": 0.05}
    assert report["answers"]["disagreement"] == {"answers": 3, "spend": 0.65}
    assert (report["wasted_answers"], report["wasted_spend"]) == (4, 0.7)
    assert report["active_learning"]["savings"] is None and report["warnings"] == []
