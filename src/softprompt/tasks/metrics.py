"""Metrics: accuracy, macro-F1, binary F1, exact match over groups (MultiRC), and SQuAD v1.1 exact match and F1 with the
official answer normalisation (also ReCoRD's and MRQA's)."""

import collections
import re
import string


def accuracy(predictions: list, references: list) -> float:
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / max(len(references), 1)


def macro_f1(predictions: list, references: list) -> float:
    """Mean over the classes that occur in the references or predictions of each class's F1."""
    classes = sorted(set(references) | set(predictions), key=str)
    scores = []
    for c in classes:
        tp = sum(p == c and r == c for p, r in zip(predictions, references, strict=True))
        fp = sum(p == c and r != c for p, r in zip(predictions, references, strict=True))
        fn = sum(p != c and r == c for p, r in zip(predictions, references, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / max(len(scores), 1)


def binary_f1(predictions: list, references: list, positive) -> float:
    """F1 of the class `positive` (MultiRC's F1a over all answers)."""
    tp = sum(p == positive and r == positive for p, r in zip(predictions, references, strict=True))
    fp = sum(p == positive and r != positive for p, r in zip(predictions, references, strict=True))
    fn = sum(p != positive and r == positive for p, r in zip(predictions, references, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def grouped_exact_match(predictions: list, references: list, groups: list) -> float:
    """The share of groups whose every prediction is right (MultiRC's exact match: all answers of a question)."""
    right: dict = {}
    for p, r, g in zip(predictions, references, groups, strict=True):
        right[g] = right.get(g, True) and p == r
    return sum(right.values()) / max(len(right), 1)


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation, the articles a/an/the and extra whitespace (the official SQuAD script)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 when the prediction matches one of the answers after normalisation; 0.0 with no answers."""
    return max((float(normalize_answer(prediction) == normalize_answer(a)) for a in answers), default=0.0)


def token_f1(prediction: str, answers: list[str]) -> float:
    return max((_f1(normalize_answer(prediction).split(), normalize_answer(a).split()) for a in answers), default=0.0)


def _f1(pred: list[str], gold: list[str]) -> float:
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 in percent, each the max over the gold answers, averaged over questions."""
    n = max(len(answers), 1)
    return {
        "exact_match": 100 * sum(exact_match(p, a) for p, a in zip(predictions, answers, strict=True)) / n,
        "f1": 100 * sum(token_f1(p, a) for p, a in zip(predictions, answers, strict=True)) / n,
    }
