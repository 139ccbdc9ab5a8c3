"""The training loop, on accelerate: the same code on one CPU, one GPU, or many under `accelerate launch`/`torchrun`.

Only the prompt bank is handed to the optimiser; the frozen model's weights never change.
"""

import contextlib
import datetime
import json
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers.optimization import Adafactor

from softprompt.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files import human_size
from softprompt.model import SoftPromptModel
from softprompt.options import PromptOptions, TrainOptions
from softprompt.prompt import check_compatible, load_prompt, save_prompt
from softprompt.tasks import Example, Task

PROMPT_FILE = "prompt.safetensors"
LOG_FILE = "metrics.jsonl"


PAPER_LR = 0.3  # Adafactor on T5, the paper's setting
T5_EMBEDDING_RMS = 11.6  # root mean square of T5 1.1's input-embedding entries (google/t5-v1_1-small: 11.64)
T5_TYPES = ("t5", "mt5", "umt5")


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


def default_lr(model: SoftPromptModel) -> float:
    """The learning rate when train.lr is unset: the paper's 0.3 on T5, and on other models 0.3 scaled by the
    size of their embedding entries relative to T5's. Adafactor's (and Adam's) step moves each entry by about lr
    whatever the gradient's scale, so a rate that suits T5's entries (RMS 11.6) is 200 times too large for
    MiniLM's (RMS 0.056)."""
    if model.base.config.model_type in T5_TYPES:
        return PAPER_LR
    rms = model.input_embeddings().weight.detach().float().pow(2).mean().sqrt().item()
    return float(f"{PAPER_LR * rms / T5_EMBEDDING_RMS:.2g}")


def make_optimizer(params: list[torch.nn.Parameter], o: TrainOptions) -> torch.optim.Optimizer:
    if o.lr is None:
        raise ValueError("resolve train.lr (default_lr) before making the optimiser")
    if o.optimizer == "adafactor":
        return PromptAdafactor(
            [{"params": params, "factored": False}],
            lr=o.lr,
            relative_step=False,
            scale_parameter=False,
            warmup_init=False,
            decay_rate=-o.decay_rate,  # transformers takes the exponent's sign: beta2_t = 1 - t^-0.8
            weight_decay=o.weight_decay,
            clip_threshold=o.clip_threshold,
        )
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    raise UserError(f"--train.optimizer: unknown optimiser {o.optimizer!r} (adafactor, adamw)")


def resolve_precision(option: str, device_type: str) -> str:
    """bf16 autocast on CUDA when auto, never on CPU unless asked ("bf16" or "no")."""
    if option == "bf16" or (option == "auto" and device_type == "cuda"):
        return "bf16"
    return "no"


def accumulation_steps(batch_size: int, micro_batch_size: int, processes: int) -> int:
    micro = min(micro_batch_size, batch_size)
    per_step = micro * processes
    if batch_size % per_step:
        raise UserError(f"--train.batch_size {batch_size} is not a multiple of --train.micro_batch_size x processes = {per_step}")
    return batch_size // per_step


def initial_prompt(model: SoftPromptModel, o: PromptOptions, task: Task, seed: int, allow_other_model: bool = False) -> torch.Tensor:
    """The starting (P, H) prompt: an initialiser by name, or a prompt file (whose length then wins)."""
    if o.init not in ("random", "vocab", "labels", "text"):
        file = load_prompt(o.init)
        check_compatible(file, model.hidden, model.fingerprint(), o.init, allow_other_model)
        return file.prompt
    labels = getattr(task, "label_texts", [])
    return model.initial_prompt(o.init, o.length, text=o.text, labels=labels, first_n=o.vocab_first_n, scale=o.random_scale, seed=seed)


@dataclass
class TrainResult:
    prompt_path: Path
    metrics: dict[str, float] = field(default_factory=dict)  # at the best evaluation
    best_step: int = 0
    steps: int = 0
    lr: float = 0.0  # the learning rate used (train.lr, or its default for the model)
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)


