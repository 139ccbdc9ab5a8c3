"""Gradient accumulation: a batch run as micro-batches on every process, whose gradient is that of the whole batch."""

import contextlib
import math

import torch
from accelerate import Accelerator

from softprompt.errors import UserError
from softprompt.models.sharding import backward, no_sync
from softprompt.training.optim import NonFinite


def micro_batch(batch_size: int, micro_batch_size: int, processes: int) -> int:
    """Rows per forward pass on each process: --train.micro_batch_size, capped at each process's share of the batch,
    so that a recipe runs unchanged on any number of processes."""
    return min(micro_batch_size, max(batch_size // processes, 1))


def accumulation_steps(batch_size: int, micro_batch_size: int, processes: int) -> int:
    """Micro-batches each process runs per step."""
    micro = micro_batch(batch_size, micro_batch_size, processes)
    per_step = micro * processes
    if batch_size % per_step:
        capped = ", the micro-batch capped at batch_size / processes" if micro < micro_batch_size else ""
        raise UserError(
            f"--train.batch_size {batch_size} is not a multiple of --train.micro_batch_size x processes = {per_step} ({micro} rows x {processes} processes{capped})"
        )
    return batch_size // per_step


def backward_accumulated(
    wrapped,
    micro_batches: list[dict],
    accelerator: Accelerator,
    autocast,
    step: int,
    params: list | None = None,
    scaler=None,
    unsynced: list | tuple = (),
) -> float:
    """Backpropagate micro-batches so that the trained parameters' gradient (`params`; the prompt bank's when None) is
    that of one batch holding them all, on every process together: each micro-batch's summed loss is divided by the
    number of loss items (target tokens, or rows for encoder-only classification) in the whole effective batch.
    Returns that batch's mean loss.

    A mean per micro-batch would weigh a token of a short-target micro-batch more than one of a long-target one.
    With a loss scaler (fp16) the losses are scaled up and the gradients left scaled, for the scaler's step.
    `unsynced`: parameters that no wrapper averages over the processes (the prompt bank, kept whole under FSDP and
    DeepSpeed), whose gradients are averaged here as DDP and FSDP average the rest."""
    total_loss = torch.zeros((), device=accelerator.device)
    total_items = torch.zeros((), device=accelerator.device)
    for k, batch in enumerate(micro_batches):
        sync = contextlib.nullcontext() if k == len(micro_batches) - 1 else no_sync(accelerator, wrapped)
        with sync, autocast():
            out = wrapped(**batch)
            loss = (
                out.loss_sum * accelerator.num_processes
            )  # gradients are averaged over processes (by DDP, or below): undo it
            backward(accelerator, scaler.scale(loss) if scaler else loss)
        total_loss += out.loss_sum.detach().float()
        total_items += out.loss_items
    for p in unsynced:  # every process takes part in each reduction, with or without a gradient of its own
        p.grad = accelerator.reduce(torch.zeros_like(p) if p.grad is None else p.grad, reduction="mean")
    totals = accelerator.reduce(torch.stack([total_loss, total_items]), reduction="sum")  # over processes
    items = totals[1].clamp(min=1)
    mean = (totals[0] / items).item()  # the loss's one read-back (a GPU waits here once a step, not per micro-batch)
    if not math.isfinite(mean):  # on every process alike, from the summed losses, before anything is updated
        raise NonFinite(f"the loss became {mean} at step {step}: lower --train.lr, or use --train.precision=fp32")
    for p in accelerator.unwrap_model(wrapped).bank.parameters() if params is None else params:
        if p.grad is not None:
            p.grad /= items
    return mean
