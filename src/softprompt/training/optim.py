"""The optimiser: the paper's Adafactor (as T5X runs it) or AdamW, and the step that stops on a NaN or overflow
before anything saves it."""

import torch
from transformers.optimization import Adafactor

from softprompt.errors import UserError, first_line
from softprompt.options import TrainOptions


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
        raise NonFinite(
            f"the trained parameters became NaN or infinite at step {step} (the gradient or the update overflowed): lower --train.lr, or use --train.precision=fp32"
        )
