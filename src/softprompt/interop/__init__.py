"""Prompts in other tools' formats: PEFT prompt-tuning adapters (peft.py) and the official prompt-tuning .npy files
(npy.py).

`import_prompt` turns either into a prompt file that records where it came from (path, format, sha256) and the model
it belongs to, checked against that model when it can be loaded.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from softprompt.errors import UserError
from softprompt.files.prompt_file import save_prompt
from softprompt.models.model import SoftPromptModel


@dataclass
class Imported:
    prompt: torch.Tensor  # (P, H) float32
    source: dict  # path, format, sha256, and what the format adds
    base_model: str | None = None  # the model the source names, if any
    family: str | None = None


def read_source(source: str) -> Imported:
    """A PEFT adapter folder or a .npy file."""
    from softprompt.interop import npy, peft

    path = Path(source)
    if path.is_dir():
        return peft.read_adapter(path)
    if path.suffix.lower() == ".npy" and path.is_file():
        return npy.read_npy(path)
    if not path.exists():
        raise UserError(f"{source}: no such file or folder")
    raise UserError(f"{source}: not a PEFT adapter folder or a .npy file")


def import_prompt(
    source: str,
    output: str,
    model_name: str | None = None,
    family: str | None = None,
    dtype: str = "auto",
    task: dict | None = None,
) -> tuple[Path, str | None]:
    """Write SOURCE as the prompt file `output`, recording `task` (Task.describe) when given; returns its path and a
    note when its width could not be checked."""
    imported = read_source(source)
    name = model_name or imported.base_model
    if not name:
        unnamed = (
            "a .npy file does not name its model"
            if imported.source["format"] == "npy"
            else "the adapter names no base_model_name_or_path"
        )
        raise UserError(f"{source}: {unnamed}; pass --model.name")
    identity, note = base_identity(name, family or imported.family, imported.prompt.shape[1], source, dtype)
    metadata = {**identity, "init": "import", "source": imported.source, **({"task": task} if task else {})}
    if note:
        metadata["note"] = note
    return save_prompt(output, imported.prompt, metadata), note


def base_identity(
    name: str, family: str | None, width: int, source: str, dtype: str = "auto"
) -> tuple[dict, str | None]:
    """The model's identity as prompt files record it, its width checked; when a hub model cannot be loaded (offline),
    only its name and family, with a note saying the width went unchecked."""
    try:
        model = SoftPromptModel.load(name, family=family, dtype=dtype)
    except UserError as e:
        if _is_local(name):
            raise
        note = f"width {width} not checked: {name} could not be loaded ({e})"
        return {"base_model": name, **({"family": family} if family else {})}, note
    if model.hidden != width:
        raise UserError(f"{source}: prompt width {width} does not match the hidden size {model.hidden} of {name}")
    return model.identity(), None


def _is_local(name: str) -> bool:
    """A model name meant as a local folder (the rule of model.resolve_model_path)."""
    return os.path.exists(os.path.expanduser(name)) or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
