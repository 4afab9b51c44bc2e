"""The click-log rules on small hand-made sessions: thresholds, combining repeated pairs."""

from typing import Any

import pytest
from pydantic import ValidationError

from app.models.click_logs import ClickLogsImport, ClickSession
from app.services.items import normalize_text
from app.sources.click_logs import normalize_query, summarize


def session(query: str, *results: tuple[str, int, bool, float]) -> ClickSession:
    return ClickSession.model_validate(
        {
            "query": query,
            "results": [
                {"doc_id": d, "position": p, "clicked": c, "dwell_time": t}
                for d, p, c, t in results
            ],
        }
    )


def outcomes(sessions: list[ClickSession], **thresholds: Any) -> dict[tuple[str, str], str]:
    thresholds = {"min_dwell_seconds": 30.0, "max_position": 3, **thresholds}
    summary = summarize(sessions, **thresholds)
    return {(p.query, p.doc_id): p.rule for p in summary.pairs}


class TestOneSession:
    def test_each_rule_and_its_label(self) -> None:
        logs = [
            session(
                "shoes",
                ("long", 1, True, 45.0),
                ("skipped", 2, False, 0.0),
                ("short", 3, True, 4.0),
                ("low", 4, False, 0.0),
                ("exactly", 5, True, 30.0),  # dwell equal to the threshold is long
            )
        ]
        summary = summarize(logs, min_dwell_seconds=30.0, max_position=3)
        by_doc = {p.doc_id: p for p in summary.pairs}
        assert {d: (p.rule, p.label) for d, p in by_doc.items()} == {
            "long": ("relevant_long_click", "relevant"),
            "skipped": ("not_relevant_skipped", "not_relevant"),
            "short": ("ignored_short_click", None),
            "low": ("ignored_low_position", None),
            "exactly": ("relevant_long_click", "relevant"),
        }
        assert summary.rules() == {
            "relevant_long_click": 2,
            "not_relevant_skipped": 1,
            "ignored_short_click": 1,
            "ignored_low_position": 1,
        }
        assert summary.impressions_by_kind() == {
            "long_click": 2,
            "short_click": 1,
            "skipped_at_top": 1,
            "not_clicked_below": 1,
        }
        assert (summary.sessions, summary.impressions, summary.conflicts()) == (1, 5, 0)

    def test_thresholds_change_the_outcome(self) -> None:
        logs = [session("q", ("a", 1, True, 20.0), ("b", 5, False, 0.0))]
        assert outcomes(logs) == {
            ("q", "a"): "ignored_short_click",
            ("q", "b"): "ignored_low_position",
        }
        assert outcomes(logs, min_dwell_seconds=10.0, max_position=5) == {
            ("q", "a"): "relevant_long_click",
            ("q", "b"): "not_relevant_skipped",
        }
        # max_position 0 turns the skip rule off.
        assert outcomes([session("q", ("b", 1, False, 0.0))], max_position=0) == {
            ("q", "b"): "ignored_low_position"
        }

    def test_a_dwell_time_without_a_click_is_ignored(self) -> None:
        assert outcomes([session("q", ("a", 1, False, 500.0))]) == {
            ("q", "a"): "not_relevant_skipped"
        }


