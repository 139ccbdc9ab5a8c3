"""The one place where prompts meet inputs, for every model family.

Each row's prompt is inserted at that row's own offset: after its left padding (decoder-only batches) and after
the leading special token when the tokenizer adds one ([CLS] for BERT, <s> for Llama). So left padding never
sits between prompt and text, and right-padded encoders keep [CLS] first.

A row's prompt may come with an input offset (DePT): vectors added to the embeddings of the row's first input tokens,
counted from its first real token (special tokens included; padding and a decoder-only row's target never),
wherever the prompt goes.

Rows may carry prompts of different lengths (a batch that mixes tasks): a row whose prompt is shorter than the
longest gets the difference as extra padding, on the side the family pads (left for decoder-only, right for the
others), so every row reads exactly as its prompt run alone.
"""

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class Joined:
    inputs_embeds: torch.Tensor  # (B, P + T, H)
    attention_mask: torch.Tensor  # (B, P + T)
    labels: torch.Tensor | None  # (B, P + T), prompt positions IGNORE_INDEX; None when labels live elsewhere
    prompt_mask: torch.Tensor  # (B, P + T) True at prompt positions


def insertion_offsets(attention_mask: torch.Tensor, after_special: int) -> torch.Tensor:
    """(B, T) mask -> (B,) index of each row's first real token, plus `after_special` leading special tokens."""
    first_real = (attention_mask == 0).long().cumprod(dim=1).sum(dim=1)  # number of left pads
    return first_real + after_special


def offset_tokens(
    attention_mask: torch.Tensor, input_offsets: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, T) mask, (B, N, H) offsets -> (B, T, H): each row's offsets at its first N real tokens, zeros elsewhere
    and at target tokens (those with `labels`)."""
    N = input_offsets.shape[1]
    position = torch.arange(attention_mask.shape[1], device=attention_mask.device) - insertion_offsets(
        attention_mask, 0
    ).unsqueeze(1)  # (B, T) from the first real token
    inside = (position >= 0) & (position < N) & (attention_mask == 1)  # (B, T)
    if labels is not None:
        inside &= labels == IGNORE_INDEX  # the input, not the target
    index = position.clamp(0, N - 1).unsqueeze(-1).expand(-1, -1, input_offsets.shape[2])  # (B, T, H)
    return input_offsets.gather(1, index) * inside.unsqueeze(-1)  # (B, T, H)


def join(
    token_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    prompts: torch.Tensor,
    offsets: torch.Tensor | int,
    labels: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    pad_left: bool = False,
    input_offsets: torch.Tensor | None = None,
) -> Joined:
    """Insert prompts (B, P, H) into token embeddings (B, T, H) at per-row `offsets` (B,), or at one column (an int).

    `lengths` (B,) gives each row's prompt length (at most P; all P when None); the P - length unused slots become
    padding on the left (`pad_left`, for left-padded batches) or at the end of the row.
    `labels`, when given, are aligned with the tokens (decoder-only training): prompt and padding get IGNORE_INDEX.
    `input_offsets` (B, N, H), when given, are added to each row's first N tokens (zeros for rows without one).
    """
    _, T, H = token_embeds.shape
    if input_offsets is not None and input_offsets.shape[1]:
        token_embeds = token_embeds + offset_tokens(attention_mask, input_offsets, labels).to(token_embeds.dtype)
    prompts = prompts.to(token_embeds.dtype)
    P = prompts.shape[1]
    if isinstance(offsets, int) and lengths is None:
        return _join_at_column(token_embeds, attention_mask, prompts, offsets, labels)
    pos = torch.arange(T + P, device=token_embeds.device).unsqueeze(0)  # (1, P + T)
    length = P if lengths is None else lengths.to(token_embeds.device).unsqueeze(1)  # int, or (B, 1)
    q = pos - (P - length) if pad_left and lengths is not None else pos  # position in the row as it reads alone
    r = q - (offsets if isinstance(offsets, int) else offsets.unsqueeze(1))  # (B, P + T) from the prompt's start
    is_prompt = (r >= 0) & (r < length)  # (B, P + T)
    token_index = torch.where(r < 0, q, q - length).clamp(0, max(T - 1, 0))  # (B, P + T)
    index = torch.where(is_prompt, r + T, token_index)  # (B, P + T) into tokens, then prompts
    embeds = torch.cat([token_embeds, prompts], 1).gather(1, index.unsqueeze(-1).expand(-1, -1, H))  # (B, P + T, H)
    mask = attention_mask.gather(1, token_index).masked_fill(is_prompt, 1)
    no_label = is_prompt
    if lengths is not None:  # the padding a shorter prompt leaves
        is_pad = (q < 0) | (q >= T + length)
        mask = mask.masked_fill(is_pad, 0)
        no_label = is_prompt | is_pad
    joined_labels = None if labels is None else labels.gather(1, token_index).masked_fill(no_label, IGNORE_INDEX)
    return Joined(embeds, mask, joined_labels, is_prompt)


def _join_at_column(
    token_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    prompts: torch.Tensor,
    at: int,
    labels: torch.Tensor | None,
) -> Joined:
    """Every row's whole prompt at column `at` (right-padded rows, no template slot): concatenation, no gather."""
    B, T, _ = token_embeds.shape
    P = prompts.shape[1]
    embeds = torch.cat([token_embeds[:, :at], prompts, token_embeds[:, at:]], 1)  # (B, P + T, H)
    mask = torch.cat([attention_mask[:, :at], attention_mask.new_ones(B, P), attention_mask[:, at:]], 1)
    is_prompt = torch.zeros(B, P + T, dtype=torch.bool, device=token_embeds.device)
    is_prompt[:, at : at + P] = True
    joined_labels = None
    if labels is not None:
        joined_labels = torch.cat([labels[:, :at], labels.new_full((B, P), IGNORE_INDEX), labels[:, at:]], 1)
    return Joined(embeds, mask, joined_labels, is_prompt)