def backward_accumulated(wrapped, micro_batches: list[dict], accelerator: Accelerator, autocast, step: int) -> float:
    """Backpropagate micro-batches so that the prompt's gradient is that of one batch holding them all, on every
    process together: each micro-batch's summed loss is divided by the number of loss items (target tokens, or rows
    for encoder-only classification) in the whole effective batch. Returns that batch's mean loss.

    A mean per micro-batch would weigh a token of a short-target micro-batch more than one of a long-target one."""
    total_loss = torch.zeros((), device=accelerator.device)
    total_items = torch.zeros((), device=accelerator.device)
    for k, batch in enumerate(micro_batches):
        sync = contextlib.nullcontext() if k == len(micro_batches) - 1 else accelerator.no_sync(wrapped)
        with sync, autocast():
            out = wrapped(**batch)
            if not torch.isfinite(out.loss_sum):
                raise UserError(f"the loss became {out.loss_sum.item()} at step {step}: lower --train.lr, or use --train.precision=fp32")
            accelerator.backward(out.loss_sum * accelerator.num_processes)  # DDP averages over processes: undo it
        total_loss += out.loss_sum.detach().float()
        total_items += out.loss_items
    totals = accelerator.reduce(torch.stack([total_loss, total_items]), reduction="sum")  # over processes
    items = totals[1].clamp(min=1)
    for p in accelerator.unwrap_model(wrapped).bank.parameters():
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
    output_dir = Path(output_dir)
    task.prepare(model)  # refuses a task the model cannot do, before anything is written
    o = replace(o, lr=default_lr(model) if o.lr is None else o.lr)
    set_seed(o.seed)
    accelerator = Accelerator(log_with="tensorboard", project_dir=str(output_dir))
    bf16 = resolve_precision(o.precision, accelerator.device.type) == "bf16"

    def autocast():  # our own autocast: accelerate's mixed-precision setting is fixed once per process
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    accum = accumulation_steps(o.batch_size, o.micro_batch_size, accelerator.num_processes)
    max_steps = math.ceil(o.epochs * len(train_examples) / o.batch_size) if o.epochs else o.max_steps
    if max_steps < 1:
        raise UserError("--train.max_steps must be at least 1")

    model.bank = PromptBank(initial_prompt(model, prompt_options, task, o.seed, allow_other_model), [task.name])
    model.input_budget(task.options.max_input_length, task.options.max_target_length)  # the prompt leaves room for inputs
    model.to(accelerator.device)
    loader = DataLoader(
        train_examples,
        batch_size=min(o.micro_batch_size, o.batch_size),
        shuffle=True,
        drop_last=len(train_examples) >= o.micro_batch_size,
        collate_fn=lambda rows: {**task.batch(model, rows), "prompt_ids": torch.zeros(len(rows), dtype=torch.long)},
        generator=torch.Generator().manual_seed(o.seed),
    )
    optimizer = make_optimizer([model.bank.weight], o)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0)
    wrapped, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    metadata = {
        **model.identity(),
        "init": prompt_options.init,
        "task": task.describe(),
        "training": asdict(o),
    }
    prompt_path = output_dir / PROMPT_FILE
    log_path = output_dir / LOG_FILE
    if accelerator.is_main_process:
        _clear_previous_run(output_dir)
    accelerator.init_trackers("tensorboard")
    result = TrainResult(prompt_path, lr=o.lr)
    best, stale = -math.inf, 0
    best_prompt = None
    bar = tqdm(total=max_steps, desc="training", disable=not progress or not accelerator.is_main_process, dynamic_ncols=True)
    running = 0.0  # smoothed training loss for the progress bar

    def save(prompt: torch.Tensor, scores: dict, step: int, **extra) -> None:
        if accelerator.is_main_process:
            save_prompt(prompt_path, prompt, {**metadata, "metrics": scores, "step": step, **extra})

    def evaluate(step: int) -> bool:
        """Evaluate, keep the prompt if it is the best so far; True when patience has run out."""
        nonlocal best, stale, best_prompt
        with autocast():
            scores = task.evaluate(model, validation_examples, o.eval_batch_size, progress=progress)
        record = {"step": step, **{f"eval/{k}": v for k, v in scores.items()}}
        result.history.append(record)
        _log(log_path, record, accelerator)
        accelerator.log(record, step=step)
        if scores[task.metric] > best:
            best, stale = scores[task.metric], 0
            result.metrics, result.best_step = scores, step
            best_prompt = model.bank.prompt(0).clone()
            save(best_prompt, scores, step)
        else:
            stale += 1
        bar.set_postfix({"loss": f"{running:.4f}", task.metric: f"{scores[task.metric]:.1f}", "best": f"{best:.1f}"})
        return o.patience is not None and stale >= o.patience

    batches = _forever(loader)
    wrapped.train(o.dropout)
    step = 0
    try:
        for step in range(1, max_steps + 1):
            step_loss = backward_accumulated(wrapped, [next(batches) for _ in range(accum)], accelerator, autocast, step)
            if o.max_grad_norm:
                accelerator.clip_grad_norm_([model.bank.weight], o.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
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
                break
    except KeyboardInterrupt:
        bar.close()
        done = step - 1  # the step under way is lost
        if best_prompt is None:
            save(model.bank.prompt(0), {}, done, interrupted=True)
            _say(f"interrupted after step {done}: saved the prompt as it stood (not evaluated) to {prompt_path}", accelerator)
        else:
            _say(f"interrupted after step {done}: {prompt_path} holds the best prompt so far ({task.metric} {best:.2f} at step {result.best_step})", accelerator)
        raise
    finally:
        bar.close()
        accelerator.end_training()
    result.steps = step
    model.eval()
    if best_prompt is not None:
        model.bank.weight.data[0] = best_prompt  # the model leaves training holding the prompt that was saved
    if not validation_examples:
        save(model.bank.prompt(0), {}, step)
        result.best_step = step
    return result


def _forever(loader):
    while True:
        yield from loader


def _clear_previous_run(output_dir: Path) -> None:
    """A new run replaces an earlier one in the same folder: never one run's prompt beside another's log."""
    (output_dir / PROMPT_FILE).unlink(missing_ok=True)
    (output_dir / LOG_FILE).unlink(missing_ok=True)
    shutil.rmtree(output_dir / "tensorboard", ignore_errors=True)


def _say(message: str, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        tqdm.write(message, file=sys.stderr)


def _log(path: Path, record: dict, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": datetime.datetime.now().isoformat(timespec="seconds"), **record}) + "\n")


def size_report(frozen, prompt_path: Path) -> str:
    """Trainable parameters and their share, and the prompt file's size beside the model's."""
    trainable = frozen.bank.weight[0].numel()
    total = frozen.base_parameters()
    model_bytes = sum(p.numel() * p.element_size() for p in frozen.base.parameters())
    return (
        f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)\n"
        f"prompt file: {human_size(prompt_path.stat().st_size)} (model: {human_size(model_bytes)})"
    )
