"""Prompt tuning over a sharded frozen model, through accelerate: FSDP 2, or DeepSpeed ZeRO-3. The frozen weights are
spread over the processes; the prompt bank is not.

- Every process keeps the whole prompt (P x H numbers, as under DDP), so the optimiser, evaluation, the saved prompt
  and checkpoints see a plain tensor, never a shard. The wrappers average the gradients of what they hold; the bank's
  they never see, and accumulate.py averages them.
- The model is handed to `accelerator.prepare` with its bank set aside, and the optimiser (the bank's only) stays
  softprompt's: FSDP with `fsdp_cpu_ram_efficient_loading` would otherwise reload the bank as a shard from process 0,
  and DeepSpeed's backward, step and clipping, which would drive an optimiser of its own, are not used.
- Under FSDP the frozen model waits in CPU memory (`to_device`) and reaches the devices as shards, layer by layer.
  With `fsdp_cpu_ram_efficient_loading` accelerate moves the model to the meta device and back, which unties shared
  weights unless the root module re-ties them (SoftPromptModel.tie_weights).
- Under DeepSpeed `softprompt train` starts accelerate before it loads the model (run.py, `start_accelerate`), so that
  transformers loads each weight straight into its partitions (ZeRO-3's zero.Init), in the dtype asked for
  (`loading_in`). What reads the embedding matrix (the initialisers, the default learning rate) gathers it whole for
  the moment (`whole`). After a run, transformers forgets ZeRO-3 (`forget_zero3`), so that a model loaded later in the
  process loads whole, as without DeepSpeed.
- Training runs the model's own forward, whose hooks gather each layer's weights. Evaluation calls parts of the
  model directly (label scoring, the prompt's keys and values): DeepSpeed's hooks sit on every module and gather
  them; FSDP's on its wrapped layers only, so the weights outside them are gathered for it, once.
"""

import contextlib

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast, parse_flag_from_env
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from softprompt.core.attention import finite_attention
from softprompt.errors import UserError

SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def keep_prompt_whole(
    accelerator: Accelerator, model: nn.Module, method: str, trained: list[nn.Parameter]
) -> list[nn.Parameter]:
    """Before `prepare` (which shards the model without its prompt bank): under FSDP or DeepSpeed, the bank's trained
    parameters, whose gradients no wrapper will average; none when not sharded.

    Refused in one line: FSDP 1, and a method that trains weights of the model itself (`trained` outside the bank),
    whose weights would be sharded, and saving them would need every process to gather them."""
    kind = accelerator.distributed_type
    if kind not in SHARDED:
        return []
    name = "FSDP" if kind == DistributedType.FSDP else "DeepSpeed"
    if kind == DistributedType.FSDP and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise UserError(
            f"fsdp_version {accelerator.state.fsdp_plugin.fsdp_version} in the accelerate config: softprompt runs under FSDP 2 (fsdp_version: 2, as configs/accelerate-fsdp.yaml)"
        )
    bank = {id(p) for p in model.bank.parameters()}
    if any(id(p) not in bank for p in trained):
        raise UserError(
            f"--method {method}: under {name} softprompt trains prompts only; {method} trains weights of the model, which {name} would shard, and saving sharded weights is not supported: run it under data parallel training (configs/accelerate-ddp.yaml)"
        )
    return [p for p in model.bank.parameters() if p.requires_grad]


def fsdp_not_run(accelerator: Accelerator) -> str | None:
    """A note when the accelerate config asks for FSDP and accelerate runs without it (it shards over GPUs only, and
    runs CPU processes as data parallel training)."""
    if parse_flag_from_env("ACCELERATE_USE_FSDP") and accelerator.distributed_type != DistributedType.FSDP:
        return "note: the accelerate config asks for FSDP, which accelerate runs on GPUs only: this run is data parallel, and every process holds the whole model"
    return None


def to_device(accelerator: Accelerator, model: nn.Module, sharded_later: bool) -> None:
    """`model.to(device)`; but under FSDP, when `prepare` will shard the model (`sharded_later`: the method trains),
    the frozen model stays in CPU memory, where it loaded, and `prepare` moves it to the device as it shards it, one
    wrapped layer at a time (the layers the accelerate config's auto-wrap policy names)."""
    if accelerator.distributed_type != DistributedType.FSDP or not sharded_later:
        model.to(accelerator.device)
        return
    for child in model.children():
        if child is not model.base:
            child.to(accelerator.device)


