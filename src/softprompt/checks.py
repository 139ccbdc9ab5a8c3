"""Option checks run by each command before anything loads; a message names the option as typed on the command line."""

import math
import os
from dataclasses import fields
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

from softprompt.errors import UserError
from softprompt.options import DataOptions, ModelOptions, PromptOptions, TrainOptions

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


def check_prompt(o: PromptOptions) -> None:
    valid_size("--prompt.length", o.length)
    at_least("--prompt.vocab_first_n", o.vocab_first_n, 1)
    not_negative("--prompt.random_scale", o.random_scale)
    at_most("--prompt.random_scale", o.random_scale, MAX_SCALE)
    names = get_args(PromptOptions.__annotations__["reparam"])
    if o.reparam not in names:
        raise UserError(f"--prompt.reparam: unknown reparameterisation {o.reparam!r} ({', '.join(names)})")
    valid_size("--prompt.bottleneck", o.bottleneck)
    valid_size("--prompt.rank", o.rank)
    valid_seed("--prompt.projection_seed", o.projection_seed)
    valid_size("--prompt.dept_positions", o.dept_positions, 0)
    valid_size("--prompt.dept_rank", o.dept_rank)
    if o.dept_positions and o.reparam != "none":
        raise UserError(
            f"--prompt.dept_positions: DePT trains a plain prompt beside its offset, not with --prompt.reparam={o.reparam}"
        )
    finite("--prompt.reparam_dropout", o.reparam_dropout)
    if not 0 <= o.reparam_dropout < 1:
        raise UserError(f"--prompt.reparam_dropout must be in [0, 1) (got {o.reparam_dropout})")
    from softprompt.methods.prompt import INITIALISERS, init_file

    if o.init not in INITIALISERS:
        init_file(o)  # a prompt file: readable, and its DePT offset (if any) fits the run


def check_data(o: DataOptions) -> None:
    from softprompt.tasks import check_name

    check_name(o.task)
    at_least("--data.max_input_length", o.max_input_length, 1)
    at_least("--data.max_target_length", o.max_target_length, 1)
    at_most("--data.max_target_length", o.max_target_length, MAX_TARGET_LENGTH)
    at_least("--data.limit_train", o.limit_train, 1)
    at_least("--data.limit_validation", o.limit_validation, 1)


def check_data_files(o: DataOptions, prefix: str = "--data.") -> None:
    """Refuse a local training or validation file that does not exist or is a folder, before a model loads."""
    from softprompt.data.readers import is_local
    from softprompt.tasks.base import local_split

    for option in ("train", "validation"):
        source = getattr(o, option)
        file = local_split(source)[0] if source else None
        if file and is_local(file):
            if Path(file).expanduser().is_dir():
                raise UserError(f"{prefix}{option}: {file}: is a folder; give a data file")
            if not Path(file).expanduser().exists():
                raise UserError(f"{prefix}{option}: {file}: no such file")


def check_train(o: TrainOptions) -> None:
    for name in ("batch_size", "micro_batch_size", "eval_every", "eval_batch_size", "log_every", "patience"):
        at_least(f"--train.{name}", getattr(o, name), 1)
    for name in ("batch_size", "micro_batch_size", "eval_batch_size"):  # rows held at once, or drawn in one step
        at_most(f"--train.{name}", getattr(o, name), MAX_SIZE)
    for name in ("lr", "dept_lr", "weight_decay", "warmup_steps"):  # lr may be None: an automatic default
        not_negative(f"--train.{name}", getattr(o, name))
    valid_seed("--train.seed", o.seed)
    for name in ("decay_rate", "clip_threshold", "max_grad_norm"):
        positive(f"--train.{name}", getattr(o, name))
    at_least("--train.keep_checkpoints", o.keep_checkpoints, 1)
    not_negative("--train.save_every", o.save_every)
    positive("--train.epochs", o.epochs)
    at_most("--train.epochs", o.epochs, MAX_SIZE)
    if o.epochs is None:
        at_least("--train.max_steps", o.max_steps, 1)
    from softprompt.training.accumulate import accumulation_steps

    accumulation_steps(
        o.batch_size, o.micro_batch_size, int(os.environ.get("WORLD_SIZE", "1"))
    )  # processes: set by torchrun and accelerate launch
    output_folder("--train.output_dir", o.output_dir)


def check_training_command(prompt: PromptOptions, data: DataOptions, train: TrainOptions) -> None:
    """softprompt train."""
    check_prompt(prompt)
    check_data(data)
    check_train(train)
    if not data.train:
        raise UserError("--data.train: give a training file")


def check_eval(data: DataOptions, train: TrainOptions) -> None:
    """softprompt eval: the data section and the evaluation batch size; the rest of the recipe is unused."""
    check_data(data)
    at_least("--train.eval_batch_size", train.eval_batch_size, 1)
    check_data_files(data)


def check_predict(batch_size: int) -> None:
    at_least("--batch_size", batch_size, 1)


def check_quickstart(output: str, steps: int, seed: int) -> None:
    at_least("--steps", steps, 1)
    valid_seed("--seed", seed)
    output_folder("--output", output)
