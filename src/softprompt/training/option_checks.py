"""The checks of a recipe's prompt, data and train sections, run by each command before anything loads: they know
the initialisers, the tasks and how a batch is split; a message names the option as typed on the command line."""

import os
from pathlib import Path
from typing import get_args

from softprompt.checks import (
    MAX_SCALE,
    MAX_SIZE,
    MAX_TARGET_LENGTH,
    at_least,
    at_most,
    finite,
    not_negative,
    output_folder,
    positive,
    valid_seed,
    valid_size,
)
from softprompt.data.readers import is_local
from softprompt.errors import UserError
from softprompt.methods.prompt import INITIALISERS, init_file
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import check_name
from softprompt.tasks.base import local_split
from softprompt.training.accumulate import accumulation_steps


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
    if o.init not in INITIALISERS:
        init_file(o)  # a prompt file: readable, and its DePT offset (if any) fits the run


def check_data(o: DataOptions) -> None:
    check_name(o.task)
    at_least("--data.max_input_length", o.max_input_length, 1)
    at_least("--data.max_target_length", o.max_target_length, 1)
    at_most("--data.max_target_length", o.max_target_length, MAX_TARGET_LENGTH)
    at_least("--data.limit_train", o.limit_train, 1)
    at_least("--data.limit_validation", o.limit_validation, 1)


def check_data_files(o: DataOptions, prefix: str = "--data.") -> None:
    """Refuse a local training or validation file that does not exist or is a folder, before a model loads."""
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
