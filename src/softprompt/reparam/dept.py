"""DePT (Shi & Lipani, ICLR 2024): a shorter prompt plus a low-rank offset to the input embeddings.

The (P, H) prompt trains as in prompt tuning; beside it A (N, r) @ B (r, H) is added to the frozen embeddings of the
first N input tokens (counted from each row's first real token, wherever the prompt sits), with a learning rate of
its own. As in LoRA, A starts uniform in [-1/sqrt(r), 1/sqrt(r)] (seeded) and B at zero, so training starts from plain
prompt tuning. Saved, the offset is folded to its (N, H) product beside the prompt (prompt.py); the bank (bank.py)
serves it per row, so a DePT task and a plain one share batches.
"""

import torch
from torch import nn

from softprompt.core.bank import PromptBank


class DePTBank(PromptBank):
    """One trainable prompt and its low-rank input offset."""

    def __init__(
        self,
        prompt: torch.Tensor,
        positions: int,
        rank: int,
        seed: int = 0,
        name: str = "0",
        offset: torch.Tensor | None = None,
    ):
        """`offset`: a saved (N, H) offset to start from (transfer initialisation): its first rank-r factors take
        the first columns of A and rows of B; the rest start as a fresh offset's do, so every rank still trains."""
        super().__init__(prompt, [name])
        generator = torch.Generator().manual_seed(seed)
        bound = rank**-0.5
        a = torch.rand(positions, rank, generator=generator) * 2 * bound - bound  # (N, r)
        b = torch.zeros(rank, prompt.shape[1])  # (r, H)
        if offset is not None:
            a_k, b_k = low_rank_factors(offset.float(), rank)  # (N, k), (k, H)
            a[:, : a_k.shape[1]], b[: b_k.shape[0]] = a_k, b_k
        self.a, self.b = nn.Parameter(a), nn.Parameter(b)
        self.positions, self.rank = positions, rank

    def input_offset(self) -> torch.Tensor:
        with torch.autocast(self.a.device.type, enabled=False):  # float32 under bf16 autocast too, as folded
            return self.a @ self.b  # (N, r) @ (r, H) -> (N, H)

    def offsets(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        return self.input_offset().unsqueeze(0).expand(len(prompt_ids), -1, -1)  # (B, N, H)

    def offset(self, name_or_index: str | int = 0) -> torch.Tensor:
        if isinstance(name_or_index, str):
            self.index(name_or_index)  # an unknown name raises KeyError
        return self.input_offset().detach()  # (N, H)

    def offset_parameters(self) -> list[nn.Parameter]:
        """What trains at the offset's own learning rate."""
        return [self.a, self.b]

    def describe(self) -> dict:
        """What a prompt file records about how it was trained."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"positions": self.positions, "rank": self.rank, "trainable_parameters": trainable}


def low_rank_factors(offset: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H) -> A (N, k), B (k, H), k at most `rank` and the offset's numerical rank, with A @ B its best rank-k
    approximation (the offset itself when its rank is at most `rank`, as for an offset trained at that rank); the
    singular values are split evenly between A and B."""
    u, s, vh = torch.linalg.svd(offset, full_matrices=False)  # (N, m), (m,), (m, H)
    tolerance = s.max() * max(offset.shape) * torch.finfo(s.dtype).eps if len(s) else 0.0
    k = min(rank, int((s > tolerance).sum()))
    root = s[:k].sqrt()
    return u[:, :k] * root, root.unsqueeze(1) * vh[:k]
