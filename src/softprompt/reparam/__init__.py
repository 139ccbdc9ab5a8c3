"""Training-time prompt parameterisations that fold to a plain (P, H) prompt (`--prompt.reparam`).

| name     | what trains                                                  | trained numbers        |
|----------|--------------------------------------------------------------|------------------------|
| none     | the prompt itself (Lester et al. 2021)                       | P H                    |
| residual | the prompt and a shared bottleneck MLP with a skip           | P H + 2 H b + b + 3 H  |
| ulpt     | a (P, r) prompt, a per-dimension scale and shift             | P r + 2 H              |

The model sees each one's prompt through a ReparamBank at every forward; the saved file holds the folded prompt.
"""

import torch

from softprompt.options import PromptOptions
from softprompt.reparam.bank import ReparamBank
from softprompt.reparam.base import Reparam
from softprompt.reparam.residual import Residual
from softprompt.reparam.ulpt import ULPT

REPARAMS: dict[str, type[Reparam]] = {r.name: r for r in (Residual, ULPT)}
NAMES = ("none", *REPARAMS)


def make_reparam(o: PromptOptions, initial: torch.Tensor, seed: int, gain: float = 1.0) -> Reparam:
    """The reparameterisation `o.reparam` names, starting from the (P, H) prompt `initial`. `seed` is the
    projection's when `o.projection_seed` is unset; `gain` the residual LayerNorm's starting gain."""
    if o.reparam == "residual":
        return Residual(initial, o.bottleneck, o.reparam_dropout, gain)
    if o.reparam == "ulpt":
        return ULPT(initial, o.rank, seed if o.projection_seed is None else o.projection_seed)
    raise ValueError(f"no reparameterisation named {o.reparam!r}")


__all__ = ["NAMES", "REPARAMS", "Reparam", "ReparamBank", "Residual", "ULPT", "make_reparam"]
