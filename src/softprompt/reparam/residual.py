"""Residual prompt tuning (Razdaibiedina et al., Findings of ACL 2023): each prompt vector passes through a shared
bottleneck MLP with a skip connection, out = x + LayerNorm(MLP(x)), as in the authors' code (Linear -> ReLU ->
Linear -> dropout -> LayerNorm, then the skip). Only during training: the trained prompt folds into a plain one.

The LayerNorm's gain starts at `gain`. The paper's unit gain suits T5, whose embedding entries have RMS 11.6; on a
model with entries of RMS 0.05 (MiniLM) a unit gain would start the MLP branch 20 times larger than the prompt
itself, so the method scales it like the learning rate (methods/prompt.py, embedding_scale): 1 on T5, and on
every model the branch starts at about a twelfth of the prompt, as on T5.
"""

import torch
from torch import nn

from softprompt.reparam.base import Reparam


class Residual(Reparam):
    name = "residual"

    def __init__(self, initial: torch.Tensor, bottleneck: int = 400, dropout: float = 0.0, gain: float = 1.0):
        super().__init__()
        hidden = initial.shape[1]
        self.prompt = nn.Parameter(initial.detach().float().clone())  # (P, H)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, bottleneck),
            nn.ReLU(),
            nn.Linear(bottleneck, hidden),
            nn.Dropout(dropout),
            nn.LayerNorm(hidden),
        ).to(initial.device)  # drawn on the CPU (the same start on every machine), then where the prompt is
        with torch.no_grad():
            self.mlp[-1].weight.fill_(gain)
        self.bottleneck, self.dropout, self.gain = bottleneck, dropout, gain

    def forward(self) -> torch.Tensor:
        return self.prompt + self.mlp(self.prompt)  # (P, H) + (P, H)

    def options(self) -> dict:
        return {"bottleneck": self.bottleneck, "dropout": self.dropout, "initial_gain": self.gain}