def prepare(accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer, loader):
    """`accelerator.prepare` of the model, its optimiser and data loader; sharded, the model goes without its prompt
    bank and the optimiser (the bank's) is left as it is. FSDP 2 takes a model only with an optimiser, whose
    parameters it swaps for their shards: it gets a stand-in over a frozen weight, never stepped."""
    if accelerator.distributed_type not in SHARDED:
        return accelerator.prepare(model, optimizer, loader)
    bank = model.bank
    del model.bank
    try:
        if accelerator.distributed_type == DistributedType.FSDP:
            wrapped, _, loader = accelerator.prepare(model, torch.optim.SGD([next(model.parameters())], lr=0.0), loader)
        else:
            wrapped, loader = accelerator.prepare(model, loader)
    finally:
        model.bank = bank
    return wrapped, optimizer, loader


def backward(accelerator: Accelerator, loss: torch.Tensor) -> None:
    """`accelerator.backward`, but under DeepSpeed, whose engine would also step an optimiser it does not have, the
    plain backward pass (its hooks gather the weights it needs). Under `finite_attention`, as the forward pass ran:
    with gradient checkpointing the backward pass runs the forward again, and must choose the kernels it chose."""
    with finite_attention(loss.device):
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            loss.backward()
        else:
            accelerator.backward(loss)


def no_sync(accelerator: Accelerator, wrapped: nn.Module):
    """Skip the wrapper's gradient averaging for a micro-batch (DeepSpeed holds no trained weight to average)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return contextlib.nullcontext()
    return accelerator.no_sync(wrapped)


@contextlib.contextmanager
def loading_in(dtype: torch.dtype):
    """While transformers loads a model into ZeRO-3 partitions, have the DeepSpeed config it reads name `dtype`:
    zero.Init makes every weight in the dtype of that config's bf16/fp16 switches (float32 when both are off),
    whatever the load asks for. No-op without ZeRO-3."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        yield
        return
    from transformers.integrations.deepspeed import deepspeed_config

    config = deepspeed_config()
    saved = {key: config.get(key) for key in ("bf16", "fp16")}
    config["bf16"], config["fp16"] = {"enabled": dtype == torch.bfloat16}, {"enabled": dtype == torch.float16}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value


def forget_zero3(accelerator: Accelerator) -> None:
    """After a run under DeepSpeed: drop the ZeRO-3 config that accelerate registered with transformers when it
    started, which would make a model loaded later in this process load partitioned, outside any run that would
    gather its weights."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


@torch.no_grad()
def same_on_every_process(params: list[nn.Parameter]) -> None:
    """Start every process from process 0's values, as DDP does when it wraps a model."""
    for p in params:
        broadcast(p.data, from_process=0)


@contextlib.contextmanager
def whole(weight: torch.Tensor):
    """`weight` whole on this process for the duration, however FSDP or DeepSpeed shards it; every process must ask
    together (the shards are gathered from all of them)."""
    if isinstance(weight, DTensor):
        yield weight.full_tensor()
    elif hasattr(weight, "ds_id"):  # a DeepSpeed ZeRO-3 parameter, holding this process's partition only
        import deepspeed

        with deepspeed.zero.GatheredParameters([weight]):
            yield weight
    else:
        yield weight


def whole_shape(weight: torch.Tensor) -> tuple[int, ...]:
    """The shape of `weight` whole: a DTensor's is already; DeepSpeed empties a partitioned weight and keeps it aside."""
    return tuple(getattr(weight, "ds_shape", weight.shape))


def whole_numel(weight: torch.Tensor) -> int:
    """The numbers in `weight` whole (as `whole_shape`)."""
    return getattr(weight, "ds_numel", weight.numel())


@contextlib.contextmanager
def gathered(model: nn.Module):
    """The weights FSDP holds outside its wrapped layers, whole on every process for the duration (no-op unless the
    model is sharded by FSDP)."""
    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()
