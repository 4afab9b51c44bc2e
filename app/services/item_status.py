"""Derive an item's status and resolved label: review > consensus > auto-accept > implicit.

This is the one definition of an item's label; training, batches and exports read what it
writes. A reviewer's decision wins outright. Otherwise, once the item has the answers it
needs (`Project.required_annotators`), the human votes decide: a label chosen by more than
half of the non-abstaining votes and by more than half of the required answers. Without one
(a tie, a plurality such as 2 of 4, or "I don't know"s leaving a single vote of two) the
item goes to needs_review rather than silently picking the first label. A
model's auto-accepted prelabel resolves an item only while no human has settled it, and never
counts as a vote; below it, an implicit label inferred from user behaviour (clicks, source
`user_behavior`) does the same with less trust. Votes are the sources in `VOTE_SOURCES`. A
label a label-issue report flagged stays, but the item waits in the review queue until a
reviewer decides. Projects whose consensus_method is dawid_skene or crowdlab
start from this majority and are then re-resolved project-wide by the consensus job
(services/consensus.py).
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Select
from sqlalchemy import func as sa_func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from app.db import id_in, sync_loaded, update_rows
from app.models.annotation import Annotation
from app.models.base import (
    PILOT_MIN_ANNOTATORS,
    TRAINABLE_RESOLUTIONS,
    VOTE_SOURCES,
    AnnotationSource,
    ItemStatus,
    Phase,
    utcnow,
)
from app.models.item import Item
from app.models.project import Project
from app.models.review import Review

CHUNK = 500
# A production prediction sampled for review (services/production.py): its model's label is
# the suggestion, and the reviewer's decision measures the production model.
PRODUCTION_REASONS = {"production_low_confidence", "production_random"}
# Reasons that keep an item in the review queue until a human answers it.
REVIEW_REASONS = {"low_confidence", "audit", *PRODUCTION_REASONS}
# A label a label-issue report doubts: the item keeps it, but stays in the review queue until
# a reviewer decides (new answers alone do not clear the doubt).
LABEL_ISSUE = "label_issue"
FLAG_REASONS = {LABEL_ISSUE}


class Resolution(NamedTuple):
    status: ItemStatus
    label: str | None
    resolved_by: str | None
    quality: float | None = None  # the winning label's share of the votes


class Fallback(NamedTuple):
    """The label an item has while no vote settles it, and who gave it."""

    label: str
    resolved_by: str  # "model" or "user_behavior"


def fallback(model_label: str | None, implicit_label: str | None) -> Fallback | None:
    """A model's auto-accept outranks an implicit label from user behaviour."""
    if model_label is not None:
        return Fallback(model_label, "model")
    if implicit_label is not None:
        return Fallback(implicit_label, AnnotationSource.user_behavior.value)
    return None


def implicit_label(labels: Iterable[str | None]) -> str | None:
    """One label from an item's current implicit labels (one per log source): the most common
    one when it leads strictly, none on a tie."""
    counts = Counter(label for label in labels if label is not None).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def derive(
    votes: Iterable[tuple[str | None, bool]],
    *,
    annotators_per_item: int,
    model_label: str | None = None,
    review_reason: str | None = None,
    review_label: str | None = None,
    implicit: str | None = None,
) -> Resolution:
    """Status and resolved label from the (label, abstain) pairs of current human annotations,
    the current auto-accepted model label, if any, why the item was sent to review, the
    current review's label, if any, and the implicit label from user behaviour, if any.
    `annotators_per_item` is the project's required count."""
    answers = list(votes)
    labels = Counter(label for label, abstain in answers if not abstain and label is not None)
    quality = labels.most_common(1)[0][1] / labels.total() if labels else None
    if review_label is not None:
        return Resolution(ItemStatus.labeled, review_label, "review", quality)
    return held_for_review(
        _by_votes(
            answers,
            labels,
            quality,
            annotators_per_item,
            fallback(model_label, implicit),
            review_reason,
        ),
        review_reason,
    )


def held_for_review(resolution: Resolution, review_reason: str | None) -> Resolution:
    """A labeled item whose label a report flagged waits for a reviewer, label kept."""
    if review_reason in FLAG_REASONS and resolution.status == ItemStatus.labeled:
        return resolution._replace(status=ItemStatus.needs_review)
    return resolution


def clear_flag(item: Item) -> None:
    """Take a label-issue flag off an item (a review settled it, or a report no longer doubts
    it); the caller re-derives its status."""
    if item.review_reason in FLAG_REASONS:
        item.review_reason = item.review_priority = None
        item.suggested_label = item.suggestion_confidence = None


