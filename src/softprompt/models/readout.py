"""The encoder-only readout of a SoftPromptModel (a mixin of its class): an input's mean-pooled embedding compared by
cosine with each label text's, both under the row's prompt; no trainable head."""

import torch
import torch.nn.functional as F

from softprompt.core.bank import rows_of
from softprompt.core.families import ENCODER_ONLY
from softprompt.errors import UserError
from softprompt.models.tokenising import batch_to


class EncoderReadout:
    """Needs `tokenizer`, `family`, `bank`, `name`, `max_positions`, `device`, `joined` and `_run` (SoftPromptModel)."""

    def set_labels(self, label_texts: list[str]) -> None:
        """Encoder-only: the label texts (verbalizers) whose embeddings the sentence embedding is compared with."""
        if self.family == ENCODER_ONLY:
            self.label_batch = dict(self.tokenizer(list(label_texts), padding=True, return_tensors="pt"))

    def check_label_room(self, label_texts: list[str], prompt_length: int | None = None) -> None:
        """Encoder-only: refuse a label text that, beside the prompt (the bank's longest by default), overflows the
        model's positions; each label is embedded under the prompt as an input is."""
        if self.family != ENCODER_ONLY or self.max_positions is None:
            return
        length = self.bank.length if prompt_length is None else prompt_length
        for text in label_texts:
            n = len(self.tokenizer(text)["input_ids"])
            if n + length > self.max_positions:
                shown = text if len(text) <= 40 else text[:40] + "..."
                raise UserError(
                    f"--data.verbalizers: the label text {shown!r} has {n} tokens, which beside a {length}-vector prompt overflow {self.name}'s {self.max_positions} positions"
                )

    def label_anchors(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """(B,) prompt ids -> (B, L, H): each label text's mean-pooled embedding under the row's own prompt.

        The prompt conditions the label texts as it conditions the input (as a T5 prompt conditions both encoder
        and decoder); with an empty prompt these are the frozen model's plain label embeddings.
        """
        if len(self.bank) <= len(prompt_ids):  # every prompt of the bank (one, in training): nothing to read back
            ids, rows = torch.arange(len(self.bank), device=prompt_ids.device), prompt_ids
        else:
            ids, rows = prompt_ids.unique(return_inverse=True)  # each distinct prompt once
        if self.label_batch["input_ids"].device != self.device:  # copied once, not every step
            self.label_batch = batch_to(self.label_batch, self.device)
        label_ids, label_mask = self.label_batch["input_ids"], self.label_batch["attention_mask"]  # (L, T)
        L = label_ids.shape[0]
        anchors = self.pooled(
            label_ids.repeat(len(ids), 1), label_mask.repeat(len(ids), 1), ids.repeat_interleave(L), inputs=False
        )
        return rows_of(anchors.view(len(ids), L, -1), rows)  # (B, L, H)

    def pooled(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_ids: torch.Tensor,
        prompt_offsets: torch.Tensor | None = None,
        inputs: bool = True,
    ) -> torch.Tensor:
        """Encoder-only: (B, T) tokens, each row under its prompt -> (B, H) mean-pooled embeddings, prompt included;
        `inputs=False` for label texts."""
        j = self.joined(input_ids, attention_mask, prompt_ids, prompt_offsets=prompt_offsets, inputs=inputs)
        return mean_pool(self._run(j).last_hidden_state, j.attention_mask)

    def pooled_labels(self, pairs: list[tuple[int, str]]) -> torch.Tensor:
        """Encoder-only: (prompt id, label text) pairs -> (N, H) each label text's embedding under its prompt."""
        label_batch = batch_to(
            dict(self.tokenizer([t for _, t in pairs], padding=True, return_tensors="pt")), self.device
        )
        return self.pooled(
            label_batch["input_ids"],
            label_batch["attention_mask"],
            torch.tensor([i for i, _ in pairs], device=self.device),
            inputs=False,
        )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean over attended positions (sentence-transformers pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, H), (B, L, H) -> (B, L) cosine similarities."""
    return torch.einsum("bh,blh->bl", F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1))
