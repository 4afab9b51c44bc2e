"""docs/click-logs.md's curl example runs as written against a real server."""

import re

import pytest

from tests.e2e.conftest import ROOT, LiveServer
from tests.e2e.test_readme import run_as_pasted

pytestmark = pytest.mark.e2e


def test_click_logs_example_pastes_into_a_shell(live_server: LiveServer) -> None:
    doc = (ROOT / "docs" / "click-logs.md").read_text().split("## With curl", 1)[1]
    match = re.search(r"```bash\n(.*?)```", doc, re.DOTALL)
    assert match, "docs/click-logs.md has no bash block under 'With curl'"
    first, items, annotations, second, overridden, stats = run_as_pasted(
        match.group(1), live_server
    )
    assert first["status"] == "succeeded", first
    assert first["result"]["rules"] == {
        "relevant_long_click": 2,
        "not_relevant_skipped": 1,
        "ignored_short_click": 1,
        "ignored_low_position": 1,
    }
    assert first["result"]["conflicts"] == 1
    assert len(items["items"]) == 5
    assert all(i["source"] == "user_behavior" for i in items["items"])
    assert len(annotations["items"]) == 3
    assert {a["provenance"]["job_id"] for a in annotations["items"]} == {first["id"]}
    assert second["result"]["items"]["unchanged"] == 5
    assert second["result"]["labels"] == {"created": 0, "replaced": 0, "unchanged": 3}
    assert overridden["data"]["doc_id"] == "shoe-cleaner"
    assert (overridden["resolved_label"], overridden["resolved_by"]) == ("relevant", "consensus")
    by_resolution = {s["source"]: s["count"] for s in stats["label_sources"]["by_resolution"]}
    assert (by_resolution["consensus"], by_resolution["user_behavior"]) == (1, 2)
