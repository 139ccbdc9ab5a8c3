"""Tasks: how rows become examples, batches and predictions, and which metric picks the best prompt."""

import json
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from softprompt import metrics
from softprompt.data import load_rows, require_columns, where as row_where
from softprompt.errors import UserError
from softprompt.model import ENCODER_ONLY, SoftPromptModel
from softprompt.options import DataOptions
from softprompt.template import Template


@dataclass
class Example:
    fields: dict[str, str]  # the template's fields, filled from the row's columns
    input: str = ""  # the template rendered with the fields, uncut (for display)
    target: str = ""  # the text a generative model learns to produce
    class_id: int = -1  # classification
    answers: list[str] = field(default_factory=list)  # squad: all gold answers


class Task:
    name = ""
    metric = ""  # the metric that picks the best prompt (higher is better)
    default_template = "{}"

    def __init__(self, options: DataOptions):
        self.options = options
        text = options.template if options.template != DataOptions.template else self.default_template
        self.template = Template(text)

    # ----- data -------------------------------------------------------------------------------------
    def load(self, source: str, limit: int | None = None) -> list[Example]:
        rows, lines = load_rows(source, self.options.format)
        rows = rows[:limit] if limit else rows
        examples = self.examples(rows, source, lines)
        if not examples:
            raise UserError(f"{source}: the data set is empty")
        return examples

    def examples(self, rows: list[dict], source: str, lines: list[int] | None) -> list[Example]:
        """Examples from data rows; `lines` gives each row's line in the file (None when not from a file)."""
        raise NotImplementedError

    @property
    def input_column(self) -> str:
        """The column that fills the template's `{}` field."""
        return self.options.input_column

    def columns(self) -> dict[str, str]:
        """Template field -> data column."""
        return {f: f or self.input_column for f in self.template.fields}

    def fields(self, row: dict, where: str) -> dict[str, str]:
        """The template's fields from one data row; `where` names the row in errors."""
        values = {}
        for name, column in self.columns().items():
            value = row.get(column)
            if value is None:
                raise UserError(f"{where}: column {column!r} is empty (null)")
            values[name] = str(value)
        return values

    def example(self, values: dict[str, str], **kw) -> Example:
        return Example(values, self.template.render(values), **kw)

    def fields_from_texts(self, texts: list[str]) -> list[dict[str, str]]:
        """Inputs typed by a user: plain texts for a one-field template, else JSON objects holding every field."""
        if self.template.single:
            return [{self.template.fields[0]: t} for t in texts]
        needed = self.template.fields
        out = []
        for n, text in enumerate(texts, 1):
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or any(row.get(f) is None for f in needed):
                raise UserError(f"input {n}: the template {self.template.text!r} needs a JSON object with the fields {', '.join(needed)}")
            out.append({f: str(row[f]) for f in needed})
        return out

    def prepare(self, model: SoftPromptModel) -> None:
        """Make the model ready for this task (encoder-only classification hands it the label texts)."""
        if model.family == ENCODER_ONLY:
            raise UserError(f"an encoder-only model predicts labels, not text: --data.task={self.name} needs an encoder-decoder or decoder-only model")

    # ----- training and prediction -------------------------------------------------------------------
    def batch(self, model: SoftPromptModel, examples: list[Example]) -> dict[str, torch.Tensor]:
        """Training tensors for a list of examples."""
        o = self.options
        return model.tokenize([e.fields for e in examples], [e.target for e in examples], template=self.template, max_input_length=o.max_input_length, max_target_length=o.max_target_length)

    def predict(self, model: SoftPromptModel, inputs: list[dict[str, str]], prompt_ids=None) -> list[str]:
        o = self.options
        return model.generate(inputs, prompt_ids, template=self.template, max_new_tokens=o.max_target_length, max_input_length=o.max_input_length)

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        raise NotImplementedError

    def predict_all(self, model: SoftPromptModel, inputs: list[dict[str, str]], batch_size: int = 64, prompt_id: int = 0, progress: bool = True) -> list[str]:
        """Predictions for inputs (dicts of the template's fields), `batch_size` at a time, in inference mode, with bank prompt `prompt_id`."""
        was_training = model.training
        model.eval()
        predictions = []
        for i in tqdm(range(0, len(inputs), batch_size), desc="predicting", leave=False, disable=not progress):
            chunk = inputs[i : i + batch_size]
            predictions += self.predict(model, chunk, [prompt_id] * len(chunk))
        model.train(was_training)
        return predictions

    def evaluate(self, model: SoftPromptModel, examples: list[Example], batch_size: int = 64, prompt_id: int = 0, progress: bool = True) -> dict[str, float]:
        """Metrics of the model with bank prompt `prompt_id` on `examples`."""
        return self.score(self.predict_all(model, [e.fields for e in examples], batch_size, prompt_id, progress), examples)

    def describe(self) -> dict:
        """What a prompt file records about its task."""
        return {"type": self.name, "template": self.template.text, "max_input_length": self.options.max_input_length, "max_target_length": self.options.max_target_length}


