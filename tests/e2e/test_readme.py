"""The README's curl walkthrough runs as written against a real server."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT, LiveServer

pytestmark = pytest.mark.e2e


def walkthrough_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Walkthrough with curl", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "the README has no walkthrough block"
    return match.group(1)


def test_readme_walkthrough_pastes_into_a_shell(live_server: LiveServer) -> None:
    script = walkthrough_script()
    assert "LW=http://127.0.0.1:8000" in script and ".venv/bin/labelwise" in script
    script = script.replace("LW=http://127.0.0.1:8000", f"LW={live_server.base_url}")
    # The same CLI, from whichever environment runs the tests.
    script = script.replace(".venv/bin/labelwise", f"{sys.executable} -m app.cli")
    env = {**os.environ, "LABELWISE_DATABASE_URL": live_server.database_url}
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    ingest, streamed, alice, bob, item, stats = outputs
    assert (ingest["created"], ingest["duplicates"]) == (3, 1)
    assert streamed["created"] == 1
    assert alice["created"] == 2 and bob["created"] == 2
    assert item["status"] == "labeled" and item["resolved_label"] == "bug"
    assert stats["items_by_status"]["labeled"] == 1 and stats["items_by_status"]["in_progress"] == 1
    assert stats["cost_total"] == pytest.approx(2 * 0.30 + 2 * 0.05)


def models_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Models and prelabels with curl", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "the README has no models walkthrough block"
    return match.group(1)


def test_readme_models_walkthrough_pastes_into_a_shell(live_server: LiveServer) -> None:
    script = models_script().replace("LW=http://127.0.0.1:8000", f"LW={live_server.base_url}")
    script = script.replace(".venv/bin/labelwise", f"{sys.executable} -m app.cli")
    env = {**os.environ, "LABELWISE_DATABASE_URL": live_server.database_url}
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
    outputs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    training, version, prelabel, item = outputs
    assert training["status"] == "succeeded" and training["result"]["version"] == 1
    assert version["n_train"] == 10 and version["active"] is True
    assert prelabel["status"] == "succeeded"
    assert prelabel["result"]["considered"] == 2
    assert prelabel["result"]["auto_accepted"] + prelabel["result"]["needs_review"] == 2
    assert item["suggested_label"] == "bug"
    assert item["predictions"][0]["model_version"] == "registry:1"
