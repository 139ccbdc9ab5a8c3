"""A run's set-up, and what every run does whether it trains or not: evaluate on validation (sharded over the
processes), save the method's result, and append the run's report to results.jsonl."""

import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object, parse_flag_from_env

from softprompt.errors import UserError, first_line
from softprompt.methods import Method
from softprompt.methods.prompt import T5_TYPES
from softprompt.models.model import SoftPromptModel
from softprompt.models.sharding import SHARDED, forget_zero3, fsdp_not_run, gathered, keep_prompt_whole, to_device
from softprompt.options import TrainOptions
from softprompt.tasks import Example, Task
from softprompt.training import run_output
from softprompt.training.accumulate import accumulation_steps, micro_batch
from softprompt.training.run_report import PeakMemory, TrainResult, run_report
from softprompt.training.step_modes import autocast_for, enable_gradient_checkpointing, resolve_precision


class Run:
    """One run of `method` on `task`: the accelerator, the precision and the method's parameters on the device, all
    set up before anything is written."""

    def __init__(
        self,
        model: SoftPromptModel,
        method: Method,
        task: Task,
        train_examples: list[Example],
        validation_examples: list[Example] | None,
        o: TrainOptions,
        output_dir: Path,
        progress: bool,
    ):
        self.model, self.method, self.task, self.o = model, method, task, o
        self.validation_examples, self.output_dir, self.progress = validation_examples, output_dir, progress
        self.accelerator = accelerator = start_accelerate(log_with="tensorboard", project_dir=str(output_dir))
        if accelerator.num_processes > 1:
            self.say(f"processes: {accelerator.num_processes} ({accelerator.distributed_type.value})")
        if note := fsdp_not_run(accelerator):
            self.say(note)
        self.precision = resolve_precision(o.precision, accelerator.device.type)
        if self.precision == "fp16" and model.base.config.model_type in T5_TYPES:
            self.say("warning: T5 overflows in float16 (NaN losses); --train.precision=bf16 is the safe choice")
        self.scaler = torch.amp.GradScaler(accelerator.device.type) if self.precision == "fp16" else None
        self.accum = accumulation_steps(o.batch_size, o.micro_batch_size, accelerator.num_processes)
        self.micro_batch = micro_batch(o.batch_size, o.micro_batch_size, accelerator.num_processes)
        self.max_steps = math.ceil(o.epochs * len(train_examples) / o.batch_size) if o.epochs else o.max_steps
        if self.max_steps < 1:
            raise UserError("--train.max_steps must be at least 1")

        self.base_parameters = model.base_parameters()
        to_device(accelerator, model, method.trains)
        self.memory = PeakMemory(
            accelerator.device
        )  # above the process holding the model on its device (FSDP: in CPU memory)
        self.started = time.perf_counter()
        method.prepare(model, task, train_examples, o.seed)
        model.input_budget(
            task.options.max_input_length, task.options.max_target_length
        )  # the prompt leaves room for inputs
        model.check_label_room(getattr(task, "label_texts", []))  # and, on an encoder, for its label texts
        to_device(accelerator, model, method.trains)
        if o.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.params = method.parameters(model)
        self.unsynced = keep_prompt_whole(
            accelerator, model, method.name, self.params
        )  # sharded: the bank's trained parameters
        self.metadata = {**model.identity(), **method.metadata(), "task": task.describe(), "training": asdict(o)}
        self.log_path = output_dir / run_output.LOG_FILE
        self.result = TrainResult(method.path(output_dir), lr=o.lr, output_dir=Path(output_dir))
        self.eval_seconds = 0.0

    def autocast(self):
        return autocast_for(self.precision, self.accelerator.device.type)

    def say(self, message: str) -> None:
        run_output.say(message, self.accelerator)

    def log(self, record: dict) -> None:
        run_output.log(self.log_path, record, self.accelerator)

    def save(self, scores: dict, step: int, **extra) -> None:
        """The method's result as it stands, with these scores (the main process)."""
        if self.accelerator.is_main_process:
            self.method.save(self.model, self.output_dir, {**self.metadata, "metrics": scores, "step": step, **extra})

    def score(self, step: int) -> dict[str, float]:
        """The metrics on validation, logged and kept in the result's history."""
        begun = time.perf_counter()
        with self.autocast():
            scores = evaluate_sharded(
                self.method,
                self.model,
                self.task,
                self.validation_examples,
                self.o.eval_batch_size,
                self.progress and self.accelerator.is_main_process,
                self.accelerator,
            )
        self.model.clear_caches()  # the prompt's keys/values and label anchors are stale after the next step
        self.eval_seconds += time.perf_counter() - begun
        record = {"step": step, **{f"eval/{k}": v for k, v in scores.items()}}
        self.result.history.append(record)
        self.log(record)
        return scores

    def finish(self, append: bool = True) -> TrainResult:
        """The result and its report, appended to results.jsonl when `append` (the main process)."""
        forget_zero3(self.accelerator)
        if self.accelerator.is_main_process:
            seconds = time.perf_counter() - self.started
            self.result.report = run_report(self, seconds - self.eval_seconds)
            if append:
                run_output.log(self.output_dir / run_output.RESULTS_FILE, self.result.report, self.accelerator)
        return self.result


