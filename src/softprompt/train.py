"""The training loop, on accelerate: the same code on one CPU, one GPU, or many under `accelerate launch`/`torchrun`.

The optimiser gets the parameters the method names (methods/): for prompt tuning the prompt bank alone, so the frozen
model's weights never change. Every run appends its report to OUTPUT/results.jsonl. Checkpoints (checkpoint.py) let a
killed run continue with --train.resume=true to the prompt an uninterrupted run reaches.
"""

import contextlib
import datetime
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.optimization import Adafactor

from softprompt import checkpoint
from softprompt.errors import UserError, first_line
from softprompt.files import append_line, clear_temporaries, human_size, write_text_atomic
from softprompt.methods import METHODS, Method, make_method
from softprompt.methods.prompt import PAPER_LR, PROMPT_FILE, T5_EMBEDDING_RMS, T5_TYPES, default_lr, initial_prompt  # noqa: F401  re-exported
from softprompt.model import SoftPromptModel
from softprompt.options import MethodOptions, PromptOptions, TrainOptions
from softprompt.tasks import Example, Task

try:
    import resource
except ImportError:  # not on Windows
    resource = None

LOG_FILE = "metrics.jsonl"
RESULTS_FILE = "results.jsonl"


class NonFinite(UserError):
    """The loss, a gradient or a trained parameter became NaN or infinite: training stops, keeping what was saved."""


class PromptAdafactor(Adafactor):
    """Adafactor as in T5X, the paper's code: a full (unfactored) second moment for the prompt, and weight decay
    applied as p <- (1 - weight_decay) p every step, whatever the learning rate (transformers' Adafactor would
    take p <- p - weight_decay * lr * p)."""

    def __init__(self, params, weight_decay: float = 0.0, **kwargs):
        super().__init__(params, weight_decay=0.0, **kwargs)
        for group in self.param_groups:
            group["t5x_weight_decay"] = weight_decay

    @staticmethod
    def _get_options(param_group, param_shape):
        factored, use_first_moment = Adafactor._get_options(param_group, param_shape)
        return factored and param_group.get("factored", True), use_first_moment

    @torch.no_grad()
    def step(self, closure=None):
        # T5X: new = (1 - wd) * p - lr * update; the update does not depend on p (no parameter scaling), so
        # decaying p first and then taking Adafactor's step gives exactly that
        for group in self.param_groups:
            if group["t5x_weight_decay"]:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1 - group["t5x_weight_decay"])
        return super().step(closure)


def make_optimizer(params: list, o: TrainOptions) -> torch.optim.Optimizer:
    """The optimiser over `params`: parameters, or parameter groups (dicts, which may set their own lr)."""
    if o.lr is None:
        raise ValueError("resolve train.lr (default_lr) before making the optimiser")
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    if o.optimizer == "adafactor":
        return PromptAdafactor(
            [{**group, "factored": False} for group in groups],
            lr=o.lr,
            relative_step=False,
            scale_parameter=False,
            warmup_init=False,
            decay_rate=-o.decay_rate,  # transformers takes the exponent's sign: beta2_t = 1 - t^-0.8
            weight_decay=o.weight_decay,
            clip_threshold=o.clip_threshold,
        )
    if o.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    raise UserError(f"--train.optimizer: unknown optimiser {o.optimizer!r} (adafactor, adamw)")


def resolve_precision(option: str, device_type: str) -> str:
    """bf16 autocast on CUDA when auto, never on CPU unless asked ("bf16", "fp16" or "no")."""
    if option in ("bf16", "fp16"):
        return option
    return "bf16" if option == "auto" and device_type == "cuda" else "no"


def accumulation_steps(batch_size: int, micro_batch_size: int, processes: int) -> int:
    micro = min(micro_batch_size, batch_size)
    per_step = micro * processes
    if batch_size % per_step:
        raise UserError(f"--train.batch_size {batch_size} is not a multiple of --train.micro_batch_size x processes = {per_step}")
    return batch_size // per_step


@dataclass
class TrainResult:
    prompt_path: Path  # what was saved: the prompt file, or the method's own file or folder (methods/)
    metrics: dict[str, float] = field(default_factory=dict)  # at the best evaluation
    best_step: int = 0
    steps: int = 0
    lr: float = 0.0  # the learning rate used (train.lr, or its default for the model)
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # the run's row of results.jsonl (on the main process)


