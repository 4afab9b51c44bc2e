from app.models.base import ItemStatus
from app.services.item_status import derive
from app.services.items import content_hash, normalize_text


def test_no_answers_is_unlabeled() -> None:
    assert derive([], annotators_per_item=1) == (ItemStatus.unlabeled, None)


def test_abstentions_do_not_count_towards_overlap() -> None:
    assert derive([(None, True), ("a", False)], annotators_per_item=2) == (
        ItemStatus.in_progress,
        None,
    )


def test_majority_wins_and_ties_need_review() -> None:
    assert derive([("a", False), ("a", False), ("b", False)], annotators_per_item=3) == (
        ItemStatus.labeled,
        "a",
    )
    assert derive([("a", False), ("b", False)], annotators_per_item=2) == (
        ItemStatus.needs_review,
        None,
    )


def test_normalization_ignores_case_width_and_spacing() -> None:
    assert normalize_text("  \uff28\uff45llo\t\nWORLD ") == "hello world"
    assert content_hash("Hello world") == content_hash("hello   WORLD")
    assert content_hash("hello world") != content_hash("hello, world")


def test_a_plurality_is_not_a_majority() -> None:
    votes = [("a", False), ("a", False), ("b", False), ("c", False)]
    assert derive(votes, annotators_per_item=4) == (ItemStatus.needs_review, None)
