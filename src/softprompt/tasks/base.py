"""What every task shares: how rows become examples, batches and predictions, and which metric picks the best prompt."""

import json
import os
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from softprompt.core.families import ENCODER_ONLY
from softprompt.core.template import Template
from softprompt.data.readers import expand_path, is_local, json_type, load_rows
from softprompt.errors import UserError
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions

SPLITS = ("train", "validation")  # FILE@train, FILE@validation: every 10th row (the 10th, 20th, ...) is validation


@dataclass
class Example:
    fields: dict[str, str]  # the template's fields, filled from the row's columns
    input: str = ""  # the template rendered with the fields, uncut (for display)
    target: str = ""  # the text a generative model learns to produce
    class_id: int = -1  # classification
    answers: list[str] = field(default_factory=list)  # squad: all gold answers
    group: str = ""  # examples scored together (MultiRC: the answers of one question)


class Task:
    name = ""
    description = ""  # one line for `softprompt tasks`
    metric = ""  # the metric that picks the best prompt (higher is better)
    reported: tuple[str, ...] = ()  # every metric the task reports
    default_template = "{}"
    fields_provided: tuple[str, ...] = ()  # a registered task's template fields; empty: any data column
    cut_first: tuple[str, ...] = ()  # fields cut before the longest-first rule when an input is too long
    default_max_target_length: int | None = None  # instead of DataOptions' 8 when that is left unset
    targets = ""  # what the model produces, for `softprompt tasks`

    def __init__(self, options: DataOptions):
        if self.default_max_target_length and options.max_target_length == DataOptions.max_target_length:
            options = replace(options, max_target_length=self.default_max_target_length)
        self.options = options
        text = options.template if options.template != DataOptions.template else self.default_template
        self.template = Template(text, cut_first=self.cut_first)
        unknown = [f for f in self.template.fields if self.fields_provided and f not in self.fields_provided]
        if unknown:
            raise UserError(
                f"--data.template: {{{unknown[0]}}} is not a field of {self.name} ({', '.join(self.fields_provided)})"
            )

    # ----- data -------------------------------------------------------------------------------------
    def load(self, source: str, limit: int | None = None) -> list[Example]:
        """Examples from a data source; a local FILE@train or FILE@validation takes a fixed part of the file (SPLITS)."""
        path, split = local_split(source)
        rows, lines = self.read(path)
        if split:
            keep = [n for n in range(len(rows)) if (n % 10 == 9) == (split == "validation")]
            rows, lines = [rows[n] for n in keep], [lines[n] for n in keep] if lines is not None else None
        rows = rows[:limit] if limit else rows
        examples = self.examples(rows, path, lines) if rows else []
        if not examples:
            raise UserError(f"{source}: the data set is empty")
        return examples

    def read(self, source: str) -> tuple[list[dict], list[int] | None]:
        """The data rows of a source and the line of each (None when unknown)."""
        return load_rows(source, self.options.format)

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
            if isinstance(value, (dict, list)):
                raise UserError(f"{where}: column {column!r} holds {json_type(value)}, not a text")
            values[name] = str(value)
        return values

    def example(self, values: dict[str, str], **kw) -> Example:
        return Example(values, self.template.render(values), **kw)

    def fields_from_texts(self, texts: list[str]) -> list[dict[str, str]]:
        """Inputs typed by a user: plain texts for a one-field template, else JSON objects holding every field; each
        field checked to be text (check_text)."""
        needed = self.template.fields
        out = []
        for n, text in enumerate(texts, 1):
            if self.template.single:
                fields = {needed[0]: text}
            else:
                row = parse_json_input(text)
                if not isinstance(row, dict) or any(row.get(f) is None for f in needed):
                    raise UserError(
                        f"input {n}: the template {self.template.text!r} needs a JSON object with the fields {', '.join(needed)}"
                    )
                fields = {f: str(row[f]) for f in needed}
            for value in fields.values():
                check_text(value, n)
            out.append(fields)
        return out

    def prepare(self, model: SoftPromptModel) -> None:
        """Make the model ready for this task (encoder-only classification hands it the label texts)."""
        if model.family == ENCODER_ONLY:
            raise UserError(
                f"an encoder-only model predicts labels, not text: --data.task={self.name} needs an encoder-decoder or decoder-only model"
            )

    # ----- training and prediction -------------------------------------------------------------------
    def batch(self, model: SoftPromptModel, examples: list[Example]) -> dict[str, torch.Tensor | int]:
        """Training tensors for a list of examples."""
        o = self.options
        return model.tokenize(
            [e.fields for e in examples],
            [e.target for e in examples],
            template=self.template,
            max_input_length=o.max_input_length,
            max_target_length=o.max_target_length,
        )

    def predict(self, model: SoftPromptModel, inputs: list[dict[str, str]], prompt_ids=None) -> list[str]:
        o = self.options
        return model.generate(
            inputs,
            prompt_ids,
            template=self.template,
            max_new_tokens=o.max_target_length,
            max_input_length=o.max_input_length,
        )

    def predict_members(
        self, model: SoftPromptModel, inputs: list[dict[str, str]], prompt_ids: list[int]
    ) -> tuple[list[list[str]], list[str]]:
        """Each input run with every prompt of `prompt_ids` in one batched pass (inputs repeated, one row per
        prompt): each member's predictions, and the ensemble's by majority vote (ties: the earliest member's)."""
        K = len(prompt_ids)
        flat = self.predict(model, [x for x in inputs for _ in range(K)], prompt_ids * len(inputs))  # (B * K,)
        rows = [flat[i * K : (i + 1) * K] for i in range(len(inputs))]
        return [flat[k::K] for k in range(K)], [max(row, key=row.count) for row in rows]

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        raise NotImplementedError

    def predict_all(
        self,
        model: SoftPromptModel,
        inputs: list[dict[str, str]],
        batch_size: int = 64,
        prompt_id: int = 0,
        progress: bool = True,
    ) -> list[str]:
        """Predictions for inputs (dicts of the template's fields), `batch_size` at a time, in inference mode, with bank prompt `prompt_id`."""
        was_training = model.training
        model.eval()
        predictions = []
        for i in tqdm(range(0, len(inputs), batch_size), desc="predicting", leave=False, disable=not progress):
            chunk = inputs[i : i + batch_size]
            predictions += self.predict(model, chunk, [prompt_id] * len(chunk))
        model.train(was_training)
        return predictions

    def evaluate(
        self,
        model: SoftPromptModel,
        examples: list[Example],
        batch_size: int = 64,
        prompt_id: int = 0,
        progress: bool = True,
    ) -> dict[str, float]:
        """Metrics of the model with bank prompt `prompt_id` on `examples`."""
        return self.score(
            self.predict_all(model, [e.fields for e in examples], batch_size, prompt_id, progress), examples
        )

    def describe(self) -> dict:
        """What a prompt file records about its task."""
        return {
            "type": self.name,
            "template": self.template.text,
            "max_input_length": self.options.max_input_length,
            "max_target_length": self.options.max_target_length,
        }

    @classmethod
    def summary(cls) -> dict[str, str]:
        """The task's row in `softprompt tasks`."""
        others = [m for m in cls.reported if m != cls.metric]
        if cls.metric == "average":
            metric = f"average of {' and '.join(others)}"
        else:
            metric = cls.metric + (f" (also {', '.join(others)})" if others else "")
        return {
            "task": cls.name,
            "template": cls.default_template,
            "targets": cls.targets,
            "metric": metric,
            "data": cls.description,
        }


