"""A recipe made ready to train: its options checked, the output folder cleared for use, the data read and the
model loaded, in that order, so that a bad option or file stops before the model loads. `softprompt train` and
`softprompt.tune` both start here."""

from dataclasses import dataclass

from softprompt import checks
from softprompt.methods import Method, make_method
from softprompt.models.embedded import EMBEDDED_MODEL
from softprompt.models.loading import resolve_model_path
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, TrainOptions
from softprompt.tasks import Example, Task, make_task
from softprompt.training import option_checks
from softprompt.training.run import start_accelerate
from softprompt.training.run_folder import check_output_folder
from softprompt.training.run_report import TrainResult
from softprompt.training.train import train


@dataclass
class Recipe:
    model: SoftPromptModel
    method: Method
    task: Task
    train_examples: list[Example]
    validation: list[Example] | None
    options: TrainOptions

    def run(self, progress: bool = True) -> TrainResult:
        """Train, and save the best result in the output folder (training/train.py)."""
        return train(
            self.model,
            self.method,
            self.task,
            self.train_examples,
            self.validation,
            self.options,
            self.options.output_dir,
            progress,
        )


def prepare(
    model: ModelOptions | SoftPromptModel,
    prompt: PromptOptions,
    data: DataOptions,
    options: TrainOptions,
    method: MethodOptions | None = None,
    allow_other_model: bool = False,
) -> Recipe:
    """Check the recipe, read its data and load its model (or take `model`, already loaded)."""
    option_checks.check_training_command(prompt, data, options)
    loaded = isinstance(model, SoftPromptModel)
    if not loaded:
        checks.check_model(model)
    check_output_folder(options.output_dir, model.name)
    chosen = make_method(method or MethodOptions(), prompt, allow_other_model)
    task = make_task(data)
    train_examples = task.load(data.train, data.limit_train)
    validation = task.load(data.validation, data.limit_validation) if data.validation else None
    if chosen.trains:
        if not loaded:
            resolve_model_path(model.name or EMBEDDED_MODEL)  # an embedded model's folder made first, whole
        start_accelerate()  # a wrong launch stops before the model loads; under DeepSpeed the model loads partitioned
    frozen = model if loaded else SoftPromptModel.load(model)
    return Recipe(frozen, chosen, task, train_examples, validation, options)
