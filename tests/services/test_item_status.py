from typing import Any

from app.models.base import ItemStatus
from app.services.item_status import Resolution, derive, implicit_label, newly_trainable
from app.services.items import content_hash, normalize_text


def derive_pair(*args: Any, **kwargs: Any) -> tuple[object, object]:
    status, label, _, _ = derive(*args, **kwargs)
    return status, label


def derive_triple(*args: Any, **kwargs: Any) -> tuple[object, object, object]:
    status, label, resolved_by, _ = derive(*args, **kwargs)
    return status, label, resolved_by


def test_no_answers_is_unlabeled() -> None:
    assert derive_pair([], annotators_per_item=1) == (ItemStatus.unlabeled, None)


def test_abstentions_leave_too_few_labels_and_send_the_item_to_review() -> None:
    # An "I don't know" is an answer: once every allotted annotator has answered, batches stop
    # handing the item out, so with too few labels a reviewer must decide.
    assert derive_pair([(None, True), ("a", False)], annotators_per_item=2) == (
        ItemStatus.needs_review,
        None,
    )
    assert derive_pair([(None, True)], annotators_per_item=2) == (ItemStatus.in_progress, None)


def test_majority_wins_and_ties_need_review() -> None:
    assert derive_pair([("a", False), ("a", False), ("b", False)], annotators_per_item=3) == (
        ItemStatus.labeled,
        "a",
    )
    assert derive_pair([("a", False), ("b", False)], annotators_per_item=2) == (
        ItemStatus.needs_review,
        None,
    )


def test_normalization_ignores_case_width_and_spacing() -> None:
    assert normalize_text("  \uff28\uff45llo\t\nWORLD ") == "hello world"
    assert content_hash("Hello world") == content_hash("hello   WORLD")
    assert content_hash("hello world") != content_hash("hello, world")


def test_a_plurality_is_not_a_majority() -> None:
    votes = [("a", False), ("a", False), ("b", False), ("c", False)]
    assert derive_pair(votes, annotators_per_item=4) == (ItemStatus.needs_review, None)


def test_an_auto_accept_resolves_only_until_humans_settle_the_item() -> None:
    assert derive_triple([], annotators_per_item=1, model_label="a") == (
        ItemStatus.labeled,
        "a",
        "model",
    )
    assert derive_triple([("b", False)], annotators_per_item=1, model_label="a") == (
        ItemStatus.labeled,
        "b",
        "consensus",
    )
    # An audited auto-accept waits in the review queue, keeping the model's label meanwhile.
    assert derive_triple([], annotators_per_item=1, model_label="a", review_reason="audit") == (
        ItemStatus.needs_review,
        "a",
        "model",
    )
    assert derive_triple([], annotators_per_item=1, review_reason="low_confidence") == (
        ItemStatus.needs_review,
        None,
        None,
    )


def test_an_abstention_does_not_take_an_item_out_of_review() -> None:
    assert derive_triple(
        [(None, True)], annotators_per_item=1, model_label="a", review_reason="audit"
    ) == (ItemStatus.needs_review, "a", "model")
    assert derive_triple([(None, True)], annotators_per_item=1, review_reason="low_confidence") == (
        ItemStatus.needs_review,
        None,
        None,
    )


def test_a_clear_majority_is_not_blocked_by_an_abstention() -> None:
    four_agree = [("a", False)] * 4 + [(None, True)]
    assert derive_triple(four_agree, annotators_per_item=5) == (
        ItemStatus.labeled,
        "a",
        "consensus",
    )
    # But one label beside an "I don't know" is not a decision of two annotators.
    assert derive_pair([("a", False), (None, True)], annotators_per_item=2) == (
        ItemStatus.needs_review,
        None,
    )
    # Nor is 2 of 5 places, even when the other answers are all abstentions.
    two_of_five = [("a", False), ("a", False)] + [(None, True)] * 3
    assert derive_pair(two_of_five, annotators_per_item=5) == (ItemStatus.needs_review, None)
    assert derive(four_agree, annotators_per_item=5).quality == 1.0


def test_a_flagged_label_stays_but_waits_for_a_reviewer() -> None:
    votes = [("a", False)]
    assert derive_triple(votes, annotators_per_item=1, review_reason="label_issue") == (
        ItemStatus.needs_review,
        "a",
        "consensus",
    )
    # More agreeing answers do not clear the doubt; a review does.
    more = [("a", False), ("a", False)]
    assert derive_triple(more, annotators_per_item=1, review_reason="label_issue")[0] == (
        ItemStatus.needs_review
    )
    assert derive_triple(
        votes, annotators_per_item=1, review_reason="label_issue", review_label="b"
    ) == (ItemStatus.labeled, "b", "review")
    # An item still collecting answers is not held: the flag applies to settled labels.
    assert derive_triple(votes, annotators_per_item=2, review_reason="label_issue")[0] == (
        ItemStatus.in_progress
    )


def test_precedence_review_consensus_auto_accept_then_implicit_label() -> None:
    # Only an implicit label (e.g. from clicks): it resolves the item, with the least trust.
    assert derive_triple([], annotators_per_item=1, implicit="a") == (
        ItemStatus.labeled,
        "a",
        "user_behavior",
    )
    # A model's auto-accept outranks it; human consensus and a review outrank both.
    assert derive_triple([], annotators_per_item=1, model_label="b", implicit="a") == (
        ItemStatus.labeled,
        "b",
        "model",
    )
    assert derive_triple([("c", False)], annotators_per_item=1, implicit="a") == (
        ItemStatus.labeled,
        "c",
        "consensus",
    )
    assert derive_triple([("c", False)], annotators_per_item=1, implicit="a", review_label="d") == (
        ItemStatus.labeled,
        "d",
        "review",
    )
    # Like an auto-accept, it stands in while people are still answering, and a flag on it
    # sends the item to the review queue with the label kept.
    assert derive_triple([("c", False)], annotators_per_item=2, implicit="a") == (
        ItemStatus.in_progress,
        "a",
        "user_behavior",
    )
    assert derive_triple([], annotators_per_item=1, implicit="a", review_reason="label_issue") == (
        ItemStatus.needs_review,
        "a",
        "user_behavior",
    )
    # People who disagree leave the item to a reviewer, without the implicit label.
    assert derive_triple([("b", False), ("c", False)], annotators_per_item=2, implicit="a") == (
        ItemStatus.needs_review,
        None,
        None,
    )


def test_several_implicit_labels_agree_or_cancel_out() -> None:
    assert implicit_label([]) is None
    assert implicit_label(["a"]) == "a"
    assert implicit_label(["a", "b", "a"]) == "a"
    assert implicit_label(["a", "b"]) is None
    assert implicit_label([None, "b"]) == "b"


def test_a_label_is_new_to_an_item_when_it_had_none_or_another() -> None:
    """What stamps Item.labeled_at, which auto-retrain counts."""
    labeled = Resolution(ItemStatus.labeled, "a", "consensus")
    assert newly_trainable(None, None, labeled)
    assert newly_trainable("a", "model", labeled)  # a model's auto-accept taught nothing
    assert newly_trainable("b", "consensus", labeled)  # a changed label
    assert not newly_trainable("a", "consensus", Resolution(ItemStatus.labeled, "a", "review"))
    assert not newly_trainable(None, None, Resolution(ItemStatus.labeled, "a", "model"))
    assert not newly_trainable("a", "consensus", Resolution(ItemStatus.needs_review, None, None))
