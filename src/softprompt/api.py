"""softprompt from Python: `tune` trains a task as `softprompt train` does, `load` reads what it saved back to predict
with. Each section takes a dict with the command line's option names (`data={"train": "train.csv"}` is
`--data.train train.csv`) or the matching Options dataclass (softprompt.options), and is checked as the command
checks it, before the model loads."""

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser

from softprompt.checks import check_device
from softprompt.errors import UserError
from softprompt.inference.loading import load_with_prompts, task_options
from softprompt.methods import Method, make_method
from softprompt.models.loading import pick_device
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, TrainOptions
from softprompt.tasks import Example, Task, make_task
from softprompt.training.recipe import prepare
from softprompt.training.run_output import RESULTS_FILE
from softprompt.training.run_report import TrainResult


def tune(
    model: "str | Mapping | ModelOptions | SoftPromptModel | tuple | None" = None,
    data: "Mapping | DataOptions | None" = None,
    prompt: "Mapping | PromptOptions | None" = None,
    train: "Mapping | TrainOptions | None" = None,
    method: "str | Mapping | MethodOptions" = "prompt",
    output_dir: str | Path | None = None,
    *,
    allow_other_model: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train `method` (prompt tuning by default) on `data` with a frozen `model`, saving the best result in
    `output_dir` (else train's output_dir); returns the run's result: `prompt_path` (what was saved), `metrics`
    (at the best evaluation), `best_step`, `report` (its row of results.jsonl).

    `model` is a hub name or folder, a dict or ModelOptions, a SoftPromptModel, or a (transformers model,
    tokenizer) pair already loaded; unset, the embedded all-MiniLM-L6-v2."""
    options = section(TrainOptions, "train", train)
    if output_dir is not None:
        options = dataclasses.replace(options, output_dir=str(output_dir))
    if isinstance(model, tuple):
        model = SoftPromptModel(*model)
    elif not isinstance(model, SoftPromptModel):
        model = section(ModelOptions, "model", {"name": model} if isinstance(model, str) else model)
    chosen = section(MethodOptions, "method", {"name": method} if isinstance(method, str) else method)
    recipe = prepare(
        model, section(PromptOptions, "prompt", prompt), section(DataOptions, "data", data), options, chosen,
        allow_other_model,
    )  # fmt: skip
    return recipe.run(progress)


class Predictor:
    """A trained result on its model, with the task it was trained for."""

    def __init__(self, model: SoftPromptModel, method: Method, task: Task, data: DataOptions):
        self.model, self.method, self.task, self.data = model, method, task, data

    def predict(self, inputs: "str | dict | list[str | dict]", batch_size: int = 64) -> list[str]:
        """A prediction per input: a text, or a dict holding every field of a template with several."""
        items = [inputs] if isinstance(inputs, str | dict) else list(inputs)
        fields = self.task.fields_from_texts([json.dumps(i) if isinstance(i, dict) else i for i in items])
        return self.method.predictions(self.model, self.task, [Example(f) for f in fields], batch_size, False)

    def evaluate(self, source: str, batch_size: int = 64, progress: bool = False, **data: Any) -> dict[str, float]:
        """The task's metrics on a data file or hub dataset (`glue:sst2@validation`), read with the columns the run
        was trained with; keywords set data options (text_column=..., limit_validation=...) for this file."""
        recorded = {**dataclasses.asdict(self.data), "limit_validation": None}  # the whole file unless limited here
        options = section(DataOptions, "data", {**recorded, **data})
        task = make_task(options)
        task.prepare(self.model)
        examples = task.load(source, options.limit_validation)
        return self.method.evaluate(self.model, task, examples, batch_size, progress)


def load(
    path: str | Path,
    device: str | None = None,
    dtype: str | None = None,
    *,
    model: "str | Mapping | None" = None,
    allow_other_model: bool = False,
) -> Predictor:
    """A Predictor for a prompt file, or for a run's output folder of any method (prompt, model, prefix, lora,
    adapter, prompt-design), on `device` (None: CUDA when available) with its weights in `dtype` (None: as recorded).
    `model` names another model than the recorded one: a hub name or folder, or a dict of model options."""
    path = Path(path)
    check_device(device or "auto")
    given = {"name": model} if isinstance(model, str) else dict(model or {})
    if "name" in given and "family" not in given:
        given["family"] = None  # another model: its own family, detected
    if dtype is not None:
        given["dtype"] = dtype
    section(ModelOptions, "model", given)  # a misspelt option or a bad value refused before anything loads
    device = pick_device(device or "auto")
    if path.is_dir() and (path / RESULTS_FILE).is_file():
        return _run_folder(path, device, given, allow_other_model)
    prompt_file = path / "prompt.safetensors" if path.is_dir() else path
    if not prompt_file.is_file():
        raise UserError(f"{path}: neither a prompt file nor a run's output folder (it has no {RESULTS_FILE})")
    frozen, files = load_with_prompts(
        [str(prompt_file)], section(ModelOptions, "model", given), allow_other_model, device
    )
    data = task_options(files[0], where=str(prompt_file))
    return _ready(frozen, make_method(MethodOptions(name="prompt")), data, str(prompt_file))


def _run_folder(folder: Path, device: str, given: dict, allow_other_model: bool) -> Predictor:
    """The newest run's result in `folder`, with the options its row of results.jsonl records (`given` model options
    replacing the recorded ones)."""
    report = folder / RESULTS_FILE
    try:
        row = json.loads([line for line in report.read_text(encoding="utf-8").splitlines() if line.strip()][-1])
        config = row["config"]
        recorded = {name: dict(config.get(name) or {}) for name in ("model", "method", "prompt", "data")}
    except (IndexError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise UserError(f"{report}: its last line is not a run's report") from None
    method = make_method(_known(MethodOptions, recorded["method"]), _known(PromptOptions, recorded["prompt"]))
    saved = method.path(folder)
    # a run writes its result, then appends its report: a result much newer than the report is a later run's, which
    # has not finished (a folder copied whole keeps the two within moments of each other)
    if saved.exists() and saved.stat().st_mtime > report.stat().st_mtime + 2:
        raise UserError(
            f"{saved}: written after the last report in {report}, by a run that has not finished; load it when that "
            f"run ends (or resume it with --train.resume=true)"
        )
    method.allow_other_model = allow_other_model
    fields = {f.name for f in dataclasses.fields(ModelOptions)}  # a report of an earlier version may hold others
    options = section(ModelOptions, "model", {**{k: v for k, v in recorded["model"].items() if k in fields}, **given})
    frozen = method.load(SoftPromptModel.load(options), folder).to(device)
    return _ready(frozen, method, _known(DataOptions, recorded["data"]), str(folder))


def _ready(model: SoftPromptModel, method: Method, data: DataOptions, where: str) -> Predictor:
    try:
        task = make_task(data)
    except UserError as e:
        raise UserError(f"{where}: the recorded task: {e}") from None
    task.prepare(model)
    return Predictor(model, method, task, data)


def _known(cls, values: Mapping):
    """`cls` from the recorded values of its fields (a file of an earlier version may lack some, or hold others)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def section(cls, name: str, value):
    """An Options dataclass from itself, None (its defaults) or a dict of its options, checked by the command
    line's parser (a misspelt option or a wrong type is refused in one line)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise UserError(f"{name}: give a dict of its options or a {cls.__name__}, not {type(value).__name__}")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, name)
    try:
        return parser.instantiate(parser.parse_object({name: dict(value)}))[name]
    except ArgumentError as e:
        raise UserError(_refusal(str(e), cls, name)) from None


def _refusal(message: str, cls, name: str) -> str:
    """jsonargparse's refusal of a section's dict in one line, naming the option as the dict spells it."""
    unknown = re.search(r"does not accept option '([^']+)'", message)
    if unknown:
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        return f"{name}: {unknown[1]!r} is not one of its options ({known})"
    key, given = re.search(r'Parser key "([^"]+)"', message), re.search(r"(?:Given|Got) value: ?(.*)", message)
    if key and given:
        kinds = re.findall(r"Expected an? <class '(\w+)'>|typing\.Literal\[(.*?)\]", message)
        takes = " or ".join(dict.fromkeys(kind or f"one of {literal}" for kind, literal in kinds))
        return f"{key[1]}: {given[1].strip()!r} is not a valid value" + (f" (it takes {takes})" if takes else "")
    return " ".join(message.split())
