"""What every method tells the training loop: how it prepares the model, what it trains, with which optimiser, how it
saves its result, and how many bytes that result takes for one task."""

import json
import os
from dataclasses import replace
from pathlib import Path

from torch import nn

from softprompt.core.bank import PromptBank
from softprompt.files.atomic import write_text_atomic
from softprompt.models.model import SoftPromptModel
from softprompt.options import MethodOptions, PromptOptions, TrainOptions

METHOD_FILE = "method.json"  # beside a saved model or peft adapter: what it was trained on and how


class Method:
    """One way of adapting a frozen model to a task. Subclasses set the class attributes and override what differs."""

    name = ""
    trains = True  # False: nothing is trained (prompt design), the model is only evaluated
    optimizer = "adamw"  # default optimiser, learning rate and weight decay
    lr = 1e-3
    weight_decay = 0.0
    result = ""  # what the method saves, in messages ("the best prompt so far")
    output = ""  # its file or folder in the output folder
    own_options: tuple[str, ...] = ()  # options (section or section.name) that no other method reads

    @classmethod
    def reads(cls, option: str, options: MethodOptions) -> bool:
        """Whether `option` (section.name), which no method owns, changes anything for this method with `options`
        (a sweep leaves it out of the cells where it does not)."""
        return True

    def __init__(
        self, options: MethodOptions | None = None, prompt: PromptOptions | None = None, allow_other_model: bool = False
    ):
        self.options = options or MethodOptions(name=self.name)
        self.prompt_options = prompt or PromptOptions()
        self.allow_other_model = allow_other_model

    # ----- training -----------------------------------------------------------------------------------
    def training_options(self, model: SoftPromptModel, o: TrainOptions) -> TrainOptions:
        """`o` with the method's defaults where the optimiser, learning rate and weight decay are left at theirs."""
        default = TrainOptions()
        return replace(
            o,
            optimizer=self.optimizer if o.optimizer == default.optimizer else o.optimizer,
            lr=self.lr if o.lr is None else o.lr,
            weight_decay=self.weight_decay if o.weight_decay == default.weight_decay else o.weight_decay,
        )

    def prepare(self, model: SoftPromptModel, task, train_examples: list, seed: int) -> None:
        """Make `model` ready to train: add what the method trains, and leave every other weight frozen. Methods
        other than prompt tuning run with an empty prompt bank."""
        model.bank = PromptBank.empty(model.hidden).requires_grad_(False)

    def parameters(self, model: SoftPromptModel) -> list[nn.Parameter]:
        """The parameters the optimiser updates."""
        return [p for p in model.parameters() if p.requires_grad]

    def param_groups(self, model: SoftPromptModel, params: list[nn.Parameter], o: TrainOptions) -> list[dict]:
        """The optimiser's parameter groups over `params`: one, at train.lr, unless the method says otherwise."""
        return [{"params": params}]

    def predictions(self, model: SoftPromptModel, task, examples: list, batch_size: int, progress: bool) -> list:
        """The model's predictions for `examples`, in order, as the task scores them."""
        return task.predict_all(model, [e.fields for e in examples], batch_size, progress=progress)

    def evaluate(
        self, model: SoftPromptModel, task, examples: list, batch_size: int, progress: bool
    ) -> dict[str, float]:
        return task.score(self.predictions(model, task, examples, batch_size, progress), examples)

    def metadata(self) -> dict:
        """What the method records beside its result."""
        return {"method": self.name, "options": {k: v for k, v in vars(self.options).items() if k != "name"}}

    def report(self) -> dict:
        """Anything more the method adds to its row of results.jsonl."""
        return {}

    # ----- the result ---------------------------------------------------------------------------------
    def path(self, folder: str | os.PathLike) -> Path:
        return Path(folder) / self.output

    def save(self, model: SoftPromptModel, folder: Path, metadata: dict) -> Path:
        """Write the result as the model holds it now, replacing any earlier one; returns its path."""
        raise NotImplementedError

    def load(self, model: SoftPromptModel, folder: str | os.PathLike) -> SoftPromptModel:
        """The frozen `model` with the result saved in `folder` (by `save`) applied to it."""
        raise NotImplementedError

    def stored_bytes(self, folder: str | os.PathLike) -> int:
        """The size of what is stored for one task: the saved file, or every file in the saved folder."""
        return path_bytes(self.path(folder))


def path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_metadata(folder: Path, metadata: dict) -> None:
    write_text_atomic(folder / METHOD_FILE, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
