"""Classification: a label from a fixed set, each with its text (verbalizer).

Encoder-only models pick the label whose text is closest to the input; generative models score every label text and
take the most likely (rank classification), so a prediction is always one of the labels."""

import torch

from softprompt.core.families import ENCODER_ONLY
from softprompt.data.readers import require_columns
from softprompt.data.readers import where as row_where
from softprompt.errors import UserError
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions
from softprompt.tasks import metrics
from softprompt.tasks.base import Example, Task


class ClassificationTask(Task):
    name = "classification"
    description = "JSONL/CSV/TSV: --data.text_column, --data.label_column"
    metric = "accuracy"
    reported = ("accuracy", "macro_f1")
    targets = "--data.verbalizers"
    labels: dict[
        str, str
    ] = {}  # a registered task's label values -> label texts; the generic task takes --data.verbalizers

    def __init__(self, options: DataOptions):
        super().__init__(options)
        verbalizers = {str(k): str(v) for k, v in (options.verbalizers or self.labels).items()}
        if not verbalizers:
            raise UserError(
                '--data.verbalizers: a classification task needs label texts, e.g. {"0": "terrible", "1": "great"}'
            )
        if self.labels and set(verbalizers) != set(self.labels):
            raise UserError(
                f"--data.verbalizers: {self.name} has the labels {', '.join(self.labels)}; give a text for each"
            )
        self.label_values = list(self.labels or verbalizers)
        self.label_texts = [verbalizers[k] for k in self.label_values]
        check_label_texts(self.label_values, self.label_texts)

    @property
    def input_column(self) -> str:
        return self.options.text_column

    def examples(self, rows, source, lines):
        o = self.options
        require_columns(rows, [*self.columns().values(), o.label_column], source)
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            out.append(self.labelled(self.fields(row, where), row[o.label_column], where))
        return out

    def labelled(self, values: dict[str, str], label, where: str, **kw) -> Example:
        """An example of the label value `label` (as in the data: "1", 1 and True are "1", "1" and "True")."""
        value = str(label)
        if value not in self.label_values:
            kind = "labels" if self.labels else "verbalizers"
            raise UserError(f"{where}: label {value!r} is not one of the {kind} ({', '.join(self.label_values)})")
        k = self.label_values.index(value)
        return self.example(values, target=self.label_texts[k], class_id=k, **kw)

    def batch(self, model, examples):
        if model.family != ENCODER_ONLY:
            return super().batch(model, examples)
        batch = model.tokenize(
            [e.fields for e in examples], template=self.template, max_input_length=self.options.max_input_length
        )
        batch["class_ids"] = torch.tensor([e.class_id for e in examples])
        return batch

    def prepare(self, model: SoftPromptModel) -> None:
        model.check_label_room(self.label_texts)
        model.set_labels(self.label_texts)

    def predict(self, model, inputs, prompt_ids=None):
        scores = model.class_scores(
            inputs, self.label_texts, prompt_ids, template=self.template, max_input_length=self.options.max_input_length
        )
        return [self.label_values[i] for i in scores.argmax(-1).tolist()]

    def render(self, model: SoftPromptModel, inputs: list[dict[str, str]]) -> list[str]:
        """Inputs as scoring sees them: rendered, and cut to fit beside the prompt and the longest label; ready
        for `model.score_labels`, where rows of other tasks may join them."""
        budget = model.input_budget(self.options.max_input_length, model.label_target_length(self.label_texts))
        return model.fit_inputs(inputs, self.template, budget)

    def predict_members(self, model, inputs, prompt_ids):
        """Each member's labels, and the ensemble's by the mean of the members' label probabilities."""
        K = len(prompt_ids)
        repeated = [x for x in inputs for _ in range(K)]
        scores = model.class_scores(
            repeated,
            self.label_texts,
            prompt_ids * len(inputs),
            template=self.template,
            max_input_length=self.options.max_input_length,
        )
        probabilities = scores.view(len(inputs), K, -1).softmax(-1)  # (B, K, L)
        label = lambda index: [self.label_values[i] for i in index.tolist()]  # noqa: E731
        return [label(probabilities[:, k].argmax(-1)) for k in range(K)], label(probabilities.mean(1).argmax(-1))

    def score(self, predictions, examples):
        gold = [self.label_values[e.class_id] for e in examples]
        return {
            "accuracy": 100 * metrics.accuracy(predictions, gold),
            "macro_f1": 100 * metrics.macro_f1(predictions, gold),
        }

    def describe(self):
        return {**super().describe(), "verbalizers": dict(zip(self.label_values, self.label_texts))}

    @classmethod
    def summary(cls):
        row = super().summary()
        return {**row, "targets": " / ".join(cls.labels.values()) if cls.labels else row["targets"]}


def check_label_texts(values: list[str], texts: list[str]) -> None:
    """Refuse a label with an empty text (its log-probability is 0, so every prediction would be it) and two labels
    with the same text (they could never be told apart)."""
    seen: dict[str, str] = {}
    for value, text in zip(values, texts):
        if not text.strip():
            raise UserError(f"--data.verbalizers: label {value!r} has an empty text; give each label a word or phrase")
        if text.strip() in seen:
            raise UserError(
                f"--data.verbalizers: labels {seen[text.strip()]!r} and {value!r} share the text {text.strip()!r}; give each label its own"
            )
        seen[text.strip()] = value


class LabelledTask(ClassificationTask):
    """A registered classification task: its template fields are data columns of the same name, its label column is
    `label`, and its labels and template have defaults (both may be overridden, keeping the same labels and fields)."""

    label_column = "label"

    def examples(self, rows, source, lines):
        require_columns(rows, [*self.columns().values(), self.label_column], source)
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            if row.get(self.label_column) is None:
                raise UserError(f"{where}: no label (column {self.label_column!r})")
            out.append(self.labelled(self.fields(row, where), row[self.label_column], where))
        return out
