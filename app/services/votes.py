"""A project's current human answers as integer-coded arrays, the input of `ml.agreement` and
`ml.consensus`, read where the data is: one aggregate row per annotator.

Reading 500,000 answers as Python rows costs seconds (bench/agreement.py measured 1.5-1.9 s
on SQLite, three quarters of the whole report). Instead SQL codes each answer as one integer,
item_id * (labels + 1) + (label code + 1) with 0 for "I don't know", and concatenates them per
annotator (group_concat on SQLite, string_agg on PostgreSQL); numpy parses the strings.
"""

from dataclasses import dataclass

import numpy as np
from sqlalchemy import BigInteger, String, case, cast, func, literal
from sqlmodel import Session, col, select

from app.ml.agreement import Votes
from app.models.annotation import Annotation
from app.models.base import VOTE_SOURCES
from app.models.project import Project


@dataclass(frozen=True)
class ProjectVotes:
    """Labels as `Votes`, abstentions beside them, and the keys to map codes back."""

    votes: Votes
    item_ids: np.ndarray  # code -> item id, ascending
    annotators: list[str]  # code -> annotator name, sorted
    labels: list[str]  # code -> label, in the project's order
    abstain_item: np.ndarray  # item code of each "I don't know"
    abstain_annotator: np.ndarray  # annotator code of each "I don't know"

    @property
    def n_answers(self) -> int:
        return len(self.votes.item) + len(self.abstain_item)


def load_votes(session: Session, *, project: Project) -> ProjectVotes:
    """Every current vote (`VOTE_SOURCES`: a model's auto-accept or an implicit label from
    user behaviour never counts as one).
    A label the project no longer has cannot occur: removing a label in use is refused."""
    labels = list(project.labels)
    width = len(labels) + 1
    label_code = case(
        (col(Annotation.abstain), 0),
        *((col(Annotation.label) == label, code + 1) for code, label in enumerate(labels)),
        else_=0,
    )
    answer = cast(col(Annotation.item_id), BigInteger) * literal(width) + label_code
    rows = session.exec(
        select(
            col(Annotation.annotator),
            func.aggregate_strings(cast(answer, String), ","),
        )
        .where(
            col(Annotation.project_id) == project.id,
            col(Annotation.is_current),
            col(Annotation.source).in_(VOTE_SOURCES),
        )
        .group_by(col(Annotation.annotator))
    ).all()
    # Sorted here, not by the database: collations differ between SQLite and PostgreSQL.
    rows = sorted(rows, key=lambda row: row[0])
    annotators = [name for name, _ in rows]
    per_annotator = [np.array(joined.split(","), dtype=np.int64) for _, joined in rows]
    answers = np.concatenate(per_annotator) if per_annotator else np.zeros(0, dtype=np.int64)
    annotator_codes = np.repeat(
        np.arange(len(annotators), dtype=np.int64), [len(a) for a in per_annotator]
    )
    raw_items, label_codes = np.divmod(answers, width)
    item_ids, item_codes = np.unique(raw_items, return_inverse=True)
    item_codes = item_codes.astype(np.int64)
    voted = label_codes > 0
    votes = Votes(
        item=item_codes[voted],
        annotator=annotator_codes[voted],
        label=label_codes[voted] - 1,
        n_items=len(item_ids),
        n_annotators=len(annotators),
        n_labels=len(labels),
    )
    return ProjectVotes(
        votes=votes,
        item_ids=item_ids,
        annotators=annotators,
        labels=labels,
        abstain_item=item_codes[~voted],
        abstain_annotator=annotator_codes[~voted],
    )