def hides_suggestion(item: Item) -> bool:
    """Annotators label these blind. A doubted label's suggestion tells an annotator what the
    hidden label is not (in a two-label project, what it is); a production sample's suggestion
    is the production model's label, and showing it would anchor the very decision that
    measures that model."""
    return item.review_reason in FLAG_REASONS or item.review_reason in PRODUCTION_REASONS


def _by_votes(
    answers: list[tuple[str | None, bool]],
    labels: Counter[str],
    quality: float | None,
    annotators_per_item: int,
    standby: Fallback | None,
    review_reason: str | None,
) -> Resolution:
    if answers and max(labels.total(), len(answers)) >= annotators_per_item:
        # Every place is answered. A label wins with more than half of the votes, and with
        # more than half of the required answers, so "I don't know"s cannot make one vote
        # a decision (1 label + 1 abstention of 2) but do not block a clear one (4 of 5).
        if labels:
            label, top = labels.most_common(1)[0]
            if 2 * top > labels.total() and 2 * top > annotators_per_item:
                return Resolution(ItemStatus.labeled, label, "consensus", quality)
        return unsettled(
            standby=standby,
            n_labels=labels.total(),
            required=annotators_per_item,
            quality=quality,
        )
    waiting_for_review = review_reason in REVIEW_REASONS
    if waiting_for_review and not labels:
        status = ItemStatus.needs_review  # only "I don't know" so far: still needs a reviewer
    elif answers:
        status = ItemStatus.in_progress
    elif standby is not None:
        status = ItemStatus.labeled
    else:
        status = ItemStatus.unlabeled
    if standby is not None:
        return Resolution(status, standby.label, standby.resolved_by, quality)
    return Resolution(status, None, None, quality)


def unsettled(
    *, standby: Fallback | None, n_labels: int, required: int, quality: float | None
) -> Resolution:
    """An item with its answers but no decision (a tie, a plurality, too few labels): batches
    will not hand it out again, so a reviewer decides. When "I don't know"s left fewer labels
    than required, an auto-accepted model label (else an implicit one) stays meanwhile; when
    humans disagreed, it does not. The consensus job uses the same rule for items its method
    leaves undecided."""
    if standby is not None and n_labels < required:
        return Resolution(ItemStatus.needs_review, standby.label, standby.resolved_by, quality)
    return Resolution(ItemStatus.needs_review, None, None, quality)


def newly_trainable(old_label: str | None, old_by: str | None, new: Resolution) -> bool:
    """Whether a change gives an item a label a model learns from that it did not have: a
    trainable label where there was none, or a different one. Such a change stamps
    `Item.labeled_at`, which auto-retrain counts; a reviewer confirming the consensus label
    does not."""
    return new.resolved_by in TRAINABLE_RESOLUTIONS and (
        old_by not in TRAINABLE_RESOLUTIONS or old_label != new.label
    )


ITEM_TABLE = Item.__table__  # type: ignore[attr-defined]
# The item columns a Resolution sets, in its field order.
DERIVED = ("status", "resolved_label", "resolved_by", "consensus_quality")


class Answer(NamedTuple):
    """A current annotation as `derive` weighs it."""

    label: str | None
    abstain: bool
    source: str


class NewLabel(NamedTuple):
    """An item that became labeled, or changed label, in a `resolve`."""

    id: int
    label: str
    resolved_by: str | None


class ItemState(NamedTuple):
    """What deriving an item's label needs besides its answers, and what it stored last
    (the columns of `state_select`, in order)."""

    id: int
    review_reason: str | None
    review_label: str | None  # the current review's
    status: str
    resolved_label: str | None
    resolved_by: str | None
    consensus_quality: float | None


def state_select(session: Session, item_ids: Sequence[int]) -> Select[Any]:
    """The `ItemState` rows of these items: one read, the current review's label included."""
    review_label = (
        sa_select(col(Review.label))
        .where(col(Review.item_id) == col(Item.id), col(Review.is_current))
        .scalar_subquery()
    )
    return sa_select(
        col(Item.id),
        col(Item.review_reason),
        review_label,
        *(col(getattr(Item, name)) for name in DERIVED),
    ).where(id_in(session, col(Item.id), item_ids))


