"""Option checks run by each command before anything loads; a message names the option as typed on the command line.

The checks of a recipe's prompt, data and train sections, which know the methods, tasks and batching, are in
training/option_checks.py."""

import math
import os
import re
from dataclasses import fields
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

from softprompt.errors import UserError
from softprompt.options import ModelOptions

MAX_SEED = 2**32 - 1  # numpy, seeded with the rest, takes no larger seed
MAX_SIZE = 1_000_000  # a prompt length, width or rank beyond any model: refused before it allocates
MAX_SCALE = 1000.0  # a random prompt's range or the encoder readout's scale past which float32 overflows, not learns
MAX_TARGET_LENGTH = 4096  # tokens a target (or a generated answer) may have: a longer one generates for minutes


TAKES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    dict: "a mapping",
    list: "a list",
}


def not_null(section: str, options) -> None:
    """Refuse null for an option of `options` (a section's dataclass) that takes none: a recipe file can write it,
    and jsonargparse lets it through there."""
    hints = get_type_hints(type(options))
    for f in fields(options):
        kinds = get_args(hints[f.name]) if get_origin(hints[f.name]) in (Union, UnionType) else (hints[f.name],)
        if getattr(options, f.name) is None and type(None) not in kinds:
            kind = kinds[0]
            takes = (
                f"one of {', '.join(map(str, get_args(kind)))}"
                if get_origin(kind) is Literal
                else TAKES.get(get_origin(kind) or kind, str(kind))
            )
            raise UserError(f"--{section}.{f.name}: null is not a valid value: it takes {takes}")


def finite(option: str, value: float | None) -> None:
    """Refuse NaN and infinities (YAML's .nan and .inf); None means unset and passes."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{option} must be a finite number (got {value})")


def at_least(option: str, value: float | None, low: float) -> None:
    """Refuse `value` below `low`, or not finite; None means unset and passes."""
    finite(option, value)
    if value is not None and value < low:
        raise UserError(f"{option} must be at least {low} (got {value})")


def at_most(option: str, value: float | None, high: float) -> None:
    if value is not None and value > high:
        raise UserError(f"{option} must be at most {high} (got {value})")


def not_negative(option: str, value: float | None) -> None:
    finite(option, value)
    if value is not None and value < 0:
        raise UserError(f"{option} must not be negative (got {value})")


def positive(option: str, value: float | None) -> None:
    finite(option, value)
    if value is not None and value <= 0:
        raise UserError(f"{option} must be more than 0 (got {value})")


def valid_seed(option: str, value: int | None) -> None:
    not_negative(option, value)
    at_most(option, value, MAX_SEED)


def valid_size(option: str, value: int | None, low: int = 1) -> None:
    """A count that sets how much memory is allocated (a prompt length, a width, a rank)."""
    at_least(option, value, low)
    at_most(option, value, MAX_SIZE)


def output_folder(option: str, folder: str) -> None:
    """Refuse an output folder that is a file, lies under a file, or cannot be created or written."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option}: {folder} is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option}: {folder} lies under {existing}, which is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option}: {existing} is not writable")


def check_model(o: ModelOptions) -> None:
    positive("--model.readout_scale", o.readout_scale)
    at_most("--model.readout_scale", o.readout_scale, MAX_SCALE)


def check_device(device: str) -> None:
    """--device is auto, cpu, or cuda[:N] naming a GPU this machine has."""
    if device in ("auto", "cpu"):
        return
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise UserError(f"--device: {device!r} is not auto, cpu or cuda[:N]")
    index = device.removeprefix("cuda").removeprefix(":")
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here")
    if index and int(index) >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_predict(batch_size: int) -> None:
    at_least("--batch_size", batch_size, 1)


def check_quickstart(output: str, steps: int, seed: int) -> None:
    at_least("--steps", steps, 1)
    valid_seed("--seed", seed)
    output_folder("--output", output)
