"""A project's current human answers as integer-coded arrays, the input of `ml.agreement` and
`ml.consensus`: one projection query of plain tuples, no ORM objects."""

from dataclasses import dataclass

import numpy as np
from sqlmodel import Session, col, select

from app.ml.agreement import Votes
from app.models.annotation import Annotation
from app.models.base import AnnotationSource
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
    """Every current answer that is not a model's (model-made labels never count as votes)."""
    rows = session.exec(
        select(Annotation.item_id, Annotation.annotator, Annotation.label).where(
            col(Annotation.project_id) == project.id,
            col(Annotation.is_current),
            col(Annotation.source) != AnnotationSource.model,
        )
    ).all()
    labels = list(project.labels)
    label_code = {label: code for code, label in enumerate(labels)}
    if rows:
        raw_items, raw_annotators, raw_labels = zip(*rows, strict=True)
    else:
        raw_items, raw_annotators, raw_labels = (), (), ()
    item_ids, item_codes = np.unique(
        np.fromiter(raw_items, np.int64, len(rows)), return_inverse=True
    )
    annotators = sorted(set(raw_annotators))
    annotator_code = {name: code for code, name in enumerate(annotators)}
    annotator_codes = np.fromiter(
        (annotator_code[name] for name in raw_annotators), np.int64, len(rows)
    )
    # An abstention has no label: code -1 until it is split off below.
    label_codes = np.fromiter(
        (-1 if label is None else label_code.get(label, -1) for label in raw_labels),
        np.int64,
        len(rows),
    )
    voted = label_codes >= 0
    votes = Votes(
        item=item_codes[voted].astype(np.int64),
        annotator=annotator_codes[voted],
        label=label_codes[voted],
        n_items=len(item_ids),
        n_annotators=len(annotators),
        n_labels=len(labels),
    )
    return ProjectVotes(
        votes=votes,
        item_ids=item_ids,
        annotators=annotators,
        labels=labels,
        abstain_item=item_codes[~voted].astype(np.int64),
        abstain_annotator=annotator_codes[~voted],
    )