def backward_accumulated(wrapped, micro_batches: list[dict], accelerator: Accelerator, autocast, step: int, params: list | None = None, scaler=None) -> float:
    """Backpropagate micro-batches so that the trained parameters' gradient (`params`; the prompt bank's when None) is
    that of one batch holding them all, on every process together: each micro-batch's summed loss is divided by the
    number of loss items (target tokens, or rows for encoder-only classification) in the whole effective batch.
    Returns that batch's mean loss.

    A mean per micro-batch would weigh a token of a short-target micro-batch more than one of a long-target one.
    With a loss scaler (fp16) the losses are scaled up and the gradients left scaled, for the scaler's step."""
    total_loss = torch.zeros((), device=accelerator.device)
    total_items = torch.zeros((), device=accelerator.device)
    for k, batch in enumerate(micro_batches):
        sync = contextlib.nullcontext() if k == len(micro_batches) - 1 else accelerator.no_sync(wrapped)
        with sync, autocast():
            out = wrapped(**batch)
            if not torch.isfinite(out.loss_sum):
                raise NonFinite(f"the loss became {out.loss_sum.item()} at step {step}: lower --train.lr, or use --train.precision=fp32")
            loss = out.loss_sum * accelerator.num_processes  # DDP averages over processes: undo it
            accelerator.backward(scaler.scale(loss) if scaler else loss)
        total_loss += out.loss_sum.detach().float()
        total_items += out.loss_items
    totals = accelerator.reduce(torch.stack([total_loss, total_items]), reduction="sum")  # over processes
    items = totals[1].clamp(min=1)
    for p in accelerator.unwrap_model(wrapped).bank.parameters() if params is None else params:
        if p.grad is not None:
            p.grad /= items
    return (totals[0] / items).item()


def train_prompt(
    model: SoftPromptModel,
    task: Task,
    train_examples: list[Example],
    validation_examples: list[Example] | None,
    prompt_options: PromptOptions,
    o: TrainOptions,
    output_dir: str | Path,
    progress: bool = True,
    allow_other_model: bool = False,
) -> TrainResult:
    """Learn one prompt for `task`; the best one (by the task's metric on validation) is written to output_dir.

    Nothing is written until training starts; from then on the run replaces any earlier run in output_dir."""
    method = make_method(MethodOptions(), prompt_options, allow_other_model)
    return train(model, method, task, train_examples, validation_examples, o, output_dir, progress)