class ClassificationTask(Task):
    name = "classification"
    metric = "accuracy"

    def __init__(self, options: DataOptions):
        super().__init__(options)
        if not options.verbalizers:
            raise UserError('--data.verbalizers: a classification task needs label texts, e.g. {"0": "terrible", "1": "great"}')
        self.label_values = [str(k) for k in options.verbalizers]
        self.label_texts = [str(v) for v in options.verbalizers.values()]

    @property
    def input_column(self) -> str:
        return self.options.text_column

    def examples(self, rows, source, lines):
        o = self.options
        require_columns(rows, [*self.columns().values(), o.label_column], source)
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            value = str(row[o.label_column])
            if value not in self.label_values:
                raise UserError(f"{where}: label {value!r} is not one of the verbalizers ({', '.join(self.label_values)})")
            k = self.label_values.index(value)
            out.append(self.example(self.fields(row, where), target=self.label_texts[k], class_id=k))
        return out

    def batch(self, model, examples):
        if model.family != ENCODER_ONLY:
            return super().batch(model, examples)
        batch = model.tokenize([e.fields for e in examples], template=self.template, max_input_length=self.options.max_input_length)
        batch["class_ids"] = torch.tensor([e.class_id for e in examples])
        return batch

    def prepare(self, model: SoftPromptModel) -> None:
        model.set_labels(self.label_texts)

    def predict(self, model, inputs, prompt_ids=None):
        scores = model.class_scores(inputs, self.label_texts, prompt_ids, template=self.template, max_input_length=self.options.max_input_length)
        return [self.label_values[i] for i in scores.argmax(-1).tolist()]

    def score(self, predictions, examples):
        gold = [self.label_values[e.class_id] for e in examples]
        return {"accuracy": 100 * metrics.accuracy(predictions, gold), "macro_f1": 100 * metrics.macro_f1(predictions, gold)}

    def describe(self):
        return {**super().describe(), "verbalizers": dict(zip(self.label_values, self.label_texts))}


class TextToTextTask(Task):
    name = "text2text"
    metric = "exact_match"

    def examples(self, rows, source, lines):
        o = self.options
        require_columns(rows, [*self.columns().values(), o.target_column], source)
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            values, target = self.fields(row, where), row.get(o.target_column)
            if target is None:
                raise UserError(f"{where}: column {o.target_column!r} is empty (null)")
            out.append(self.example(values, target=str(target), answers=[str(target)]))
        return out

    def score(self, predictions, examples):
        return metrics.squad(predictions, [e.answers for e in examples])


class SquadTask(TextToTextTask):
    """SQuAD v1.1: the context is cut first when an input is too long, never the question."""

    name = "squad"
    metric = "f1"
    default_template = "question: {question} context: {context}"

    def examples(self, rows, source, lines):
        require_columns(rows, [*self.columns().values(), "answers"], source)
        out = []
        for n, row in enumerate(rows):
            answers = list(row["answers"]) or [""]
            out.append(self.example(self.fields(row, f"{source} question {row.get('id', n)}"), target=answers[0], answers=answers))
        return out


TASKS = {"classification": ClassificationTask, "text2text": TextToTextTask, "squad": SquadTask}


def make_task(options: DataOptions) -> Task:
    return TASKS[options.task](options)
