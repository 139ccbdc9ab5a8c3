"""SuperGLUE, read from its JSONL files as distributed, in T5's text-to-text formats without the task-name prefix.

Fields follow T5's order (sorted by name unless T5 fixes one); the targets are T5's label words. Every task but ReCoRD
picks its label by rank classification; ReCoRD writes the answer entity."""

import re

from softprompt.data.readers import field
from softprompt.data.readers import where as row_where
from softprompt.errors import UserError
from softprompt.tasks import metrics
from softprompt.tasks.base import score_with_average
from softprompt.tasks.classification import LabelledTask
from softprompt.tasks.text2text import TextToTextTask

BOOLEAN = {"False": "False", "True": "True"}


def field_of(row: dict, where: str, *keys: str, kind: type | tuple[type, ...] = (str, int, float, bool)):
    """row[k1][k2]...; a missing or null field, or one not of `kind` (a text, number or boolean unless told), is an error
    naming the row."""
    value = row
    for n, key in enumerate(keys, 1):
        value = field(value, key, kind if n == len(keys) else dict, where, name=".".join(keys[:n]))
    return value


class BoolQ(LabelledTask):
    name = "boolq"
    description = "SuperGLUE BoolQ JSONL"
    default_template = "passage: {passage} question: {question}"
    fields_provided = ("passage", "question")
    cut_first = ("passage",)
    labels = BOOLEAN


class CB(LabelledTask):
    name = "cb"
    description = "SuperGLUE CommitmentBank JSONL"
    metric = "average"
    default_template = "hypothesis: {hypothesis} premise: {premise}"
    fields_provided = ("hypothesis", "premise")
    cut_first = ("premise",)
    labels = {"entailment": "entailment", "contradiction": "contradiction", "neutral": "neutral"}

    def score(self, predictions, examples):
        return score_with_average(super().score(predictions, examples))


class COPA(LabelledTask):
    name = "copa"
    description = "SuperGLUE COPA JSONL"
    default_template = "choice1: {choice1} choice2: {choice2} premise: {premise} question: {question}"
    fields_provided = ("choice1", "choice2", "premise", "question")
    cut_first = ("premise",)
    labels = {"0": "choice1", "1": "choice2"}


class RTE(LabelledTask):
    name = "rte"
    description = "SuperGLUE RTE JSONL"
    default_template = "hypothesis: {hypothesis} premise: {premise}"
    fields_provided = ("hypothesis", "premise")
    cut_first = ("premise",)
    labels = {"entailment": "entailment", "not_entailment": "not_entailment"}


class WiC(LabelledTask):
    name = "wic"
    description = "SuperGLUE WiC JSONL"
    default_template = "sentence1: {sentence1} sentence2: {sentence2} word: {word}"
    fields_provided = ("sentence1", "sentence2", "word")
    labels = BOOLEAN


class WSC(LabelledTask):
    """T5's `wsc` format: the noun (span 1) marked `* noun *`, the pronoun (span 2) `# pronoun #`, target whether the
    pronoun refers to the noun. The text is split on whitespace and joined with single spaces."""

    name = "wsc"
    description = "SuperGLUE WSC JSONL, the noun marked * *, the pronoun # #"
    default_template = "text: {text}"
    fields_provided = ("text",)
    labels = BOOLEAN

    def examples(self, rows, source, lines):
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            spans = [
                (
                    field_of(row, where, "target", f"span{k}_index", kind=int),
                    str(field_of(row, where, "target", f"span{k}_text")),
                    mark,
                )
                for k, mark in ((1, "*"), (2, "#"))
            ]
            text = mark_spans(str(field_of(row, where, "text")), spans)
            out.append(self.labelled({"text": text}, field_of(row, where, "label"), where))
        return out


