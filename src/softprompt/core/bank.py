"""A bank of soft prompts (N, P_max, H) with per-prompt lengths, looked up per batch row.

Training one prompt, a batch that mixes tasks, and an ensemble of prompts are all the same lookup:
each row of a batch names the prompt it runs with. Prompts shorter than the longest are zero-padded here and
masked by the join, so each row equals its prompt run alone.

A prompt may come with an input offset (DePT, dept.py): (N, H) vectors added to the embeddings of the first N input
tokens. The bank holds them per prompt, zero-padded to the longest (a prompt without one has N = 0), and looks them up
per row like the prompts, so that rows of a DePT task and of a plain one share a batch.
"""

import torch
import torch.nn.functional as F
from torch import nn


def rows_of(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(N, ...) table, (B,) int64 or int32 indices in [0, N) on the table's device -> (B, ...) rows, whose gradient
    sums into the table deterministically.

    Indexing (`table[ids]`) sums a repeated row's gradients with parallel atomic adds on a CPU, so the same run
    differs from process to process in the last bits; an embedding lookup's backward sums them in row order."""
    return F.embedding(ids, table.flatten(1)).view(len(ids), *table.shape[1:])


class PromptBank(nn.Module):
    """N named prompts of width H, kept in float32 whatever the model's dtype.

    `prompts` is a (N, P, H) tensor (all of length P), a (P, H) tensor (one prompt), or a list of (P_i, H) tensors;
    `offsets`, one per prompt, its (N_i, H) input offset or None.
    """

    def __init__(
        self,
        prompts: torch.Tensor | list[torch.Tensor],
        names: list[str] | None = None,
        offsets: list[torch.Tensor | None] | None = None,
    ):
        super().__init__()
        if isinstance(prompts, torch.Tensor):
            prompts = [prompts] if prompts.dim() == 2 else list(prompts)
        if not prompts or any(p.dim() != 2 for p in prompts) or len({p.shape[1] for p in prompts}) != 1:
            raise ValueError(
                f"prompts must be (P, H) tensors of one width H, got shapes {[tuple(p.shape) for p in prompts]}"
            )
        names = names if names is not None else [str(i) for i in range(len(prompts))]
        if len(names) != len(prompts) or len(set(names)) != len(names):
            raise ValueError(f"need {len(prompts)} distinct prompt names, got {names}")
        longest = max(p.shape[0] for p in prompts)
        padded = torch.zeros(len(prompts), longest, prompts[0].shape[1])
        for i, p in enumerate(prompts):
            padded[i, : p.shape[0]] = p.detach().float()
        self.weight = nn.Parameter(padded)  # (N, P_max, H)
        self.register_buffer("lengths", torch.tensor([p.shape[0] for p in prompts]), persistent=False)  # (N,)
        self.ragged = len({p.shape[0] for p in prompts}) > 1  # known here, so that no lookup reads it back
        self.names = list(names)
        if offsets is None or all(o is None for o in offsets):
            self.input_offsets = None
            return
        hidden = padded.shape[2]
        offsets = [o if o is not None else torch.zeros(0, hidden) for o in offsets]
        if len(offsets) != len(prompts) or any(o.dim() != 2 or o.shape[1] != hidden for o in offsets):
            raise ValueError(
                f"need one (N, {hidden}) input offset or None per prompt, got shapes {[tuple(o.shape) for o in offsets]}"
            )
        table = torch.zeros(len(offsets), max(o.shape[0] for o in offsets), hidden)
        for i, o in enumerate(offsets):
            table[i, : o.shape[0]] = o.detach().float()
        self.register_buffer("input_offsets", table)  # (N, N_max, H)
        self.offset_lengths = [o.shape[0] for o in offsets]

    @classmethod
    def empty(cls, hidden: int) -> "PromptBank":
        """A bank holding one prompt of length 0: the frozen model as it is (prompt design, no soft prompt)."""
        return cls(torch.zeros(1, 0, hidden), ["none"])

    @property
    def length(self) -> int:
        """The longest prompt's length, P_max."""
        return self.weight.shape[1]

    @property
    def hidden(self) -> int:
        return self.weight.shape[2]

    def __len__(self) -> int:
        return len(self.names)  # not weight.shape[0]: a reparameterised bank computes its weight

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no prompt named {name!r} in the bank (has: {', '.join(self.names)})") from None

    def prompt(self, name_or_index: str | int = 0) -> torch.Tensor:
        """One prompt, (P_i, H), detached."""
        i = self.index(name_or_index) if isinstance(name_or_index, str) else name_or_index
        return self.weight[i, : int(self.lengths[i])].detach()

    def forward(self, prompt_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B,) prompt indices -> (B, P_max, H) prompts, zero-padded, and their (B,) lengths; None for the lengths
        when every prompt of the bank is P_max long."""
        lengths = self.lengths.to(prompt_ids.device)[prompt_ids] if self.ragged else None
        return rows_of(self.weight, prompt_ids), lengths

    def offsets(self, prompt_ids: torch.Tensor) -> torch.Tensor | None:
        """(B,) prompt indices -> (B, N_max, H) input offsets, zero-padded; None when no prompt has one."""
        return None if self.input_offsets is None else rows_of(self.input_offsets, prompt_ids)

    def offset(self, name_or_index: str | int = 0) -> torch.Tensor | None:
        """One prompt's input offset, (N_i, H), detached; None when it has none."""
        i = self.index(name_or_index) if isinstance(name_or_index, str) else name_or_index
        if self.input_offsets is None or not self.offset_lengths[i]:
            return None
        return self.input_offsets[i, : self.offset_lengths[i]].detach()
