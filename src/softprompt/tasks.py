"""Tasks: how rows become examples, batches and predictions, and which metric picks the best prompt."""

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from softprompt import metrics
from softprompt.data import load_rows, require_columns, where as row_where
from softprompt.errors import UserError
from softprompt.model import ENCODER_ONLY, SoftPromptModel
from softprompt.options import DataOptions


@dataclass
class Example:
    input: str
    target: str = ""  # the text a generative model learns to produce
    class_id: int = -1  # classification
    answers: list[str] = field(default_factory=list)  # squad: all gold answers


class Task:
    name = ""
    metric = ""  # the metric that picks the best prompt (higher is better)

    def __init__(self, options: DataOptions):
        self.options = options

    # ----- data -------------------------------------------------------------------------------------
    def load(self, source: str, limit: int | None = None) -> list[Example]:
        rows, lines = load_rows(source, self.options.format)
        rows = rows[:limit] if limit else rows
        examples = self.examples(rows, source, lines)
        if not examples:
            raise UserError(f"{source}: the data set is empty")
        return examples

    def examples(self, rows: list[dict], source: str, first_line: int) -> list[Example]:
        raise NotImplementedError

    def prepare(self, model: SoftPromptModel) -> None:
        """Make the model ready for this task (encoder-only classification hands it the label texts)."""
        if model.family == ENCODER_ONLY:
            raise UserError(f"an encoder-only model predicts labels, not text: data.task={self.name} needs an encoder-decoder or decoder-only model")

    def format_input(self, text: str) -> str:
        return self.options.template.replace("{}", str(text))

    # ----- training and prediction -------------------------------------------------------------------
    def batch(self, model: SoftPromptModel, examples: list[Example]) -> dict[str, torch.Tensor]:
        """Training tensors for a list of examples."""
        o = self.options
        return model.tokenize([e.input for e in examples], [e.target for e in examples], max_input_length=o.max_input_length, max_target_length=o.max_target_length)

    def predict(self, model: SoftPromptModel, inputs: list[str], prompt_ids=None) -> list[str]:
        o = self.options
        return model.generate(inputs, prompt_ids, max_new_tokens=o.max_target_length, max_input_length=o.max_input_length)

    def score(self, predictions: list[str], examples: list[Example]) -> dict[str, float]:
        raise NotImplementedError

    def predict_all(self, model: SoftPromptModel, inputs: list[str], batch_size: int = 64, prompt_id: int = 0, progress: bool = True) -> list[str]:
        """Predictions for formatted inputs, `batch_size` at a time, in inference mode, with bank prompt `prompt_id`."""
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
        return self.score(self.predict_all(model, [e.input for e in examples], batch_size, prompt_id, progress), examples)

    def describe(self) -> dict:
        """What a prompt file records about its task."""
        return {"type": self.name, "template": self.options.template, "max_input_length": self.options.max_input_length, "max_target_length": self.options.max_target_length}


class ClassificationTask(Task):
    name = "classification"
    metric = "accuracy"

    def __init__(self, options: DataOptions):
        super().__init__(options)
        if not options.verbalizers:
            raise UserError('data.verbalizers: a classification task needs label texts, e.g. {"0": "terrible", "1": "great"}')
        self.label_values = [str(k) for k in options.verbalizers]
        self.label_texts = [str(v) for v in options.verbalizers.values()]

    def examples(self, rows, source, first_line):
        o = self.options
        require_columns(rows, [o.text_column, o.label_column], source)
        out = []
        for n, row in enumerate(rows):
            value = str(row[o.label_column])
            if value not in self.label_values:
                where = row_where(source, first_line, n)
                raise UserError(f"{where}: label {value!r} is not one of the verbalizers ({', '.join(self.label_values)})")
            k = self.label_values.index(value)
            out.append(Example(self.format_input(row[o.text_column]), self.label_texts[k], class_id=k))
        return out

    def batch(self, model, examples):
        if model.family != ENCODER_ONLY:
            return super().batch(model, examples)
        batch = model.tokenize([e.input for e in examples], max_input_length=self.options.max_input_length)
        batch["class_ids"] = torch.tensor([e.class_id for e in examples])
        return batch

    def prepare(self, model: SoftPromptModel) -> None:
        model.set_labels(self.label_texts)

    def predict(self, model, inputs, prompt_ids=None):
        scores = model.class_scores(inputs, self.label_texts, prompt_ids, max_input_length=self.options.max_input_length)
        return [self.label_values[i] for i in scores.argmax(-1).tolist()]

    def score(self, predictions, examples):
        gold = [self.label_values[e.class_id] for e in examples]
        return {"accuracy": 100 * metrics.accuracy(predictions, gold), "macro_f1": 100 * metrics.macro_f1(predictions, gold)}

    def describe(self):
        return {**super().describe(), "verbalizers": dict(zip(self.label_values, self.label_texts))}


class TextToTextTask(Task):
    name = "text2text"
    metric = "exact_match"

    def examples(self, rows, source, first_line):
        o = self.options
        require_columns(rows, [o.input_column, o.target_column], source)
        return [Example(self.format_input(r[o.input_column]), str(r[o.target_column]), answers=[str(r[o.target_column])]) for r in rows]

    def score(self, predictions, examples):
        return metrics.squad(predictions, [e.answers for e in examples])


class SquadTask(TextToTextTask):
    name = "squad"
    metric = "f1"

    def examples(self, rows, source, first_line):
        require_columns(rows, ["question", "context", "answers"], source)
        out = []
        for r in rows:
            answers = list(r["answers"]) or [""]
            out.append(Example(self.format_input(f"question: {r['question']} context: {r['context']}"), answers[0], answers=answers))
        return out


TASKS = {"classification": ClassificationTask, "text2text": TextToTextTask, "squad": SquadTask}


def make_task(options: DataOptions) -> Task:
    return TASKS[options.task](options)