def start_accelerate(**kwargs) -> Accelerator:
    """accelerate, started for this launch and its config and checked (`check_launch`); what accelerate cannot start
    with (an FSDP 1 config on CPUs, ...) stops with one line. `softprompt train` starts it before the model loads, so
    that a wrong launch costs no loading time (and under DeepSpeed the model then loads partitioned, sharding.py)."""
    try:
        accelerator = Accelerator(**kwargs)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"accelerate cannot start with this launch and its config: {first_line(e)}") from None
    check_launch(accelerator)
    return accelerator


def check_launch(accelerator: Accelerator) -> None:
    """Refuse in one line what accelerate would run wrongly: processes that each count themselves alone, and
    accelerate's own mixed precision on top of softprompt's."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun and accelerate launch (not on TPUs)
    if (
        accelerator.num_processes != launched and accelerator.distributed_type != DistributedType.XLA
    ):  # off GPUs, not told to use the CPU
        asked = accelerator.distributed_type == DistributedType.DEEPSPEED or parse_flag_from_env(
            "ACCELERATE_USE_DEEPSPEED"
        )
        deepspeed = "; DeepSpeed shards over GPUs only" if asked else ""
        raise UserError(
            f"accelerate counts {accelerator.num_processes} of the {launched} processes launched, so they would not train together: on CPUs launch with ACCELERATE_USE_CPU=1 (torchrun or accelerate launch){deepspeed}"
        )
    if accelerator.mixed_precision != "no":
        raise UserError(
            f"mixed_precision {accelerator.mixed_precision} in the accelerate config, its launch options or the DeepSpeed config: softprompt sets the precision itself (--train.precision), so set it to no"
        )


def evaluate_sharded(
    method: Method,
    model: SoftPromptModel,
    task: Task,
    examples: list[Example],
    batch_size: int,
    progress: bool,
    accelerator: Accelerator,
) -> dict[str, float]:
    """The method's metrics on `examples`, each process predicting a contiguous share (no example twice, none
    padded in); the predictions are gathered in the examples' order and scored once, the same on every process.
    Under FSDP and DeepSpeed every forward pass gathers weights from all processes, so each evaluates everything,
    in step with the others."""
    if accelerator.num_processes == 1 or accelerator.distributed_type in SHARDED:
        with gathered(model):
            return method.evaluate(model, task, examples, batch_size, progress)
    n, k, rank = len(examples), accelerator.num_processes, accelerator.process_index
    share = examples[rank * n // k : (rank + 1) * n // k]
    predictions = gather_object(method.predictions(model, task, share, batch_size, progress))  # shares in rank order
    return task.score(predictions, examples)
