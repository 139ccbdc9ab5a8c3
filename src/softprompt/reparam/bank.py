"""A prompt bank whose one prompt is computed by a reparameterisation at every use.

The model looks prompts up in its bank (bank.py) and join.py inserts them, as for a plain prompt; only where the
(N, P, H) weight comes from differs: here it is the reparameterisation's output, so gradients reach its parameters
and never a stored copy. Saving takes `prompt(0)`, the folded plain prompt.
"""

import torch
from torch import nn

from softprompt.core.bank import PromptBank
from softprompt.reparam.base import Reparam


class ReparamBank(PromptBank):
    def __init__(self, reparam: Reparam, name: str = "0"):
        nn.Module.__init__(self)  # PromptBank's own __init__ would store a weight; this bank computes it
        self.reparam = reparam
        length = reparam.fold().shape[0]
        self.register_buffer("lengths", torch.tensor([length]), persistent=False)  # (1,)
        self.ragged = False
        self.names = [name]
        self.input_offsets = None

    @property
    def weight(self) -> torch.Tensor:
        with torch.autocast(self.lengths.device.type, enabled=False):  # float32 under bf16 autocast too, as folded
            return self.reparam().unsqueeze(0)  # (1, P, H)

    def prompt(self, name_or_index: str | int = 0) -> torch.Tensor:
        if isinstance(name_or_index, str):
            self.index(name_or_index)  # an unknown name raises KeyError
        return self.reparam.fold()  # (P, H)