def mark_spans(text: str, spans: list[tuple[int, str, str]]) -> str:
    """`text` with each (word index, span text, mark) written `mark span mark`; a span not at its index (SuperGLUE has
    a few off by one) is marked at its nearest occurrence, matched without case."""
    words = text.split()
    if not words:
        return text
    for index, span, mark in sorted(spans, key=lambda s: s[0], reverse=True):  # the later span first: indices hold
        span = " ".join(span.split())
        size = len(span.split())
        found = [i for i in range(len(words)) if " ".join(words[i : i + size]).lower().startswith(span.lower())]
        i = min(found, key=lambda i: abs(i - index)) if found else min(max(index, 0), len(words) - 1)
        piece = " ".join(words[i : i + size])
        cut = len(span) if i in found else len(piece)
        words[i : i + size] = [f"{mark} {piece[:cut]} {mark}{piece[cut:]}"]
    return " ".join(words)


class MultiRC(LabelledTask):
    """One example per answer; exact match counts the questions whose every answer is right, F1a is the F1 of
    'True' over all answers."""

    name = "multirc"
    description = "SuperGLUE MultiRC JSONL, one example per answer"
    metric = "average"
    reported = ("exact_match", "f1a")
    default_template = "question: {question} answer: {answer} paragraph: {paragraph}"
    fields_provided = ("question", "answer", "paragraph")
    cut_first = ("paragraph",)
    labels = {"0": "False", "1": "True"}

    def examples(self, rows, source, lines):
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            paragraph = re.sub(
                r"<(/)?b>", "", str(field_of(row, where, "passage", "text")).replace("<br>", " ")
            )  # T5 drops the markup
            for q, question in enumerate(field_of(row, where, "passage", "questions", kind=list)):
                answers = field_of(question, where, "answers", kind=list)
                group = f"{row.get('idx', n)}/{question.get('idx', q)}"
                for answer in answers:
                    values = {
                        "question": str(field_of(question, where, "question")),
                        "answer": str(field_of(answer, where, "text")),
                        "paragraph": paragraph,
                    }
                    out.append(self.labelled(values, field_of(answer, where, "label"), where, group=group))
        return out

    def score(self, predictions, examples):
        gold = [self.label_values[e.class_id] for e in examples]
        scores = {
            "exact_match": 100 * metrics.grouped_exact_match(predictions, gold, [e.group for e in examples]),
            "f1a": 100 * metrics.binary_f1(predictions, gold, positive="1"),
        }
        return score_with_average(scores)


class ReCoRD(TextToTextTask):
    """One example per query, whose target is its first answer; a prediction scores the best exact match and token F1
    over all the query's answers (SQuAD normalisation), as the official script does. Entities are the passage's
    distinct entity texts, sorted; `@highlight` lines join the passage as sentences (as T5 does)."""

    name = "record"
    description = "SuperGLUE ReCoRD JSONL, one example per query"
    metric = "average"
    reported = ("exact_match", "f1")
    default_template = "query: {query} entities: {entities} passage: {passage}"
    fields_provided = ("query", "entities", "passage")
    cut_first = ("passage", "entities")
    default_max_target_length = 16
    targets = "an answer entity (scored by the best-matching answer)"

    def examples(self, rows, source, lines):
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            text = str(field_of(row, where, "passage", "text"))
            spans = field_of(row, where, "passage", "entities", kind=list)
            entities = ", ".join(
                sorted(
                    {
                        text[field_of(e, where, "start", kind=int) : field_of(e, where, "end", kind=int) + 1]
                        for e in spans
                    }
                )
            )  # ends are inclusive
            passage = re.sub(r"\n@highlight\n", ". ", re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", text))
            for qa in field_of(row, where, "qas", kind=list):
                found = field(qa, "answers", list, where, required=False) or []
                answers = list(dict.fromkeys(str(field_of(a, where, "text")) for a in found))
                if not answers:
                    raise UserError(f"{where}: query {qa.get('idx', '?')} has no answers")
                values = {"query": str(field_of(qa, where, "query")), "entities": entities, "passage": passage}
                out.append(self.example(values, target=answers[0], answers=answers))
        return out

    def score(self, predictions, examples):
        return score_with_average(metrics.squad(predictions, [e.answers for e in examples]))
