"""Loading a frozen model together with prompt files, checking each prompt belongs to it."""

from pathlib import Path

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.prompt_file import PromptFile, check_compatible, load_prompt
from softprompt.models.loading import pick_device
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions, ModelOptions
from softprompt.tasks import Task, make_task


def load_with_prompts(
    paths: list[str], model: ModelOptions | None = None, allow_other_model: bool = False, device: str = "cpu"
) -> tuple[SoftPromptModel, list[PromptFile]]:
    """The model the prompts were trained on (or `model.name`), on `device` (auto: CUDA when available), with a bank
    holding every prompt, named by file stem."""
    if not paths:
        raise UserError("give at least one prompt file")
    files = [load_prompt(p) for p in paths]
    model = model or ModelOptions()
    name = model.name or files[0].metadata.get("base_model")
    if not name:
        raise UserError(f"{paths[0]}: the prompt file does not name its base model; pass --model.name")
    frozen = SoftPromptModel.load(model, name=name, family=model.family or files[0].metadata.get("family"))
    for path, file in zip(paths, files):
        check_compatible(file, frozen.hidden, frozen.fingerprint(), path, allow_other_model)
    names = _unique_names([Path(p).stem if Path(p).stem != "prompt" else Path(p).parent.name for p in paths])
    frozen.bank = PromptBank([f.prompt for f in files], names, [f.offset for f in files])
    return frozen.to(pick_device(device)), files


def same_task(paths: list[str], files: list[PromptFile]) -> None:
    """Refuse prompts that were trained for different tasks (type, template or labels differ)."""
    first = files[0].metadata.get("task", {})
    keys = ("type", "template", "verbalizers")
    for path, file in zip(paths[1:], files[1:]):
        task = file.metadata.get("task", {})
        differ = [k for k in keys if task.get(k) != first.get(k)]
        if differ:
            raise UserError(
                f"{path}: its task differs from {paths[0]}'s ({', '.join(differ)}): an ensemble takes prompts of one task"
            )


def task_options(file: PromptFile, overrides: DataOptions | None = None, where: str = "the prompt file") -> DataOptions:
    """The task settings recorded in a prompt file (`where`, for messages), with any option that differs from the
    default taken from `overrides`. A file that records no task (an imported prompt) needs `overrides`."""
    task = file.metadata.get("task")
    if task is None and overrides is None:
        raise UserError(
            f"{where}: records no task (an imported prompt): record one with softprompt import SOURCE --output P --data.task TASK, and --data.verbalizers for classification"
        )
    task = task or {}
    options = DataOptions(
        task=task.get("type", "classification"),
        verbalizers=task.get("verbalizers", {}),
        template=task.get("template", "{}"),
        max_input_length=task.get("max_input_length", 512),
        max_target_length=task.get("max_target_length", 8),
    )
    if overrides is not None:
        default = DataOptions()
        for key, value in vars(overrides).items():
            if value != getattr(default, key):
                setattr(options, key, value)
    return options


def recorded_task(file: PromptFile, where: str) -> Task:
    """The task a prompt file records, as prediction and serving run it; what is wrong with it names the file."""
    options = task_options(file, where=where)
    try:
        return make_task(options)
    except UserError as e:
        raise UserError(f"{where}: the recorded task: {e}") from None


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out