def train(
    model: SoftPromptModel,
    method: Method,
    task: Task,
    train_examples: list[Example],
    validation_examples: list[Example] | None,
    o: TrainOptions,
    output_dir: str | Path,
    progress: bool = True,
) -> TrainResult:
    """Adapt `model` to `task` with `method` (methods.make_method); its best result (by the task's metric on
    validation) is saved in output_dir, and the run's report is appended to output_dir/results.jsonl.

    Nothing is written until training starts; from then on the run replaces any earlier run in output_dir, except
    results.jsonl, which keeps a row for every run."""
    output_dir = Path(output_dir)
    task.prepare(model)  # refuses a task the model cannot do, before anything is written
    if not method.trains and not validation_examples:
        raise UserError(f"--data.validation: {method.name} trains nothing and is scored on validation data; give it")
    o = method.training_options(model, o)
    set_seed(o.seed)
    accelerator = Accelerator(log_with="tensorboard", project_dir=str(output_dir))
    precision = resolve_precision(o.precision, accelerator.device.type)
    if precision == "fp16" and model.base.config.model_type in T5_TYPES:
        _say("warning: T5 overflows in float16 (NaN losses); --train.precision=bf16 is the safe choice", accelerator)
    scaler = torch.amp.GradScaler(accelerator.device.type) if precision == "fp16" else None

    def autocast():  # our own autocast: accelerate's mixed-precision setting is fixed once per process
        if precision == "no":
            return contextlib.nullcontext()
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    accum = accumulation_steps(o.batch_size, o.micro_batch_size, accelerator.num_processes)
    max_steps = math.ceil(o.epochs * len(train_examples) / o.batch_size) if o.epochs else o.max_steps
    if max_steps < 1:
        raise UserError("--train.max_steps must be at least 1")

    base_parameters = model.base_parameters()
    model.to(accelerator.device)
    memory = PeakMemory(accelerator.device)  # above the process holding the model on its device
    started = time.perf_counter()
    method.prepare(model, task, train_examples, o.seed)
    model.input_budget(task.options.max_input_length, task.options.max_target_length)  # the prompt leaves room for inputs
    model.to(accelerator.device)
    if o.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    params = method.parameters(model)
    metadata = {
        **model.identity(),
        **method.metadata(),
        "task": task.describe(),
        "training": asdict(o),
    }
    log_path = output_dir / LOG_FILE
    result = TrainResult(method.path(output_dir), lr=o.lr)
    eval_seconds = 0.0

    def save(scores: dict, step: int, **extra) -> None:
        if accelerator.is_main_process:
            method.save(model, output_dir, {**metadata, "metrics": scores, "step": step, **extra})

    def score(step: int) -> dict[str, float]:
        nonlocal eval_seconds
        begun = time.perf_counter()
        with autocast():
            scores = evaluate_sharded(method, model, task, validation_examples, o.eval_batch_size, progress and accelerator.is_main_process, accelerator)
        model.clear_caches()  # the prompt's keys/values and label anchors are stale after the next step
        eval_seconds += time.perf_counter() - begun
        record = {"step": step, **{f"eval/{k}": v for k, v in scores.items()}}
        result.history.append(record)
        _log(log_path, record, accelerator)
        return scores

    def finish() -> TrainResult:
        if accelerator.is_main_process:
            seconds = time.perf_counter() - started
            result.report = run_report(method, model, task, o, params, base_parameters, result, seconds - eval_seconds, eval_seconds, memory)
            _log(output_dir / RESULTS_FILE, result.report, accelerator)
        return result

    if accelerator.is_main_process:
        clear_killed_writes(output_dir)
    if not method.trains:  # prompt design: one evaluation, and the design is saved
        if accelerator.is_main_process:
            _clear_previous_run(output_dir)
        result.metrics = score(0)
        save(result.metrics, 0)
        return finish()

    # the same run, wherever it is resumed: its model, method, task and options
    identity = {"model": model.identity(), "method": method.metadata(), "task": task.describe(), "prompt": asdict(method.prompt_options), "data": asdict(task.options)}
    identity = json.loads(json.dumps(identity, default=str))  # plain values, as a checkpoint reads them back
    checkpoints = accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED)  # sharded state is not gathered yet
    if o.resume and not checkpoints:
        raise UserError("--train.resume: checkpoints are written under data parallel training only, not yet under FSDP or DeepSpeed")
    resumed = checkpoint.latest(output_dir) if o.resume else None
    state = None
    if resumed:
        state, rng = checkpoint.load(resumed, accelerator.process_index, accelerator.num_processes)
        checkpoint.check_same_run(state, identity, asdict(o), resumed)
    elif o.resume:
        _say(f"--train.resume: no checkpoint in {output_dir / checkpoint.CHECKPOINTS}; starting a new run", accelerator)

    generator = torch.Generator()  # reseeded every epoch (_batches), so that a data position is restored exactly
    loader = DataLoader(
        train_examples,
        batch_size=min(o.micro_batch_size, o.batch_size),
        shuffle=True,
        drop_last=len(train_examples) >= o.micro_batch_size,
        collate_fn=lambda rows: {**task.batch(model, rows), "prompt_ids": torch.zeros(len(rows), dtype=torch.long)},
        generator=generator,
    )
    optimizer = make_optimizer(method.param_groups(model, params, o), o)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0)
    wrapped, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    params = method.parameters(model)  # FSDP replaces parameters in place with sharded ones

    best, stale = -math.inf, 0
    saved_best = False  # an evaluated result has been saved
    best_state = None  # the trained parameters at the best evaluation, kept when training went on after it
    running = 0.0  # smoothed training loss for the progress bar
    start = 0  # the last step done before this process began
    if state:
        start, running = state["step"], state["running"]
        shapes = [tuple(t.shape) for t in state["trained"]]
        if shapes != [tuple(p.shape) for p in params]:
            raise UserError(f"--train.resume: {resumed} holds trained tensors of shapes {shapes}, not those this run trains")
        with torch.no_grad():
            for p, saved in zip(params, state["trained"]):
                p.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        if scaler:
            scaler.load_state_dict(state["scaler"])
        best, stale, saved_best, best_state = state["best"], state["stale"], state["saved_best"], state["best_state"]
        if best_state is None and state["best_step"] == start and start < max_steps:  # the best was the last step then
            best_state = [t.clone() for t in state["trained"]]
        result.metrics, result.best_step, result.history, result.stopped_early = state["metrics"], state["best_step"], state["history"], state["stopped_early"]
        if accelerator.is_main_process:
            _keep_log_until(log_path, start)  # steps logged after the checkpoint run again
        _say(f"resuming from {resumed} (step {start})", accelerator)
    elif accelerator.is_main_process:
        _clear_previous_run(output_dir)
    accelerator.init_trackers("tensorboard")
    bar = tqdm(total=max_steps, initial=min(start, max_steps), desc="training", disable=not progress or not accelerator.is_main_process, dynamic_ncols=True)
    save_every = o.eval_every if o.save_every is None else o.save_every

    def save_checkpoint(step: int) -> Path:
        consumed = step * accum  # micro-batches each process has drawn
        training_state = {
            "step": step, "epoch": consumed // len(loader), "batch": consumed % len(loader), "running": running,
            "trained": [p.detach().to("cpu", copy=True) for p in params],
            "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "best": best, "stale": stale, "saved_best": saved_best, "best_state": best_state,
            "metrics": result.metrics, "best_step": result.best_step, "history": result.history, "stopped_early": result.stopped_early,
            "identity": identity, "options": asdict(o), "processes": accelerator.num_processes,
        }
        return checkpoint.save(output_dir, step, training_state, accelerator, o.keep_checkpoints)

    def evaluate(step: int) -> bool:
        """Evaluate, keep the result if it is the best so far; True when patience has run out."""
        nonlocal best, stale, saved_best, best_state
        scores = score(step)
        training_mode(wrapped, o)  # evaluation leaves every layer in train mode, dropout included
        accelerator.log(result.history[-1], step=step)
        if scores[task.metric] > best:
            best, stale = scores[task.metric], 0
            result.metrics, result.best_step = scores, step
            best_state = [p.detach().to("cpu", copy=True) for p in params] if step < max_steps else None
            saved_best = True
            save(scores, step)
        else:
            stale += 1
        bar.set_postfix({"loss": f"{running:.4f}", task.metric: f"{scores[task.metric]:.1f}", "best": f"{best:.1f}"})
        return o.patience is not None and stale >= o.patience

    if state:
        checkpoint.set_rng_state(rng)  # last, so that nothing above draws from the restored generators
    batches = _batches(loader, generator, o.seed, start * accum, accelerator)
    training_mode(wrapped, o)
    step = done = start  # done: the last step whose update is complete
    try:
        with checkpoint.StopSignals() as signals:
            for step in range(start + 1, max_steps + 1):
                if result.stopped_early:  # resumed from the checkpoint of a run that had stopped early
                    step = done
                    break
                step_loss = backward_accumulated(wrapped, [next(batches) for _ in range(accum)], accelerator, autocast, step, params, scaler)
                if scaler:
                    scaler.unscale_(optimizer)
                if o.max_grad_norm:
                    accelerator.clip_grad_norm_(params, o.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer_step(optimizer, step)
                check_finite(params, step)
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                done = step
                running = step_loss if step == 1 else 0.9 * running + 0.1 * step_loss
                bar.update(1)
                bar.set_postfix({"loss": f"{running:.4f}", **({"best": f"{best:.1f}"} if best > -math.inf else {})})
                if step % o.log_every == 0 or step == max_steps:
                    record = {"step": step, "train/loss": step_loss, "train/lr": schedule.get_last_lr()[0]}
                    _log(log_path, record, accelerator)
                    accelerator.log(record, step=step)
                if validation_examples and (step % o.eval_every == 0 or step == max_steps) and evaluate(step):
                    result.stopped_early = True
                    _say(f"early stopping at step {step}: {task.metric} has not improved for {o.patience} evaluations (best {best:.2f} at step {result.best_step})", accelerator)
                stopping = signals.requested(accelerator)
                saved = None
                if checkpoints and (stopping or result.stopped_early or step == max_steps or (save_every and step % save_every == 0)):
                    saved = save_checkpoint(step)
                if stopping:
                    _say(f"stopped by a signal after step {step}: " + (f"checkpoint {saved}; continue with --train.resume=true" if saved else "no checkpoint (FSDP, DeepSpeed)"), accelerator)
                    raise KeyboardInterrupt
                if result.stopped_early:
                    break
    except NonFinite as e:
        kept = [f"{checkpoint.latest(output_dir)} (continue from it with a lower --train.lr and --train.resume=true)"] if checkpoint.latest(output_dir) else []
        kept += [f"{result.prompt_path} (step {result.best_step})"] if saved_best else []
        raise NonFinite(f"{e}; nothing was saved after it" + (f", kept: {' and '.join(kept)}" if kept else "")) from None
    except KeyboardInterrupt:
        bar.close()
        path = result.prompt_path
        if not saved_best:
            save({}, done, interrupted=True)
            _say(f"interrupted after step {done}: saved the {method.result} as it stood (not evaluated) to {path}", accelerator)
        else:
            _say(f"interrupted after step {done}: {path} holds the best {method.result} so far ({task.metric} {best:.2f} at step {result.best_step})", accelerator)
        raise
    finally:
        bar.close()
        accelerator.end_training()
    result.steps = step
    model.eval()
    if best_state is not None and result.best_step != step:
        with torch.no_grad():  # the model leaves training holding the result that was saved
            for p, kept in zip(params, best_state):
                p.copy_(kept)
    if not validation_examples:
        save({}, step)
        result.best_step = step
    return finish()


def optimizer_step(optimizer: torch.optim.Optimizer, step: int) -> None:
    try:
        optimizer.step()
    except RuntimeError as e:  # torch refuses a learning rate that overflows float32 inside its kernels
        if "overflow" not in str(e):
            raise
        raise NonFinite(f"the update overflowed at step {step} ({first_line(e)}): lower --train.lr") from None


def check_finite(params: list, step: int) -> None:
    """Stop when the step left a trained parameter NaN or infinite (a gradient that overflowed, an update too large),
    before anything saves it."""
    if params and not torch.stack([torch.isfinite(p).all() for p in params]).all():
        raise NonFinite(f"the trained parameters became NaN or infinite at step {step} (the gradient or the update overflowed): lower --train.lr, or use --train.precision=fp32")


def clear_killed_writes(output_dir: Path) -> None:
    """Remove the temporary files and folders that a killed run's writes left in output_dir and its checkpoints."""
    names = [method.output for method in METHODS.values()] + [LOG_FILE, RESULTS_FILE]
    clear_temporaries(output_dir, names)
    clear_temporaries(output_dir / checkpoint.CHECKPOINTS)


def evaluate_sharded(method: Method, model: SoftPromptModel, task: Task, examples: list[Example], batch_size: int, progress: bool, accelerator: Accelerator) -> dict[str, float]:
    """The method's metrics on `examples`, each process predicting a contiguous share (no example twice, none
    padded in); the predictions are gathered in the examples' order and scored once, the same on every process.
    Under FSDP and DeepSpeed every forward pass gathers weights from all processes, so each evaluates everything,
    in step with the others."""
    if accelerator.num_processes == 1 or accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return method.evaluate(model, task, examples, batch_size, progress)
    n, k, rank = len(examples), accelerator.num_processes, accelerator.process_index
    share = examples[rank * n // k : (rank + 1) * n // k]
    predictions = gather_object(method.predictions(model, task, share, batch_size, progress))  # shares in rank order
    return task.score(predictions, examples)


def enable_gradient_checkpointing(model: SoftPromptModel) -> None:
    """Recompute the frozen model's activations in the backward pass (non-reentrant: the gradient reaches the prompt
    at the input although no weight requires one)."""
    if not model.base.supports_gradient_checkpointing:
        raise UserError(f"--train.gradient_checkpointing: {model.name} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(model.base, "activation_checkpointing_enable"):  # transformers 5's name
        model.base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def training_mode(model: torch.nn.Module, o: TrainOptions) -> None:
    """The mode of the training steps: train mode (dropout) as train.dropout says. Gradient checkpointing acts only in
    layers in train mode, so without dropout those layers alone are put in it: their attention and dropout modules,
    which read their own mode (some take the dropout rate as a plain number), stay in eval mode."""
    if o.gradient_checkpointing and not o.dropout:
        model.eval()
        for module in model.modules():
            if getattr(module, "gradient_checkpointing", False) is True:
                module.training = True  # this module only, not its children
    else:
        model.train(o.dropout)


class PeakMemory:
    """Memory used above the process as it stood when measuring began: allocated memory on CUDA, else the resident set
    (RSS), whose high-water mark is first reset where Linux allows (/proc/self/clear_refs); elsewhere its growth."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda" if device.type == "cuda" else "rss"
        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
            self.start = _max_rss()

    def peak(self) -> int | None:
        if self.kind == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.start
        return None if self.start is None else _max_rss() - self.start


def _max_rss() -> int | None:
    """The process's resident-set high-water mark in bytes (getrusage counts kilobytes, on macOS bytes)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_report(method: Method, model: SoftPromptModel, task: Task, o: TrainOptions, params: list, base_parameters: int, result: TrainResult, train_seconds: float, eval_seconds: float, memory: PeakMemory) -> dict:
    """One run's row of results.jsonl."""
    trainable = sum(p.numel() for p in params)
    dtype = next(model.base.parameters()).dtype
    return {
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "method": method.name,
        "model": model.name,
        "family": model.family,
        "task": task.name,
        "trainable_parameters": trainable,
        "base_parameters": base_parameters,
        "trainable_percent": 100 * trainable / base_parameters,
        "bytes_per_task": method.stored_bytes(result.prompt_path.parent),
        "saved": str(result.prompt_path),
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "peak_memory_bytes": memory.peak(),
        "peak_memory_of": memory.kind,
        "metrics": result.metrics,
        "best_step": result.best_step,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        **method.report(),
        "config": {
            "model": {"name": model.name, "family": model.family, "dtype": str(dtype).removeprefix("torch."), "readout_scale": model.readout_scale},
            "method": asdict(method.options),
            "prompt": asdict(method.prompt_options),
            "data": asdict(task.options),
            "train": asdict(o),
        },
    }


def _batches(loader, generator: torch.Generator, seed: int, position: int, accelerator: Accelerator):
    """Micro-batches without end, from micro-batch `position` on: epoch e is shuffled by seed + e, so a position
    (epoch, batch) is restored exactly, skipping the batches already drawn without loading them."""
    epoch, skip = divmod(position, len(loader))
    while True:
        generator.manual_seed(seed + epoch)
        yield from accelerator.skip_first_batches(loader, skip) if skip else loader
        epoch, skip = epoch + 1, 0


def _clear_previous_run(output_dir: Path) -> None:
    """A new run replaces an earlier one in the same folder, whatever its method: never one run's result beside
    another's log. results.jsonl stays: it keeps every run's row."""
    for method in METHODS.values():
        path = output_dir / method.output
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (output_dir / LOG_FILE).unlink(missing_ok=True)
    shutil.rmtree(output_dir / "tensorboard", ignore_errors=True)
    shutil.rmtree(output_dir / checkpoint.CHECKPOINTS, ignore_errors=True)


def _keep_log_until(path: Path, step: int) -> None:
    """Drop the log's records of steps after `step` (a resumed run logs them again), and a last line that a kill
    cut short."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        write_text_atomic(path, "".join(line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step))


def _say(message: str, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        tqdm.write(message, file=sys.stderr)


def _log(path: Path, record: dict, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        append_line(path, json.dumps({"time": datetime.datetime.now().isoformat(timespec="seconds"), **record}))


def size_report(frozen, prompt_path: Path) -> str:
    """Trainable parameters and their share, and the prompt file's size beside the model's."""
    trainable = frozen.bank.weight[0].numel()
    total = frozen.base_parameters()
    model_bytes = sum(p.numel() * p.element_size() for p in frozen.base.parameters())
    return (
        f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)\n"
        f"prompt file: {human_size(prompt_path.stat().st_size)} (model: {human_size(model_bytes)})"
    )


def run_summary(report: dict, model_bytes: int) -> str:
    """A run's report as the command prints it: what trained, what one task stores, time and memory."""
    stored = "prompt file" if report["method"] == "prompt" else "stored per task"
    peak = report["peak_memory_bytes"]
    memory = "unknown" if peak is None else f"{human_size(peak)} above the idle process ({'CUDA, allocated' if report['peak_memory_of'] == 'cuda' else 'RSS'})"
    return (
        f"trainable parameters: {report['trainable_parameters']:,} of {report['base_parameters']:,} ({report['trainable_percent']:.3f}%)\n"
        f"{stored}: {human_size(report['bytes_per_task'])} (model: {human_size(model_bytes)})\n"
        f"time: {report['train_seconds']:.1f} s training, {report['eval_seconds']:.1f} s evaluating; peak memory: {memory}"
    )
