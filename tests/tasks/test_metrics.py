"""Metrics, checked against cases worked out by hand."""

import pytest

from softprompt.tasks import metrics


def test_normalisation_follows_the_official_squad_script():
    assert metrics.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert metrics.normalize_answer("an apple, a pear") == "apple pear"
    assert metrics.normalize_answer("Theory") == "theory"  # 'the' only as a word


def test_exact_match_takes_the_best_gold_answer():
    assert metrics.exact_match("Paris", ["the city of Paris", "Paris."]) == 1.0
    assert metrics.exact_match("Paris France", ["Paris"]) == 0.0


def test_f1_by_hand():
    # prediction {eiffel, tower, paris}, gold {tower, paris}: precision 2/3, recall 1, F1 0.8
    assert metrics.token_f1("Eiffel tower Paris", ["tower Paris"]) == pytest.approx(0.8)
    assert metrics.token_f1("no overlap", ["something else"]) == 0.0
    assert metrics.token_f1("a b", ["x", "b a"]) == pytest.approx(1.0)


def test_squad_averages_in_percent():
    scores = metrics.squad(["Paris", "blue sky"], [["Paris"], ["the sky", "grey"]])
    assert scores["exact_match"] == pytest.approx(50.0)
    # second: pred {blue, sky} vs gold {sky}: precision 1/2, recall 1, F1 2/3
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_accuracy_and_macro_f1_by_hand():
    pred = ["a", "a", "b", "b", "a"]
    gold = ["a", "b", "b", "b", "a"]
    assert metrics.accuracy(pred, gold) == pytest.approx(0.8)
    # class a: tp 2 fp 1 fn 0 -> 4/5; class b: tp 2 fp 0 fn 1 -> 4/5
    assert metrics.macro_f1(pred, gold) == pytest.approx(0.8)
    assert metrics.macro_f1(["a", "a"], ["a", "b"]) == pytest.approx((2 / 3 + 0) / 2)
