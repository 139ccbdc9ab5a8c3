"""The decoder-only loss: each target token predicted from the position before it, and which positions that needs."""

import torch
import torch.nn.functional as F

from softprompt.core.join import IGNORE_INDEX


def next_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, W, V) logits of the last W <= T positions, (B, T) labels -> (B, W - 1) cross-entropy of each label in
    that window from the position before it."""
    labels = labels[:, labels.shape[1] - logits.shape[1] :]  # (B, W)
    return F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none"
    )


def target_window(labels: torch.Tensor, counted: int | None = None) -> int:
    """(B, T) labels of left-padded rows, whose targets end every row -> how many last positions predict a target
    token: from the one before the first target position on. The LM head (V logits a position) runs on those only,
    not on the prompt and input, which have no loss. `counted` is that window as `tokenize` counts it on the host
    (the longest target, plus one); given, the labels are not read, which on a GPU would wait for them."""
    if counted is not None:
        return min(counted, labels.shape[1])
    has_target = (labels != IGNORE_INDEX).any(0)  # (T,)
    first = int(has_target.nonzero()[0]) if bool(has_target.any()) else labels.shape[1] - 1
    return min(labels.shape[1] - first + 1, labels.shape[1])
