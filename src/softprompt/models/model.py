"""The frozen model with a prompt bank: the forward pass and prediction; loading (loading.py), tokenising
(tokenising.py), prompt initialisation (initialising.py) and the encoder readout (readout.py) beside it.

Three families share one join (join.py):
- encoder-decoder (T5, BART): prompt before the encoder input; the decoder sees the target;
- decoder-only (GPT-2, Llama): prompt directly before the text (after left padding); prompt labels -100;
- encoder-only (BERT, MiniLM): prompt after [CLS]; prediction by cosine similarity between the mean-pooled
  sentence embedding and the mean-pooled embeddings of the label texts, both under the row's prompt (no trainable head).
A template's `{prompt}` slot (placement.py) moves the prompt into the text: `tokenize` then adds `prompt_offsets`.
"""

import dataclasses
import inspect
import os

import torch
import torch.nn.functional as F
from torch import nn

from softprompt.core.attention import finite_attention
from softprompt.core.bank import PromptBank
from softprompt.core.families import DECODER_ONLY, ENCODER_DECODER, ENCODER_ONLY, FAMILIES
from softprompt.core.join import IGNORE_INDEX, Joined, insertion_offsets, join
from softprompt.core.next_token import next_token_losses, target_window
from softprompt.core.template import Template
from softprompt.errors import UserError
from softprompt.files.prompt_file import embedding_fingerprint
from softprompt.models.anchor_cache import AnchorCache
from softprompt.models.embedded import EMBEDDED_MODEL
from softprompt.models.initialising import Initialising
from softprompt.models.loading import detect_family, load_pretrained, max_positions
from softprompt.models.prefix_cache import PrefixCache
from softprompt.models.prefix_cache import applies as cache_applies
from softprompt.models.readout import EncoderReadout, cosine, mean_pool
from softprompt.models.sharding import whole, whole_numel, whole_shape
from softprompt.models.tokenising import Tokenising, batch_to, leading_special_tokens
from softprompt.options import ModelOptions


