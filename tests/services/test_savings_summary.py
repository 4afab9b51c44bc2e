"""The one-sentence verdict of an active-learning replay."""

from app.tasks.simulation import savings_summary


def test_names_every_strategy_tied_for_the_best_saving() -> None:
    text = savings_summary(
        {"random": 1600, "margin": 1200, "entropy": 1200, "least_confidence": 1300},
        {"random": 1.0, "margin": 0.75, "entropy": 0.75, "least_confidence": 0.8125},
        at_labels=1600,
        target=0.7294,
    )
    assert text == (
        "margin and entropy reached random's accuracy at 1600 labels (0.729) with 1200 labels: "
        "25% fewer labels."
    )


def test_says_so_when_nothing_beats_or_reaches_random() -> None:
    slower = savings_summary(
        {"random": 800, "margin": 900}, {"random": 1.0, "margin": 1.125}, at_labels=800, target=0.5
    )
    assert slower.startswith("No strategy beat random: the best (margin) needed 900 labels")
    never = savings_summary(
        {"random": 800, "margin": None}, {"random": 1.0, "margin": None}, at_labels=800, target=0.5
    )
    assert "does not pay off" in never
    assert savings_summary({}, {}, at_labels=800, target=None).startswith("The baseline has no")