def check_text(text: str, n: int) -> None:
    """Refuse an input holding a lone surrogate (an undecodable byte in a command-line argument, or a JSON escape such
    as \\ud800): no tokenizer takes it, and it is not text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(
            f"input {n}: not valid text (a lone surrogate, {text[e.start]!r}, at character {e.start + 1}); send UTF-8"
        ) from None


def parse_json_input(text: str):
    """A JSON object typed as an input, or None when the text is none: not JSON, nested too deep for Python, or a
    number too long to convert."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def local_split(source: str) -> tuple[str, str | None]:
    """FILE@train or FILE@validation -> (FILE, split) for a local file; any other source -> (source, None). A path
    naming an environment variable ($SOFTPROMPT_DATA/sst2/dev.tsv) comes back with it expanded (readers.expand_path)."""
    if "$" in source:
        source = expand_path(source)
    path, at, split = source.rpartition("@")
    if not at or os.path.exists(os.path.expanduser(source)) or not is_local(path):
        return source, None
    if split not in SPLITS:
        raise UserError(f"{source}: a local file splits into {path}@train and {path}@validation only")
    return path, split


def score_with_average(scores: dict[str, float]) -> dict[str, float]:
    """SuperGLUE's score for a task with two metrics: their plain mean, beside them."""
    return {**scores, "average": sum(scores.values()) / len(scores)}