class SoftPromptModel(Tokenising, Initialising, EncoderReadout, nn.Module):
    """A frozen Hugging Face model and a bank of soft prompts; only the bank can be trained."""

    def __init__(
        self,
        base: nn.Module,
        tokenizer,
        family: str | None = None,
        name: str = "",
        bank: PromptBank | None = None,
        readout_scale: float = 20.0,
    ):
        super().__init__()
        self.family = family or detect_family(base.config)
        if self.family not in FAMILIES:
            raise UserError(f"--model.family: {self.family!r} is not one of {', '.join(FAMILIES)}")
        self.base = base.requires_grad_(False)
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:  # GPT-2 and friends
            tokenizer.pad_token = tokenizer.eos_token
        self.name = name or getattr(base.config, "_name_or_path", "") or base.config.model_type
        self.after_special = leading_special_tokens(tokenizer)
        self.max_positions = max_positions(base)
        self.readout_scale = readout_scale
        self.bank = bank if bank is not None else PromptBank.empty(self.hidden)
        self.label_batch: dict[str, torch.Tensor] | None = None  # encoder-only: tokenised label texts
        # decoder-only inference: each prompt's keys and values computed once and reused (prefix_cache.py)
        self.kv_reuse = os.environ.get("SOFTPROMPT_KV_REUSE", "1").strip().lower() not in ("0", "false", "no", "off")
        self.prefix_cache = PrefixCache()
        # decoder-only: the LM head runs only over the positions that predict a target token (target_window)
        self.keeps_logits = "logits_to_keep" in inspect.signature(type(base).forward).parameters
        self.anchor_cache = AnchorCache()  # encoder-only inference: each (prompt, label text) anchor computed once
        self.eval()  # inference by default; training switches dropout on explicitly

    @classmethod
    def load(cls, model: "str | ModelOptions | None" = None, **options) -> "SoftPromptModel":
        """Load a frozen model with the Auto classes (loading.py): `model` is a hub name or local folder, or
        ModelOptions, and keywords set ModelOptions fields (family, dtype, readout_scale, trust_pickle); unset, the
        embedded all-MiniLM-L6-v2. Weights come from safetensors only unless trust_pickle (pickles.py)."""
        chosen = model if isinstance(model, ModelOptions) else ModelOptions(name=model)
        chosen = dataclasses.replace(chosen, **options)
        base, tokenizer, family, recorded = load_pretrained(
            chosen.name or EMBEDDED_MODEL, chosen.family, chosen.dtype, chosen.trust_pickle
        )
        model = cls(base, tokenizer, family, recorded, readout_scale=chosen.readout_scale)
        if chosen.compile:
            model.base.compile(dynamic=True)  # in place: the module, its parameters and their names stay as they are
        return model

    def tie_weights(self, *args, **kwargs) -> None:
        """The base model's shared weights (tied input and output embeddings) shared again, as accelerate asks of the
        model it shards after moving it to the meta device and back (FSDP's `fsdp_cpu_ram_efficient_loading`)."""
        self.base.tie_weights(*args, **kwargs)

    # ----- sizes and identity -------------------------------------------------------------------------
    def input_embeddings(self) -> nn.Embedding:
        return self.base.get_input_embeddings()

    @property
    def hidden(self) -> int:
        return whole_shape(self.input_embeddings().weight)[1]

    @property
    def device(self) -> torch.device:
        return self.input_embeddings().weight.device

    @property
    def weights_dtype(self) -> str:
        """The frozen weights' dtype, as options spell it ("float32", "bfloat16", ...)."""
        return str(next(self.base.parameters()).dtype).removeprefix("torch.")

    def embedding_matrix(self):
        """A context holding the (V, H) input-embedding matrix whole, however FSDP or DeepSpeed shards it (every
        process enters it together)."""
        return whole(self.input_embeddings().weight)

    def fingerprint(self) -> str:
        with self.embedding_matrix() as weights:
            return embedding_fingerprint(weights)

    def base_parameters(self) -> int:
        return sum(whole_numel(p) for p in self.base.parameters())

    def base_bytes(self) -> int:
        return sum(whole_numel(p) * p.element_size() for p in self.base.parameters())

    def identity(self) -> dict:
        """What a prompt file records about the model it belongs to."""
        return {
            "base_model": self.name,
            "family": self.family,
            "hidden_size": self.hidden,
            "vocab_size": whole_shape(self.input_embeddings().weight)[0],
            "embedding_fingerprint": self.fingerprint(),
        }

    # ----- prompts ------------------------------------------------------------------------------------
    def check_prompt_length(self, length: int, source: str = "") -> None:
        """Refuse a prompt that fills every position the model has, before it is built or run; `source` names where
        its length comes from (the option by default)."""
        if self.max_positions is not None and length >= self.max_positions:
            what = f"{source}: a prompt of {length} vectors" if source else f"--prompt.length {length}"
            raise UserError(f"{what} leaves no room for the input: {self.name} has {self.max_positions} positions")

    # ----- forward ------------------------------------------------------------------------------------
    def joined(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        prompt_offsets: torch.Tensor | None = None,
        inputs: bool = True,
    ) -> Joined:
        """Embed the tokens and insert each row's prompt at its `prompt_offsets` (from `tokenize`; by default right
        after left padding and the leading special token; with a tokenizer that pads on the right, the rows are taken
        to be padded on the right, so that column is the same for every row): (B, T) -> (B, P + T, H). The prompt's
        input offset (DePT) is added to the tokens when they are `inputs` (not label texts)."""
        token_embeds = self.input_embeddings()(input_ids)  # (B, T, H)
        left = self.family == DECODER_ONLY
        if prompt_offsets is not None:
            offsets = prompt_offsets.to(input_ids.device)  # (B,)
        elif left or self.tokenizer.padding_side != "right":
            offsets = insertion_offsets(attention_mask, self.after_special)  # (B,) after each row's left padding
        else:
            offsets = self.after_special  # right-padded rows all start with their text: one column
        prompts, lengths = self.bank(prompt_ids)  # (B, P_max, H), (B,) or None
        return join(
            token_embeds,
            attention_mask,
            prompts,
            offsets,
            labels if left else None,
            lengths,
            pad_left=left,
            input_offsets=self.bank.offsets(prompt_ids) if inputs else None,
        )

    def prompt_first(self, batch: dict, prompt_ids: torch.Tensor) -> bool:
        """True when every row of a `tokenize` batch reads [leading special token] + prompt + its tokens, unchanged:
        no template slot moves a prompt into the text and no prompt adds an input offset (DePT), so that the
        tokens before and including the prompt are the same for every row of a prompt."""
        return "prompt_offsets" not in batch and self.bank.offsets(prompt_ids) is None

    def clear_caches(self) -> None:
        """Drop every cached prompt key/value and label anchor (their entries would be stale after a training step)."""
        self.prefix_cache.clear()
        self.anchor_cache.clear()

    def reuses_prefixes(self, batch: dict, prompt_ids: torch.Tensor) -> bool:
        """Whether this inference batch runs on cached prompt keys and values (prefix_cache.py): decoder-only, not
        training, and every row's prompt first."""
        return cache_applies(self) and self.prompt_first(batch, prompt_ids)

    def _run(self, j: Joined, labels: torch.Tensor | None = None, logits_to_keep: int | None = None):
        """The base model on joined embeddings; its logits only (the loss is ours, see `target_losses`).
        Decoder-only with labels: the LM head runs over the last `logits_to_keep` positions (`tokenize` counts them;
        when None they are read from the labels, which on a GPU waits for them)."""
        with finite_attention(j.inputs_embeds.device):
            return self._run_base(j, labels, logits_to_keep)

    def _run_base(self, j: Joined, labels: torch.Tensor | None, logits_to_keep: int | None):
        if self.family == ENCODER_DECODER:
            decoder_input_ids = (
                self.base.prepare_decoder_input_ids_from_labels(labels=labels) if labels is not None else None
            )
            return self.base(
                inputs_embeds=j.inputs_embeds, attention_mask=j.attention_mask, decoder_input_ids=decoder_input_ids
            )
        if self.family == DECODER_ONLY:
            position_ids = (j.attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding does not shift positions
            window = (
                {"logits_to_keep": target_window(j.labels, logits_to_keep)}
                if j.labels is not None and self.keeps_logits
                else {}
            )
            return self.base(
                inputs_embeds=j.inputs_embeds, attention_mask=j.attention_mask, position_ids=position_ids, **window
            )
        return self.base(inputs_embeds=j.inputs_embeds, attention_mask=j.attention_mask)

    def target_losses(self, logits: torch.Tensor, j: Joined, labels: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy of each target token (0 elsewhere), from the logits of `_run`: (B, T), or (B, W - 1) over the
        decoder-only target window."""
        if self.family == DECODER_ONLY:
            return next_token_losses(logits, j.labels)  # position t predicts token t + 1
        return F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")

    def forward(
        self,
        input_ids,
        attention_mask,
        prompt_ids,
        labels=None,
        class_ids=None,
        prompt_offsets=None,
        logits_to_keep: int | None = None,
    ):
        """Returns the base model's output; with labels (or class_ids, encoder-only) also the loss.

        `.loss` is the mean over the batch's target tokens (rows, for encoder-only classification); `.loss_sum` and
        `.loss_items` are its sum and count, so that accumulated micro-batches weigh as one batch (accumulate.py).
        Decoder-only with labels: `.logits` covers the last positions only, from the one before the first target
        token on (`target_window`; `logits_to_keep` from `tokenize` gives it without reading the labels); the LM head
        does not run where no loss is taken.
        """
        j = self.joined(input_ids, attention_mask, prompt_ids, labels, prompt_offsets)
        out = self._run(j, labels, logits_to_keep)
        losses = None
        if self.family == ENCODER_ONLY:
            out.sentence_embeds = mean_pool(
                out.last_hidden_state, j.attention_mask
            )  # (B, H), prompt positions included
            if self.label_batch is not None:
                anchors = self.label_anchors(prompt_ids)  # (B, L, H)
                out.logits = self.readout_scale * cosine(out.sentence_embeds, anchors)  # (B, L)
                if class_ids is not None:
                    losses = F.cross_entropy(out.logits.float(), class_ids, reduction="none")  # (B,)
                    out.loss_items = torch.full((), len(class_ids), device=losses.device)  # no copy from the host
        elif labels is not None:
            losses = self.target_losses(out.logits, j, labels)
            out.loss_items = (labels != IGNORE_INDEX).sum()
        if losses is not None:
            out.loss_sum = losses.sum()
            out.loss = out.loss_sum / out.loss_items.clamp(min=1)
        return out

    # ----- prediction ---------------------------------------------------------------------------------
    def _prompt_ids(self, n: int, prompt_ids) -> torch.Tensor:
        if prompt_ids is None:
            return torch.zeros(n, dtype=torch.long, device=self.device)
        return torch.as_tensor(prompt_ids, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def class_scores(
        self,
        inputs: list,
        label_texts: list[str],
        prompt_ids=None,
        *,
        template: Template | None = None,
        max_input_length: int = 512,
    ) -> torch.Tensor:
        """(B, L) scores of each label for each input: cosine (encoder-only) or target log-likelihood (rank classification).

        Inputs are texts, or dicts of fields for `template`."""
        texts = self.fit_inputs(
            inputs, template, self.input_budget(max_input_length, self.label_target_length(label_texts))
        )
        return torch.stack(self.score_labels(texts, [label_texts] * len(texts), prompt_ids))

    def label_target_length(self, label_texts: list[str]) -> int:
        """Target tokens to hold for scoring these labels (with room for EOS)."""
        return max(len(self.token_ids(t)) for t in label_texts) + 2

    @torch.no_grad()
    def score_labels(self, texts: list[str], label_sets: list[list[str]], prompt_ids=None) -> list[torch.Tensor]:
        """Rows of different tasks in one pass: each text (already fitted to the model, see `fit_inputs`) scored
        against its own label texts under its own prompt -> one (L_b,) tensor of scores per row."""
        ids = self._prompt_ids(len(texts), prompt_ids)
        sizes = [len(labels) for labels in label_sets]
        if self.family == ENCODER_ONLY:
            batch = batch_to(self.tokenize(texts, fit=False), self.device)
            sentences = self.pooled(
                batch["input_ids"], batch["attention_mask"], ids, batch.get("prompt_offsets")
            )  # (B, H)
            pairs = list(
                dict.fromkeys((int(i), t) for i, labels in zip(ids, label_sets) for t in labels)
            )  # distinct (prompt, label)
            anchors = self.pooled_labels(pairs) if self.training else self.anchor_cache.anchors(self, pairs)  # (N, H)
            index = {pair: k for k, pair in enumerate(pairs)}
            return [
                self.readout_scale
                * cosine(sentences[b : b + 1], anchors[[index[(int(ids[b]), t)] for t in labels]].unsqueeze(0))[
                    0
                ].float()
                for b, labels in enumerate(label_sets)
            ]
        repeated = [text for text, labels in zip(texts, label_sets) for _ in labels]
        targets = [t for labels in label_sets for t in labels]
        batch = self.tokenize(
            repeated,
            targets,
            max_target_length=max(self.label_target_length(labels) for labels in label_sets),
            fit=False,
        )
        flat = self.target_logprob(
            batch_to(batch, self.device), ids.repeat_interleave(torch.tensor(sizes, device=self.device))
        )
        return list(flat.split(sizes))

    def target_logprob(self, batch: dict, prompt_ids: torch.Tensor) -> torch.Tensor:
        """(B,) summed log-probability of each row's target tokens."""
        if (
            self.reuses_prefixes(batch, prompt_ids)
            and (reused := self.prefix_cache.target_logprob(self, batch, prompt_ids)) is not None
        ):
            return reused
        j = self.joined(
            batch["input_ids"], batch["attention_mask"], prompt_ids, batch["labels"], batch.get("prompt_offsets")
        )
        logits = self._run(j, batch["labels"], batch.get("logits_to_keep")).logits
        return -self.target_losses(logits, j, batch["labels"]).sum(-1)

    @torch.no_grad()
    def generate(
        self,
        inputs: list,
        prompt_ids=None,
        *,
        template: Template | None = None,
        max_new_tokens: int = 16,
        max_input_length: int = 512,
        max_time: float | None = None,
    ) -> list[str]:
        """Greedy decoding of each input (a text, or a dict of fields for `template`) with its prompt; `max_time`
        (seconds) stops it early, after the step that passes it."""
        if self.family == ENCODER_ONLY:
            raise UserError("an encoder-only model does not generate text: use a classification task")
        batch = batch_to(
            self.tokenize(
                inputs, template=template, max_input_length=max_input_length, max_target_length=max_new_tokens
            ),
            self.device,
        )
        ids = self._prompt_ids(len(inputs), prompt_ids)
        greedy = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            max_time=max_time,
        )
        out = self.prefix_cache.generate(self, batch, ids, **greedy) if self.reuses_prefixes(batch, ids) else None
        if out is None:
            j = self.joined(
                batch["input_ids"], batch["attention_mask"], ids, prompt_offsets=batch.get("prompt_offsets")
            )
            out = self.base.generate(inputs_embeds=j.inputs_embeds, attention_mask=j.attention_mask, **greedy)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