class TestRepeatedPairs:
    def test_one_long_click_outweighs_skips_and_is_a_conflict(self) -> None:
        logs = [
            session("q", ("a", 1, False, 0.0)),
            session("q", ("a", 2, True, 60.0)),
            session("q", ("a", 1, False, 0.0)),
        ]
        summary = summarize(logs, min_dwell_seconds=30.0, max_position=3)
        (pair,) = summary.pairs
        assert (pair.rule, pair.label, pair.conflict) == ("relevant_long_click", "relevant", True)
        assert pair.evidence() == {
            "long_click": 1,
            "short_click": 0,
            "skipped_at_top": 2,
            "not_clicked_below": 0,
        }
        assert summary.conflicts() == 1

    def test_a_short_click_blocks_not_relevant(self) -> None:
        logs = [session("q", ("a", 1, False, 0.0)), session("q", ("a", 1, True, 2.0))]
        assert outcomes(logs) == {("q", "a"): "ignored_short_click"}

    def test_skipped_at_the_top_once_is_enough_when_never_clicked(self) -> None:
        logs = [session("q", ("a", 9, False, 0.0)), session("q", ("a", 2, False, 0.0))]
        assert outcomes(logs) == {("q", "a"): "not_relevant_skipped"}

    def test_queries_match_after_normalisation_doc_ids_exactly(self) -> None:
        logs = [
            session("Running  Shoes", ("A1", 1, True, 40.0)),
            session("running shoes", ("A1", 3, False, 0.0), ("a1", 2, False, 0.0)),
        ]
        summary = summarize(logs, min_dwell_seconds=30.0, max_position=3)
        assert [(p.query, p.doc_id, p.rule) for p in summary.pairs] == [
            ("running shoes", "A1", "relevant_long_click"),
            ("running shoes", "a1", "not_relevant_skipped"),
        ]
        first, second = summary.pairs
        assert first.external_id != second.external_id
        assert first.external_id.startswith("click:") and len(first.external_id) == 70
        assert first.text == "query: running shoes\ndocument: A1"
        # The same pair in another import gets the same id (re-imports update, not duplicate).
        again = summarize(
            [session(" RUNNING shoes ", ("A1", 1, False, 0.0))],
            min_dwell_seconds=30.0,
            max_position=3,
        )
        assert again.pairs[0].external_id == first.external_id

    def test_query_normalisation_is_the_items_duplicate_rule(self) -> None:
        for text in ("  \uff28\uff45llo\t\nWORLD ", "Straße", "a  b"):
            assert normalize_query(text) == normalize_text(text)


class TestRequestLimits:
    def base(self, **fields: Any) -> dict[str, Any]:
        result = {"doc_id": "d", "position": 1, "clicked": True, "dwell_time": 3.0}
        return {
            "kind": "click_logs",
            "sessions": [{"query": "q", "results": [result]}],
            **fields,
        }

    def test_defaults(self) -> None:
        request = ClickLogsImport.model_validate(self.base())
        assert (request.min_dwell_seconds, request.max_position, request.annotator) == (
            30.0,
            3,
            "user_behavior",
        )

    @pytest.mark.parametrize(
        ("result", "field"),
        [
            ({"position": 0}, "position"),
            ({"dwell_time": float("nan")}, "dwell_time"),
            ({"dwell_time": float("inf")}, "dwell_time"),
            ({"dwell_time": -1.0}, "dwell_time"),
            ({"doc_id": ""}, "doc_id"),
            ({"doc_id": "   "}, "doc_id"),
            ({"doc_id": "a\x00b"}, "doc_id"),
        ],
    )
    def test_bad_results(self, result: dict[str, Any], field: str) -> None:
        body = self.base()
        body["sessions"][0]["results"][0].update(result)
        with pytest.raises(ValidationError) as raised:
            ClickLogsImport.model_validate(body)
        assert raised.value.errors()[0]["loc"][-1] == field

    def test_bad_sessions_and_thresholds(self) -> None:
        too_many = [{"query": "q", "results": []}] * 10_001
        long_list = [{"doc_id": "d", "position": 1, "clicked": False}] * 1_001
        for body in (
            self.base(sessions=[]),
            self.base(sessions=too_many),
            self.base(sessions=[{"query": "q", "results": long_list}]),
            self.base(sessions=[{"query": " ", "results": []}]),
            self.base(min_dwell_seconds=-1),
            self.base(max_position=-1),
            self.base(annotator="no spaces allowed"),
            self.base(kind="file"),
            self.base(extra=1),
        ):
            with pytest.raises(ValidationError):
                ClickLogsImport.model_validate(body)
