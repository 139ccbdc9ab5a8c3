"""Label anchors reused for encoder-only models: a label text's embedding under a prompt (model.py `label_anchors`)
depends only on that prompt and that text, so in inference each (prompt, label text) pair is computed once and
reused by every batch, every task sharing the prompt's bank and every ensemble member, instead of once per batch.
Keyed by content (the prompt's values, the label text, autocast), so a changed prompt is computed afresh; dropped
when the frozen weights change."""

import torch

from softprompt.models.content_cache import ContentCache, autocast_state, digest


class AnchorCache(ContentCache):
    """(H,) anchors of up to `capacity` (prompt, label text) pairs."""

    def __init__(self, capacity: int = 4096):
        super().__init__(capacity)

    def anchors(self, model, pairs: list[tuple[int, str]]) -> torch.Tensor:
        """(prompt id, label text) pairs -> (N, H) anchors, the missing ones computed in one pass."""
        self.forget_if_changed(model)
        precision = autocast_state(model.device)
        prompts = {i: digest(model.bank.prompt(i), precision) for i in {i for i, _ in pairs}}
        keys = [f"{prompts[i]} {text}" for i, text in pairs]
        found = [self.lookup(key) for key in keys]
        missing = [k for k, (hit, _) in enumerate(found) if not hit]
        computed = model.pooled_labels([pairs[k] for k in missing]) if missing else None  # (M, H)
        for n, k in enumerate(missing):
            self.store(keys[k], computed[n].clone())  # its own H numbers, not a view keeping the batch's alive
            found[k] = (True, computed[n])
        return torch.stack([anchor for _, anchor in found])  # (N, H)
