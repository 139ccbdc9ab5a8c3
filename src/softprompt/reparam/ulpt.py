"""ULPT (Wu, Hao & Mou 2025, arXiv 2502.04501): the prompt lives in r dimensions, Z (P, r), and reaches the model's
width through a frozen random up-projection U (r, H), entries N(0, 1/r), regenerated from a seed and never stored;
a learned per-dimension scale s and shift b (H each) align it: prompt = (Z U) * s + b. Trained numbers: P r + 2H.

Two choices of ours, neither changing what the prompt can be:
- Initialisation (the `init` option still chooses the start): b is the mean of the initial prompt's rows, s their
  per-dimension standard deviation, and Z the least-squares fit of the standardised initial prompt in the
  projection's span, Z = ((E - b) / s) U^+, the closest start the r-dimensional space holds.
- Units: Z is stored multiplied by `unit`, the initial prompt's RMS (prompt = (Z U) * s / unit + b), so that every
  trained entry is on the scale of the model's embedding entries, as s, b and a plain prompt are: Adafactor moves
  each entry by about lr, and the rate that suits a plain prompt on the model then suits all three.
"""

import torch
from torch import nn

from softprompt.reparam.base import Reparam


def projection(rank: int, hidden: int, seed: int) -> torch.Tensor:
    """The frozen up-projection (r, H), entries N(0, 1/r), the same for the same seed on every machine (CPU RNG)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rank, hidden, generator=generator) / rank**0.5


class ULPT(Reparam):
    name = "ulpt"

    def __init__(self, initial: torch.Tensor, rank: int = 64, seed: int = 0):
        super().__init__()
        initial = initial.detach().float()  # (P, H)
        up = projection(rank, initial.shape[1], seed).to(initial.device)  # (r, H), drawn on the CPU
        shift = initial.mean(dim=0)  # (H,)
        spread = initial.std(dim=0, unbiased=False) if initial.shape[0] > 1 else initial.abs().mean(dim=0)  # (H,)
        unit = initial.pow(2).mean().sqrt().clamp(min=1e-6)
        scale = spread.clamp(min=1e-6 * unit)  # (H,)
        z = ((initial - shift) / scale) @ torch.linalg.pinv(up)  # (P, H) @ (H, r) -> (P, r)
        self.register_buffer("up", up, persistent=False)  # regenerated from the seed, never trained or saved
        self.register_buffer("unit", unit, persistent=False)
        self.z = nn.Parameter(z * unit)  # (P, r)
        self.scale = nn.Parameter(scale)  # (H,)
        self.shift = nn.Parameter(shift)  # (H,)
        self.rank, self.seed = rank, seed

    def forward(self) -> torch.Tensor:
        return (self.z @ self.up) * (self.scale / self.unit) + self.shift  # (P, r) @ (r, H) -> (P, H)

    def options(self) -> dict:
        return {"rank": self.rank, "projection_seed": self.seed, "unit": round(self.unit.item(), 6)}
