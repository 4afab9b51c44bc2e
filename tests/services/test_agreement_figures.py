"""Agreement figures in sentences: readable (4 significant digits), never looking equal to
the threshold they miss."""

from app.services.agreement import said


def test_a_figure_in_a_sentence_has_four_significant_digits() -> None:
    assert said(0.743421052631579) == "0.7434"
    assert said(0.743421052631579, beside=0.6) == "0.7434"
    assert said(0.6, beside=0.6) == "0.6"


def test_a_figure_just_below_its_threshold_shows_enough_digits_to_differ() -> None:
    assert said(0.79999, beside=0.8) == "0.79999"
    assert float(said(0.7999999999, beside=0.8)) != 0.8
