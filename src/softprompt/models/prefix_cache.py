"""Prompt key/value reuse for decoder-only models: a prompt is a fixed prefix, so its keys and values are computed
once and reused by every batch that runs it (scoring and greedy generation; training never uses it).

A row normally reads [left pads | BOS | prompt | text] (join.py). With reuse, the prefix [BOS | prompt] of each
distinct prompt runs once through the frozen model at positions 0..L-1 and its per-layer keys and values are kept.
A batch then stacks its rows' prefixes, left-padded to the longest, into a DynamicCache and runs only its tokens:

    cache:  [pads | BOS prompt_i]      tokens: [left pads | (BOS, masked: it is in the prefix) text]

under one attention mask that hides every pad, with each token at the position it has when the row runs alone
(L_i + its index among the row's real tokens), so every row computes what recomputing its prompt computes.

Entries are keyed by the prompt's content, so a changed prompt or a new bank is computed afresh while unchanged
prompts are kept; they are dropped when the model's weights change (moved, cast, trained or wrapped).
"""

import torch
import torch.nn.functional as F
import transformers
from packaging.version import Version
from transformers import DynamicCache, PreTrainedModel

from softprompt.core.families import DECODER_ONLY
from softprompt.core.join import IGNORE_INDEX, insertion_offsets
from softprompt.core.next_token import next_token_losses, target_window
from softprompt.models.content_cache import ContentCache, autocast_state, digest
from softprompt.options import ServeOptions

# how generate() and forward take a cache: `cache` from transformers 5.24 (which deprecates `past_key_values`), before it the old name
CACHE_ARGUMENT = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
KV = tuple[torch.Tensor, torch.Tensor]  # keys, values of every layer: (layers, heads, L, head_dim) each


def supports(model) -> bool:
    """Reuse is exact here: switched on, and a decoder-only base model of full-attention layers (no peft wrapper,
    no sliding window)."""
    if not (model.kv_reuse and model.family == DECODER_ONLY and isinstance(model.base, PreTrainedModel)):
        return False
    config = model.base.config.get_text_config(decoder=True)
    layer_types = getattr(config, "layer_types", None) or []
    return not getattr(config, "sliding_window", None) and all(t == "full_attention" for t in layer_types)


def applies(model) -> bool:
    """Reuse now: supported, and in inference (eval mode, no gradients), never in training."""
    return not model.training and not torch.is_grad_enabled() and supports(model)


