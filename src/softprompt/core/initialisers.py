"""Prompt initialisers: small pure functions, each returning a (P, H) float32 tensor.

`embeddings` is the frozen model's input-embedding matrix (V, H); token ids come from its tokenizer.
"""

import torch


def random_uniform(
    length: int, hidden: int, scale: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform in [-scale, scale]: the paper's random initialisation (scale 0.5)."""
    return (torch.rand(length, hidden, generator=generator) * 2 - 1) * scale


class TooFewTokens(ValueError):
    """More distinct tokens asked of `sampled_vocab` than the first ids hold, special tokens left out."""

    def __init__(self, wanted: int, usable: int, first_n: int):
        super().__init__(f"cannot sample {wanted} distinct tokens from the first {first_n} ids ({usable} usable)")
        self.wanted, self.usable = wanted, usable


def sampled_vocab(
    embeddings: torch.Tensor,
    length: int,
    first_n: int = 5000,
    exclude: set[int] | frozenset[int] = frozenset(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rows of `embeddings` drawn without replacement from the first `first_n` token ids, skipping `exclude`."""
    candidates = torch.tensor(
        [i for i in range(min(first_n, embeddings.shape[0])) if i not in exclude], dtype=torch.long
    )
    if len(candidates) < length:
        raise TooFewTokens(length, len(candidates), first_n)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:length]]
    return embeddings[chosen].detach().float().clone()


def from_token_ids(embeddings: torch.Tensor, token_ids: list[int], length: int) -> torch.Tensor:
    """The embeddings of `token_ids`, cycled or cut to `length` rows (prompt initialised from a text)."""
    if not token_ids:
        raise ValueError("the initial text has no tokens")
    ids = [token_ids[i % len(token_ids)] for i in range(length)]
    return embeddings[torch.tensor(ids)].detach().float().clone()


def class_labels(
    embeddings: torch.Tensor,
    label_token_ids: list[list[int]],
    length: int,
    first_n: int = 5000,
    exclude: set[int] | frozenset[int] = frozenset(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One row per class label (mean of its sub-token embeddings), as many labels as fit; the remaining rows are
    sampled vocabulary. A prompt shorter than the label set (the paper's length 1 beside two labels) takes the first."""
    rows = [embeddings[torch.tensor(ids)].detach().float().mean(dim=0) for ids in label_token_ids[:length]]
    rest = sampled_vocab(embeddings, length - len(rows), first_n, exclude, generator)
    return torch.cat([torch.stack(rows), rest]) if rows else rest
