"""Implicit relevance labels from search click logs: pure rules, no database.

Every result shown in a session is an impression of one (query, doc_id) pair, of one kind:

- `long_click`: clicked, dwell time at least `min_dwell_seconds`: the user read it;
- `short_click`: clicked, but left sooner: attractive, not necessarily relevant;
- `skipped_at_top`: not clicked although shown at `max_position` or above: probably seen and
  passed over;
- `not_clicked_below`: not clicked lower down: maybe never looked at; no evidence.

A pair's impressions, across all sessions of one import, combine into one outcome:

1. `relevant_long_click`: at least one long click. One satisfied reader outweighs any skips;
   a pair that was also skipped at the top elsewhere is counted as a conflict.
2. `ignored_short_click`: no long click, but a short click: a click contradicts a skip and a
   short one is no proof of relevance, so no label.
3. `not_relevant_skipped`: never clicked, and skipped at the top at least once.
4. `ignored_low_position`: only shown below `max_position` and never clicked: no label.

Queries are compared after Unicode NFKC normalisation, whitespace collapsing and case folding
(the rule items use for duplicate texts), so "Running  Shoes" and "running shoes" are one
query; document ids are compared exactly.
"""

import hashlib
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from app.models.click_logs import NOT_RELEVANT, RELEVANT, ClickSession

ImpressionKind = Literal["long_click", "short_click", "skipped_at_top", "not_clicked_below"]
Rule = Literal[
    "relevant_long_click", "not_relevant_skipped", "ignored_short_click", "ignored_low_position"
]
IMPRESSION_KINDS: tuple[ImpressionKind, ...] = (
    "long_click",
    "short_click",
    "skipped_at_top",
    "not_clicked_below",
)
RULES: tuple[Rule, ...] = (
    "relevant_long_click",
    "not_relevant_skipped",
    "ignored_short_click",
    "ignored_low_position",
)
LABEL_OF_RULE: dict[Rule, str | None] = {
    "relevant_long_click": RELEVANT,
    "not_relevant_skipped": NOT_RELEVANT,
    "ignored_short_click": None,
    "ignored_low_position": None,
}
EXTERNAL_ID_PREFIX = "click:"


def normalize_query(query: str) -> str:
    """NFKC, whitespace collapsed, case folded (as app.services.items.normalize_text)."""
    return " ".join(unicodedata.normalize("NFKC", query).split()).casefold()


def impression_kind(
    *, position: int, clicked: bool, dwell_time: float, min_dwell_seconds: float, max_position: int
) -> ImpressionKind:
    if clicked:
        return "long_click" if dwell_time >= min_dwell_seconds else "short_click"
    return "skipped_at_top" if position <= max_position else "not_clicked_below"


@dataclass
class PairEvidence:
    """One (query, doc_id) pair: its impressions by kind, and what they add up to."""

    query: str  # normalized
    doc_id: str
    impressions: Counter[ImpressionKind] = field(default_factory=Counter)

    @property
    def rule(self) -> Rule:
        if self.impressions["long_click"]:
            return "relevant_long_click"
        if self.impressions["short_click"]:
            return "ignored_short_click"
        if self.impressions["skipped_at_top"]:
            return "not_relevant_skipped"
        return "ignored_low_position"

    @property
    def label(self) -> str | None:
        return LABEL_OF_RULE[self.rule]

    @property
    def conflict(self) -> bool:
        """A long click in one session, a skip at the top in another."""
        return bool(self.impressions["long_click"] and self.impressions["skipped_at_top"])

    @property
    def external_id(self) -> str:
        """Deterministic, so importing the same pair again updates its item."""
        pair = json.dumps([self.query, self.doc_id], ensure_ascii=False, separators=(",", ":"))
        return EXTERNAL_ID_PREFIX + hashlib.sha256(pair.encode()).hexdigest()

    @property
    def text(self) -> str:
        """What an annotator reads."""
        return f"query: {self.query}\ndocument: {self.doc_id}"

    def evidence(self) -> dict[str, int]:
        return {kind: self.impressions[kind] for kind in IMPRESSION_KINDS}


@dataclass
class ClickLogSummary:
    pairs: list[PairEvidence]  # in order of first impression
    sessions: int
    impressions: int

    def rules(self) -> dict[str, int]:
        counts = Counter(pair.rule for pair in self.pairs)
        return {rule: counts[rule] for rule in RULES}

    def impressions_by_kind(self) -> dict[str, int]:
        total: Counter[ImpressionKind] = Counter()
        for pair in self.pairs:
            total.update(pair.impressions)
        return {kind: total[kind] for kind in IMPRESSION_KINDS}

    def conflicts(self) -> int:
        return sum(pair.conflict for pair in self.pairs)


def summarize(
    sessions: Iterable[ClickSession], *, min_dwell_seconds: float, max_position: int
) -> ClickLogSummary:
    """Every (query, doc_id) pair of the sessions with its combined evidence."""
    pairs: dict[tuple[str, str], PairEvidence] = {}
    n_sessions = n_impressions = 0
    for session in sessions:
        n_sessions += 1
        query = normalize_query(session.query)
        for result in session.results:
            n_impressions += 1
            key = (query, result.doc_id)
            pair = pairs.get(key)
            if pair is None:
                pair = pairs[key] = PairEvidence(query=query, doc_id=result.doc_id)
            kind = impression_kind(
                position=result.position,
                clicked=result.clicked,
                dwell_time=result.dwell_time,
                min_dwell_seconds=min_dwell_seconds,
                max_position=max_position,
            )
            pair.impressions[kind] += 1
    return ClickLogSummary(
        pairs=list(pairs.values()), sessions=n_sessions, impressions=n_impressions
    )