class PrefixCache(ContentCache):
    """The keys and values of up to `capacity` prompt prefixes and `max_bytes` (serve's --kv_cache_mb), most recently
    used kept (None: an empty prefix). A prefix holds layers x 2 x key/value heads x head size x (leading special
    tokens + P) numbers: for a 20-token prompt of SmolLM2-135M in float32, 921,600 bytes (0.88 MB)."""

    def __init__(self, capacity: int = 32, max_bytes: int | None = ServeOptions().kv_cache_bytes):
        super().__init__(capacity, max_bytes)

    # ----- the two uses --------------------------------------------------------------------------------
    def target_logprob(self, model, batch: dict, prompt_ids: torch.Tensor) -> torch.Tensor | None:
        """(B,) summed log-probability of each row's target tokens, as `model.target_logprob` computes it; None when
        a row has no input token after its special tokens (its first target token is predicted from the prefix)."""
        mask = without_leading_special(batch["attention_mask"], model.after_special)  # (B, T)
        if not ((mask.bool() & (batch["labels"] == IGNORE_INDEX)).sum(1) > 0).all():
            return None
        cache, full_mask = self.stacked(model, prompt_ids, mask)  # (B, L + T)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, cache.get_seq_length() :]  # (B, T)
        labels = batch["labels"]
        window = {"logits_to_keep": target_window(labels, batch.get("logits_to_keep"))} if model.keeps_logits else {}
        logits = model.base(
            input_ids=batch["input_ids"],
            attention_mask=full_mask,
            position_ids=positions,
            use_cache=True,
            **{CACHE_ARGUMENT: cache},
            **window,
        ).logits  # (B, W, V)
        return -next_token_losses(logits, labels).sum(-1)

    def generate(self, model, batch: dict, prompt_ids: torch.Tensor, **options) -> torch.Tensor | None:
        """(B, N) greedy continuations of left-padded tokens after their prompts, as `base.generate` on the joined
        embeddings gives them; None when a row has no input token after its special tokens."""
        mask = without_leading_special(batch["attention_mask"], model.after_special)  # (B, T)
        if not (mask.sum(1) > 0).all():
            return None
        cache, full_mask = self.stacked(model, prompt_ids, mask)  # (B, L + T)
        L = cache.get_seq_length()
        ids = batch["input_ids"]
        placeholders = ids.new_full((ids.shape[0], L), model.tokenizer.pad_token_id)  # stand for the cached prefix
        out = model.base.generate(
            input_ids=torch.cat([placeholders, ids], 1), attention_mask=full_mask, **{CACHE_ARGUMENT: cache}, **options
        )
        return out[:, L + ids.shape[1] :]  # (B, N): the new tokens only

    # ----- the cache -----------------------------------------------------------------------------------
    def stacked(self, model, prompt_ids: torch.Tensor, token_mask: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
        """(B,) prompt ids and the (B, T) mask of the tokens to follow -> a fresh DynamicCache holding each row's
        prefix, left-padded to the longest (L), and the (B, L + T) attention mask over prefix and tokens."""
        self.forget_if_changed(model)
        distinct, rows = prompt_ids.unique(return_inverse=True)  # each prompt once
        entries = [self.prefix(model, int(i)) for i in distinct]
        lengths = torch.tensor([0 if e is None else e[0].shape[2] for e in entries], device=token_mask.device)  # (U,)
        L = int(lengths.max())
        pad = torch.arange(L, device=token_mask.device) < L - lengths[rows].unsqueeze(
            1
        )  # (B, L) True before the prefix
        full_mask = torch.cat([(~pad).to(token_mask.dtype), token_mask], 1)  # (B, L + T)
        if L == 0:
            return DynamicCache(), full_mask
        known = next(e for e in entries if e is not None)
        keys, values = (
            stack_left_padded([None if e is None else e[i] for e in entries], known[i], L, rows) for i in (0, 1)
        )  # (B, layers, heads, L, d)
        return DynamicCache(ddp_cache_data=[(keys[:, n], values[:, n]) for n in range(keys.shape[1])]), full_mask

    def prefix(self, model, prompt_id: int) -> KV | None:
        """The keys and values of [leading special tokens | prompt `prompt_id`], computed on first use."""
        prompt = model.bank.prompt(prompt_id)  # (P, H)
        special = model.tokenizer("a")["input_ids"][: model.after_special]  # BOS, as tokenize adds it
        return self.get(
            digest(prompt, special, autocast_state(model.device)), lambda: compute_prefix(model, prompt, special)
        )


def compute_prefix(model, prompt: torch.Tensor, special: list[int]) -> KV | None:
    """Run [special tokens | prompt] alone at positions 0..L-1; its per-layer keys and values, None when empty."""
    embeddings = model.input_embeddings()
    ids = torch.tensor([special], dtype=torch.long, device=model.device)  # (1, S)
    embeds = torch.cat(
        [embeddings(ids), prompt.to(embeddings.weight.dtype).unsqueeze(0).to(model.device)], 1
    )  # (1, S + P, H)
    L = embeds.shape[1]
    if L == 0:
        return None
    positions = torch.arange(L, device=model.device).unsqueeze(0)  # (1, L)
    mask = torch.ones(1, L, dtype=torch.long, device=model.device)
    body = model.base.base_model  # the decoder without its head: no logits are needed
    cache = body(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
    return torch.cat([layer.keys for layer in cache.layers]), torch.cat(
        [layer.values for layer in cache.layers]
    )  # (layers, heads, L, d)


def stack_left_padded(parts: list[torch.Tensor | None], like: torch.Tensor, L: int, rows: torch.Tensor) -> torch.Tensor:
    """U tensors (layers, heads, L_u, d) (None: L_u = 0) -> (B, layers, heads, L, d): row b holds part rows[b],
    zero-padded on the left to L."""
    empty = like[:, :, :0]  # (layers, heads, 0, d)
    padded = torch.stack(
        [F.pad(empty if p is None else p, (0, 0, L - (0 if p is None else p.shape[2]), 0)) for p in parts]
    )  # (U, layers, heads, L, d)
    return padded.expand(len(rows), *padded.shape[1:]) if len(parts) == 1 else padded[rows]


def without_leading_special(attention_mask: torch.Tensor, after_special: int) -> torch.Tensor:
    """(B, T) left-padded mask -> the same with each row's leading special tokens masked (the prefix holds them)."""
    first_real = insertion_offsets(attention_mask, 0).unsqueeze(1)  # (B, 1) left pads
    index = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)  # (1, T)
    return attention_mask.masked_fill((index >= first_real) & (index < first_real + after_special), 0)
