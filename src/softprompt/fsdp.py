"""Prompt tuning under FSDP (version 2, through accelerate): the frozen model is sharded over the processes and the
prompt bank is not.

- Every process keeps the whole prompt (P x H numbers, as under DDP), so the optimiser, evaluation, the saved prompt
  and checkpoints see a plain tensor, never a shard. FSDP averages the gradients of what it shards; the bank's it
  leaves alone, and accumulate.py averages them.
- Training runs the model's own forward, whose hooks gather each layer's weights. Evaluation calls parts of the
  model directly (label scoring, the prompt's keys and values), so the weights outside the wrapped layers are
  gathered for it, once.
"""

import contextlib

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast
from torch import nn
from torch.distributed.fsdp import FSDPModule

from softprompt.errors import UserError


def keep_prompt_whole(accelerator: Accelerator, model: nn.Module, method: str, trained: list[nn.Parameter]) -> list[nn.Parameter]:
    """Before `accelerator.prepare`: under FSDP, leave the model's prompt bank out of the sharding. Returns the bank's
    trained parameters, whose gradients no wrapper will average; none when not under FSDP.

    A method that trains weights of the model itself (`trained` outside the bank) is refused under FSDP: those weights
    would be sharded, and saving them would need every process to gather them."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return []
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version != 2:
        raise UserError(f"fsdp_version {plugin.fsdp_version} in the accelerate config: softprompt runs under FSDP 2 (fsdp_version: 2, as configs/accelerate-fsdp.yaml)")
    if plugin.cpu_ram_efficient_loading:
        raise UserError("fsdp_cpu_ram_efficient_loading: true in the accelerate config: it reloads every weight as a shard, the prompt bank too, which stays whole; set it to false (configs/accelerate-fsdp.yaml)")
    bank = {id(p) for p in model.bank.parameters()}
    if any(id(p) not in bank for p in trained):
        raise UserError(f"--method {method}: under FSDP softprompt trains prompts only; {method} trains weights of the model, which FSDP would shard, and saving sharded weights is not supported: run it under data parallel training (configs/accelerate-ddp.yaml)")
    plugin.ignored_modules = [model.bank]
    return [p for p in model.bank.parameters() if p.requires_grad]


@torch.no_grad()
def same_on_every_process(params: list[nn.Parameter]) -> None:
    """Start every process from process 0's values, as DDP does when it wraps a model."""
    for p in params:
        broadcast(p.data, from_process=0)


@contextlib.contextmanager
def gathered(model: nn.Module):
    """The weights FSDP holds outside its wrapped layers, whole on every process for the duration (no-op unless the
    model is sharded)."""
    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()
