"""A bank of soft prompts (N, P, H), looked up per batch row.

Training one prompt, a batch that mixes tasks, and an ensemble of prompts are all the same lookup:
each row of a batch names the prompt it runs with.
"""

import torch
from torch import nn


class PromptBank(nn.Module):
    """N named prompts of one length P and width H, kept in float32 whatever the model's dtype."""

    def __init__(self, prompts: torch.Tensor, names: list[str] | None = None):
        super().__init__()
        if prompts.dim() == 2:
            prompts = prompts.unsqueeze(0)
        if prompts.dim() != 3:
            raise ValueError(f"prompts must be (N, P, H), got shape {tuple(prompts.shape)}")
        names = names if names is not None else [str(i) for i in range(prompts.shape[0])]
        if len(names) != prompts.shape[0] or len(set(names)) != len(names):
            raise ValueError(f"need {prompts.shape[0]} distinct prompt names, got {names}")
        self.weight = nn.Parameter(prompts.detach().float().clone())  # (N, P, H)
        self.names = list(names)

    @classmethod
    def empty(cls, hidden: int) -> "PromptBank":
        """A bank holding one prompt of length 0: the frozen model as it is (prompt design, no soft prompt)."""
        return cls(torch.zeros(1, 0, hidden), ["none"])

    @property
    def length(self) -> int:
        return self.weight.shape[1]

    @property
    def hidden(self) -> int:
        return self.weight.shape[2]

    def __len__(self) -> int:
        return self.weight.shape[0]

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no prompt named {name!r} in the bank (has: {', '.join(self.names)})") from None

    def prompt(self, name_or_index: str | int = 0) -> torch.Tensor:
        """One prompt, (P, H), detached."""
        i = self.index(name_or_index) if isinstance(name_or_index, str) else name_or_index
        return self.weight[i].detach()

    def forward(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """(B,) prompt indices -> (B, P, H) prompts."""
        return self.weight[prompt_ids]