def resolve(
    session: Session,
    *,
    project: Project,
    states: Iterable[ItemState],
    answers: Mapping[int, Sequence[Answer]],
) -> list[NewLabel]:
    """Derive each item's status and label from its current answers and store the ones that
    changed, in one UPDATE (`update_rows`); objects of those items the session holds get the
    new values too. Returns the items that became labeled or whose label changed (what an
    `items.labeled` event reports)."""
    now = utcnow()
    changes: list[tuple[int, dict[str, Any]]] = []
    labeled: list[NewLabel] = []
    for state in states:
        votes, model_label, implicit = [], None, []
        for answer in answers.get(state.id, ()):
            if answer.source in VOTE_SOURCES:
                votes.append((answer.label, answer.abstain))
            elif answer.source == AnnotationSource.model:
                model_label = answer.label
            elif answer.source == AnnotationSource.user_behavior:
                implicit.append(answer.label)
        resolution = derive(
            votes,
            annotators_per_item=project.required_annotators,
            model_label=model_label,
            review_reason=state.review_reason,
            review_label=state.review_label,
            implicit=implicit_label(implicit),
        )
        if state[3:] != tuple(resolution):
            values = {**dict(zip(DERIVED, resolution, strict=True)), "updated_at": now}
            if newly_trainable(state.resolved_label, state.resolved_by, resolution):
                values["labeled_at"] = now
            changes.append((state.id, values))
            if _newly_labeled(state, resolution) and resolution.label is not None:
                labeled.append(NewLabel(state.id, resolution.label, resolution.resolved_by))
    # update_rows wants the same columns in every row: the rows that set labeled_at go apart.
    for stamped in (True, False):
        update_rows(
            session,
            ITEM_TABLE,
            [
                {"id": id_, **values}
                for id_, values in changes
                if ("labeled_at" in values) is stamped
            ],
        )
    sync_loaded(session, Item, changes)
    return labeled


def _newly_labeled(state: ItemState, resolution: Resolution) -> bool:
    """The item is labeled now, and was not, or had another label."""
    return resolution.status == ItemStatus.labeled and (
        state.status != ItemStatus.labeled or state.resolved_label != resolution.label
    )


def refresh_items(session: Session, *, project: Project, item_ids: Iterable[int]) -> list[NewLabel]:
    """Recompute status and resolved label of the given items (never commits): per chunk,
    their current answers and their states in two reads, then `resolve`. Returns the items
    that became labeled or changed label."""
    ids = sorted(set(item_ids))
    labeled: list[NewLabel] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        answers: dict[int, list[Answer]] = defaultdict(list)
        rows = session.execute(
            sa_select(
                col(Annotation.item_id),
                col(Annotation.label),
                col(Annotation.abstain),
                col(Annotation.source),
            ).where(id_in(session, col(Annotation.item_id), chunk), col(Annotation.is_current))
        )
        for item_id, label, abstain, source in rows:
            answers[item_id].append(Answer(label, abstain, source))
        states = [ItemState(*row) for row in session.execute(state_select(session, chunk))]
        labeled += resolve(session, project=project, states=states, answers=answers)
    return labeled


def refresh_project(session: Session, *, project: Project) -> None:
    """Recompute every annotated item of a project (after the required answers change)."""
    annotated = session.exec(
        select(Annotation.item_id)
        .where(col(Annotation.project_id) == project.id, col(Annotation.is_current))
        .distinct()
    )
    reviewed = session.exec(
        select(Review.item_id).where(col(Review.project_id) == project.id, col(Review.is_current))
    )
    refresh_items(session, project=project, item_ids={*annotated, *reviewed})


def waiting_for_answers(session: Session, *, project: Project) -> tuple[str, dict[str, Any]]:
    """Why a project has fewer resolved labels than answered items, for a 409 that names no
    label: a sentence (empty when no item waits for more human answers) and its figures.

    An item with some human answers but fewer than the project requires stays in_progress,
    without a label; in the pilot phase every item requires at least PILOT_MIN_ANNOTATORS."""
    waiting = session.exec(
        select(sa_func.count())
        .select_from(Item)
        .where(col(Item.project_id) == project.id, col(Item.status) == ItemStatus.in_progress)
    ).one()
    required = project.required_annotators
    facts: dict[str, Any] = {
        "items_waiting_for_answers": waiting,
        "answers_required": required,
        "phase": project.phase,
    }
    if not waiting:
        return "", facts
    items = "1 item has" if waiting == 1 else f"{waiting} items have"
    sentence = (
        f" {items} human answers but fewer than the {required} each item needs, so no label yet"
    )
    if project.phase == Phase.pilot and project.annotators_per_item < required:
        sentence += (
            f" (in the pilot phase every item needs {PILOT_MIN_ANNOTATORS} answers, so "
            "agreement can be measured). Answer them (POST /v1/projects/"
            f"{project.id}/batches gives an annotator the items to answer), or move the project "
            f'to production (PATCH /v1/projects/{project.id} with "phase": "production"; while '
            'agreement is below its threshold, add "force": true and a "reason"), where '
            + (
                "one answer settles an item."
                if project.annotators_per_item == 1
                else f"{project.annotators_per_item} answers settle an item."
            )
        )
    else:
        sentence += (
            f" (annotators_per_item is {project.annotators_per_item}). Answer them (POST "
            f"/v1/projects/{project.id}/batches gives an annotator the items to answer), or "
            "lower annotators_per_item."
        )
    return sentence, facts
