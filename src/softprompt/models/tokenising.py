"""Tokenising for a SoftPromptModel (a mixin of its class): inputs fitted to the positions the prompt and target
leave, padded for the model's family, with the offsets where a template's slot puts the prompt."""

import torch

from softprompt.core.families import DECODER_ONLY, ENCODER_ONLY
from softprompt.core.join import IGNORE_INDEX
from softprompt.core.placement import slot_offsets, without_slot
from softprompt.core.template import PLAIN, Template
from softprompt.errors import UserError


def leading_special_tokens(tokenizer) -> int:
    """1 when the tokenizer starts every text with a special token ([CLS], <s>, BOS), else 0."""
    with_special = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    starts_special = with_special and with_special[0] in tokenizer.all_special_ids
    return int(bool(starts_special) and with_special[1 : 1 + len(without)] == without)


class Tokenising:
    """Needs `tokenizer`, `family`, `bank`, `name`, `max_positions` and `after_special` (SoftPromptModel sets them)."""

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def input_room(self, prompt_length: int, max_target_length: int) -> int | None:
        """Positions left for the input beside a prompt and, for decoder-only, the target and its EOS (which follow
        the input); None when the model has no position limit (T5)."""
        if self.max_positions is None:
            return None
        target = max_target_length + 1 if self.family == DECODER_ONLY else 0
        return self.max_positions - prompt_length - target

    def input_budget(self, max_input_length: int, max_target_length: int) -> int:
        """How many input tokens (special tokens included) fit beside the prompt and, for decoder-only, the target."""
        room = self.input_room(self.bank.length, max_target_length)
        if room is None:
            return max_input_length
        if room < 1:
            target = self.family == DECODER_ONLY
            raise UserError(
                f"--prompt.length {self.bank.length}"
                + (f" and --data.max_target_length {max_target_length}" if target else "")
                + f" leave no room for the input: {self.name} has {self.max_positions} positions"
            )
        return min(max_input_length, room)

    def count_input_tokens(self, text: str) -> int:
        """Tokens of an input as the model sees it, special tokens included."""
        return len(self.tokenizer(without_slot(text))["input_ids"])

    def fit_inputs(self, inputs: list, template: Template | None, budget: int) -> list[str]:
        """Render each input (a text, or a dict of fields for `template`) to at most `budget` tokens."""
        if template is None:
            template, inputs = PLAIN, [{"": text} for text in inputs]
        texts = [template.render(values) for values in inputs]
        lengths = [len(ids) for ids in self.tokenizer([without_slot(t) for t in texts])["input_ids"]]
        return [
            text if n <= budget else template.fit(values, self.count_input_tokens, budget)
            for text, n, values in zip(texts, lengths, inputs)
        ]

    def tokenize(
        self,
        inputs: list,
        targets: list[str] | None = None,
        *,
        template: Template | None = None,
        max_input_length: int = 512,
        max_target_length: int = 8,
        fit: bool = True,
    ) -> dict[str, torch.Tensor | int]:
        """Inputs (texts, or dicts of fields for `template`) -> padded tensors for this family: input_ids,
        attention_mask and, with targets, labels (decoder-only: and `logits_to_keep`, an int); and `prompt_offsets`
        (B,), where each row's prompt goes, when a template's slot puts it elsewhere than after the leading special
        token in some row. Long inputs are cut by the template (never special tokens, nor the slot); `fit=False` takes
        texts already fitted."""
        texts = (
            self.fit_inputs(inputs, template, self.input_budget(max_input_length, max_target_length))
            if fit
            else list(inputs)
        )
        tok = self.tokenizer
        if self.family == DECODER_ONLY:
            return self._tokenize_decoder_only(texts, targets, max_target_length)
        batch = tok([without_slot(t) for t in texts], padding=True, return_tensors="pt")
        out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        self._add_offsets(
            out, slot_offsets(tok, texts, batch["input_ids"].tolist(), self.after_special)
        )  # right padding
        if targets is not None:
            if self.family == ENCODER_ONLY:
                raise UserError("an encoder-only model predicts labels, not text: use a classification task")
            labels = tok(
                text_target=list(targets),
                truncation=True,
                max_length=max_target_length,
                padding=True,
                return_tensors="pt",
            )
            out["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, IGNORE_INDEX)
        return out

    def _tokenize_decoder_only(self, texts, targets, max_target_length):
        tok = self.tokenizer
        sources = tok([without_slot(t) for t in texts])["input_ids"]
        slots = slot_offsets(tok, texts, sources, self.after_special)
        rows, label_rows = [], []
        for i, src in enumerate(sources):
            tgt = []
            if targets is not None:
                tgt = (tok(" " + targets[i].strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[
                    :max_target_length
                ]
            rows.append(src + tgt)
            label_rows.append([IGNORE_INDEX] * len(src) + tgt)
        width = max(len(r) for r in rows)
        pad = lambda r, value: [value] * (width - len(r)) + r  # left padding  # noqa: E731
        out = {
            "input_ids": torch.tensor([pad(r, tok.pad_token_id) for r in rows]),
            "attention_mask": torch.tensor([pad([1] * len(r), 0) for r in rows]),
        }
        if targets is not None:
            out["labels"] = torch.tensor([pad(r, IGNORE_INDEX) for r in label_rows])
            # the last positions that predict a target token (as target_window reads them from the labels)
            out["logits_to_keep"] = max(len(r) - len(src) for r, src in zip(rows, sources)) + 1
        self._add_offsets(out, [width - len(r) + slot for r, slot in zip(rows, slots)], [width - len(r) for r in rows])
        return out

    def _add_offsets(self, batch: dict, offsets: list[int], left_pads: list[int] | None = None) -> None:
        """Put `prompt_offsets` in the batch unless every row's prompt sits where `joined` puts it by default."""
        default = [pads + self.after_special for pads in (left_pads or [0] * len(offsets))]
        if offsets != default:
            batch["prompt_offsets"] = torch.tensor(offsets)


def batch_to(batch: dict, device) -> dict:
    """A batch's tensors on `device` (its other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
