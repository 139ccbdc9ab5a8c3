"""prompt-design: no training. The frozen model reads an optional instruction and k in-context examples before each
input, as GPT-3 is prompted (the paper's prompt-design baseline).

The examples (shots) are drawn from the training data with the seed and formatted with the task's template followed by
their target. They go into a template field before the task's own template, so the input is cut only as the template
cuts it; shots that do not fit beside an input within the model's positions are dropped, the last ones first."""

import copy
import json
import random
from dataclasses import replace

from softprompt.core.placement import without_slot
from softprompt.core.template import Template
from softprompt.errors import UserError
from softprompt.files.atomic import write_text_atomic
from softprompt.methods.base import Method
from softprompt.tasks import Example

CONTEXT = "_context"  # the field before the task's template: the instruction and the shots, each on its own line


class PromptDesign(Method):
    name = "prompt-design"
    trains = False
    result = "design"
    output = "design.json"
    own_options = ("method.instruction", "method.shots")

    @classmethod
    def reads(cls, option, options):
        """Of the train options only the evaluation batch, and the seed when it draws shots: nothing trains."""
        if option.startswith("train."):
            return option == "train.eval_batch_size" or (option == "train.seed" and options.shots > 0)
        return True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shots = []  # Examples
        self.fewer = 0  # inputs that met fewer than all the shots, at the last evaluation

    def training_options(self, model, o):
        return o  # nothing trains

    def prepare(self, model, task, train_examples, seed):
        super().prepare(model, task, train_examples, seed)
        k = self.options.shots
        if k > len(train_examples):
            raise UserError(f"--method.shots {k}: the training data has only {len(train_examples)} rows")
        self.shots = random.Random(seed).sample(train_examples, k)

    def parameters(self, model):
        return []

    def shot_texts(self, task) -> list[str]:
        return [
            f"{without_slot(task.template.render(e.fields))} {e.target}" for e in self.shots
        ]  # the slot only in the input

    def contexts(self, model, task, inputs: list[dict]) -> list[str]:
        """For each input (the template's fields), the instruction and as many shots as fit beside it."""
        template = designed_template(task)
        o = task.options
        labels = [
            len(model.token_ids(t)) + 2 for t in getattr(task, "label_texts", [])
        ]  # as rank classification scores them
        budget = model.input_budget(
            o.max_input_length, max([o.max_target_length, *labels])
        )  # what tokenisation leaves the input
        shots = self.shot_texts(task)
        out, self.fewer = [], 0
        for fields in inputs:
            n = len(shots)
            while (
                n and model.count_input_tokens(template.render({**fields, CONTEXT: self.context(shots[:n])})) > budget
            ):
                n -= 1
            self.fewer += n < len(shots)
            out.append(self.context(shots[:n]))
        return out

    def context(self, shots: list[str]) -> str:
        parts = ([self.options.instruction] if self.options.instruction else []) + shots
        return "".join(f"{p}\n" for p in parts)

    def inputs(self, model, task, inputs: list[dict]) -> list[dict]:
        """The inputs with their context field, for `designed_template(task)`."""
        return [{**fields, CONTEXT: c} for fields, c in zip(inputs, self.contexts(model, task, inputs))]

    def predictions(self, model, task, examples, batch_size, progress):
        designed = copy.copy(task)
        designed.template = designed_template(task)
        return designed.predict_all(
            model, self.inputs(model, task, [e.fields for e in examples]), batch_size, progress=progress
        )

    def report(self):
        return {"shots": len(self.shots), "inputs_with_fewer_shots": self.fewer}

    def save(self, model, folder, metadata):
        design = {
            **metadata,
            "instruction": self.options.instruction,
            "shots": [{"fields": e.fields, "target": e.target} for e in self.shots],
            "inputs_with_fewer_shots": self.fewer,
        }
        write_text_atomic(self.path(folder), json.dumps(design, indent=2, ensure_ascii=False) + "\n")
        return self.path(folder)

    def load(self, model, folder):
        """The frozen model as it is; the instruction and shots come back into this method."""
        design = json.loads(self.path(folder).read_text(encoding="utf-8"))
        self.options = replace(self.options, instruction=design["instruction"], shots=len(design["shots"]))
        self.shots = [Example(s["fields"], target=s["target"]) for s in design["shots"]]
        return model


def designed_template(task) -> Template:
    return Template(f"{{{CONTEXT}}}{task.template.text}")
