"""How the training steps run: their precision (autocast), gradient checkpointing and the layers' train mode."""

import contextlib

import torch

from softprompt.errors import UserError
from softprompt.models.model import SoftPromptModel
from softprompt.options import TrainOptions


def resolve_precision(option: str, device_type: str) -> str:
    """bf16 autocast on CUDA when auto, never on CPU unless asked ("bf16", "fp16" or "no")."""
    if option in ("bf16", "fp16"):
        return option
    return "bf16" if option == "auto" and device_type == "cuda" else "no"


def autocast_for(precision: str, device_type: str):
    """The context the forward passes run in; ours, as accelerate's mixed-precision setting is fixed once per process."""
    if precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


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
