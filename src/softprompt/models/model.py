"""The frozen model with a prompt bank: family detection, tokenisation, forward, generation and readout.

Three families share one join (join.py):
- encoder-decoder (T5, BART): prompt before the encoder input; the decoder sees the target;
- decoder-only (GPT-2, Llama): prompt directly before the text (after left padding); prompt labels -100;
- encoder-only (BERT, MiniLM): prompt after [CLS]; prediction by cosine similarity between the mean-pooled
  sentence embedding and the mean-pooled embeddings of the label texts, both under the row's prompt (no trainable head).
A template's `{prompt}` slot (placement.py) moves the prompt into the text: `tokenize` then adds `prompt_offsets`.
"""

import inspect
import os

import torch
import torch.nn.functional as F
from torch import nn

from softprompt.core import initialisers
from softprompt.core.attention import finite_attention
from softprompt.core.bank import PromptBank, rows_of
from softprompt.core.families import DECODER_ONLY, ENCODER_DECODER, ENCODER_ONLY, FAMILIES
from softprompt.core.join import IGNORE_INDEX, Joined, insertion_offsets, join
from softprompt.core.next_token import next_token_losses, target_window
from softprompt.core.placement import slot_offsets, without_slot
from softprompt.core.template import PLAIN, Template
from softprompt.errors import UserError, first_line
from softprompt.files.prompt_file import embedding_fingerprint
from softprompt.models import embedded
from softprompt.models.anchor_cache import AnchorCache
from softprompt.models.pickles import hub_pickle_message, refuse_pickled_folder
from softprompt.models.prefix_cache import PrefixCache
from softprompt.models.prefix_cache import applies as cache_applies
from softprompt.models.sharding import loading_in, whole, whole_numel, whole_shape


def checkpoint_dtype(config) -> torch.dtype:
    """The dtype a model's weights are stored in, by its config (float32 when it does not say)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def resolve_model_path(name: str) -> str:
    """What to load for a model name: an embedded model's folder (offline, see embedded.py), a local folder as an
    absolute path, or else a hub id.

    The hub name of an embedded model (all-MiniLM-L6-v2, SmolLM2-135M-Instruct) means its embedded copy unless a local
    folder has that name. A name is a local folder when it exists, starts like a path (/ ./ ../ ~) or has more than one
    '/'; a missing folder fails at once instead of after the hub's retries."""
    if name in embedded.MODELS and not os.path.isdir(name):
        return embedded.materialise(name)
    path = os.path.expanduser(name)
    if os.path.exists(path) or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        if not os.path.isdir(path):
            raise UserError(f"model folder {name}: " + ("not a folder" if os.path.exists(path) else "no such folder"))
        return os.path.abspath(path)
    return name


def detect_family(config) -> str:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        return ENCODER_DECODER
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return DECODER_ONLY
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return ENCODER_ONLY
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return DECODER_ONLY
    raise UserError(
        f"cannot tell the family of model type {config.model_type!r}: set --model.family to one of {', '.join(FAMILIES)}"
    )


def leading_special_tokens(tokenizer) -> int:
    """1 when the tokenizer starts every text with a special token ([CLS], <s>, BOS), else 0."""
    with_special = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    starts_special = with_special and with_special[0] in tokenizer.all_special_ids
    return int(bool(starts_special) and with_special[1 : 1 + len(without)] == without)


def max_positions(base: nn.Module) -> int | None:
    """How many positions the model can attend over; None for relative positions (T5: no hard limit)."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(base.config, key, None)
        if isinstance(value, int) and value > 0:
            table = getattr(getattr(base, "embeddings", None), "position_embeddings", None)
            if isinstance(table, nn.Embedding) and table.padding_idx is not None:
                return value - table.padding_idx - 1  # RoBERTa-style: positions are counted from padding_idx + 1
            return value
    return None


class SoftPromptModel(nn.Module):
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
    def load(
        cls,
        name: str,
        family: str | None = None,
        dtype: str = "auto",
        readout_scale: float = 20.0,
        trust_pickle: bool = False,
    ) -> "SoftPromptModel":
        """Load a model by hub name or local folder with the Auto classes, frozen; its weights from safetensors only
        unless `trust_pickle` (pickles.py)."""
        import transformers

        transformers.utils.logging.disable_progress_bar()
        path = resolve_model_path(name)
        local = os.path.isdir(path)
        if local and not trust_pickle:
            refuse_pickled_folder(path, name)
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=local)
            family = family or detect_family(config)
            auto = {
                ENCODER_DECODER: transformers.AutoModelForSeq2SeqLM,
                DECODER_ONLY: transformers.AutoModelForCausalLM,
                ENCODER_ONLY: transformers.AutoModel,
            }[family]
            torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
            with loading_in(checkpoint_dtype(config) if dtype == "auto" else torch_dtype):  # under ZeRO-3
                base = auto.from_pretrained(
                    path, dtype=torch_dtype, local_files_only=local, use_safetensors=None if trust_pickle else True
                )
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=local)
        except (OSError, ValueError) as e:
            reason = first_line(e)
            if not local and not trust_pickle and "use_safetensors" in reason:
                raise UserError(hub_pickle_message(name)) from None
            if local:
                raise UserError(f"model folder {name}: cannot load it ({reason})") from None
            raise UserError(f"model {name!r}: cannot load it ({reason}); offline, give a local folder") from None
        # prompt files record a local folder as an absolute path, so that they work from any directory
        recorded = path if local and name not in embedded.MODELS else name
        return cls(base.eval(), tokenizer, family, recorded, readout_scale=readout_scale)

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
    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def initial_prompt(
        self,
        init: str,
        length: int,
        *,
        text: str = "",
        labels: list[str] = (),
        first_n: int = 5000,
        scale: float = 0.5,
        seed: int = 0,
    ) -> torch.Tensor:
        """A (P, H) prompt from one of the initialisers: random, vocab, labels, text."""
        with self.embedding_matrix() as weights:
            return self._initial_prompt(
                weights, init, length, text=text, labels=labels, first_n=first_n, scale=scale, seed=seed
            )

    def _initial_prompt(
        self,
        weights: torch.Tensor,
        init: str,
        length: int,
        *,
        text: str,
        labels: list[str],
        first_n: int,
        scale: float,
        seed: int,
    ) -> torch.Tensor:
        self.check_prompt_length(length)
        generator = torch.Generator().manual_seed(seed)
        special = frozenset(self.tokenizer.all_special_ids)
        if init in ("vocab", "labels"):
            sampled = length - min(len(labels), length) if init == "labels" else length
            usable = len(initialisers.vocab_candidates(weights.shape[0], first_n, special))
            if sampled > usable:
                raise UserError(
                    f"--prompt.length {length}: --prompt.init={init} samples {sampled} distinct tokens, and the first "
                    f"{first_n} ids of {self.name}'s vocabulary (--prompt.vocab_first_n) hold {usable} that are not special tokens"
                )
        if init == "random":
            return initialisers.random_uniform(length, self.hidden, scale, generator)
        if init == "vocab":
            return initialisers.sampled_vocab(weights, length, first_n, special, generator)
        if init == "labels":
            if not labels:
                raise UserError("--prompt.init=labels needs a classification task with verbalizers")
            return initialisers.class_labels(
                weights, [self.token_ids(t) for t in labels], length, first_n, special, generator
            )
        if init == "text":
            if not text:
                raise UserError("--prompt.init=text needs --prompt.text")
            return initialisers.from_token_ids(weights, self.token_ids(text), length)
        raise UserError(f"--prompt.init: unknown initialiser {init!r} (random, vocab, labels, text, or a prompt file)")

    def check_prompt_length(self, length: int, source: str = "") -> None:
        """Refuse a prompt that fills every position the model has, before it is built or run; `source` names where
        its length comes from (the option by default)."""
        if self.max_positions is not None and length >= self.max_positions:
            what = f"{source}: a prompt of {length} vectors" if source else f"--prompt.length {length}"
            raise UserError(f"{what} leaves no room for the input: {self.name} has {self.max_positions} positions")

    # ----- tokenisation -------------------------------------------------------------------------------
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
    ) -> dict[str, torch.Tensor]:
        """Inputs (texts, or dicts of fields for `template`) -> padded tensors for this family: input_ids,
        attention_mask and, with targets, labels; and `prompt_offsets` (B,), where each row's prompt goes, when a
        template's slot puts it elsewhere than after the leading special token in some row. Long inputs are cut by the
        template (never special tokens, nor the slot); `fit=False` takes texts already fitted."""
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
        self._add_offsets(out, [width - len(r) + slot for r, slot in zip(rows, slots)], [width - len(r) for r in rows])
        return out

    def _add_offsets(self, batch: dict, offsets: list[int], left_pads: list[int] | None = None) -> None:
        """Put `prompt_offsets` in the batch unless every row's prompt sits where `joined` puts it by default."""
        default = [pads + self.after_special for pads in (left_pads or [0] * len(offsets))]
        if offsets != default:
            batch["prompt_offsets"] = torch.tensor(offsets)

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
        after left padding and the leading special token): (B, T) -> (B, P + T, H). The prompt's input offset (DePT)
        is added to the tokens when they are `inputs` (not label texts)."""
        token_embeds = self.input_embeddings()(input_ids)  # (B, T, H)
        offsets = (
            insertion_offsets(attention_mask, self.after_special)
            if prompt_offsets is None
            else prompt_offsets.to(input_ids.device)
        )  # (B,)
        prompts, lengths = self.bank(prompt_ids)  # (B, P_max, H), (B,)
        left = self.family == DECODER_ONLY
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

    def _run(self, j: Joined, labels: torch.Tensor | None = None):
        """The base model on joined embeddings; its logits only (the loss is ours, see `target_losses`)."""
        with finite_attention(j.inputs_embeds.device):
            return self._run_base(j, labels)

    def _run_base(self, j: Joined, labels: torch.Tensor | None):
        if self.family == ENCODER_DECODER:
            decoder_input_ids = (
                self.base.prepare_decoder_input_ids_from_labels(labels=labels) if labels is not None else None
            )
            return self.base(
                inputs_embeds=j.inputs_embeds, attention_mask=j.attention_mask, decoder_input_ids=decoder_input_ids
            )
        if self.family == DECODER_ONLY:
            position_ids = (j.attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding does not shift positions
            window = {"logits_to_keep": target_window(j.labels)} if j.labels is not None and self.keeps_logits else {}
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

    def forward(self, input_ids, attention_mask, prompt_ids, labels=None, class_ids=None, prompt_offsets=None):
        """Returns the base model's output; with labels (or class_ids, encoder-only) also the loss.

        `.loss` is the mean over the batch's target tokens (rows, for encoder-only classification); `.loss_sum` and
        `.loss_items` are its sum and count, so that accumulated micro-batches weigh as one batch (accumulate.py).
        Decoder-only with labels: `.logits` covers the last positions only, from the one before the first target
        token on (`target_window`); the LM head does not run where no loss is taken.
        """
        j = self.joined(input_ids, attention_mask, prompt_ids, labels, prompt_offsets)
        out = self._run(j, labels)
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
                    out.loss_items = torch.tensor(len(class_ids), device=losses.device)
        elif labels is not None:
            losses = self.target_losses(out.logits, j, labels)
            out.loss_items = (labels != IGNORE_INDEX).sum()
        if losses is not None:
            out.loss_sum = losses.sum()
            out.loss = out.loss_sum / out.loss_items.clamp(min=1)
        return out

    # ----- encoder-only readout -----------------------------------------------------------------------
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
        ids, rows = prompt_ids.unique(return_inverse=True)  # each distinct prompt once
        label_ids = self.label_batch["input_ids"].to(self.device)  # (L, T)
        label_mask = self.label_batch["attention_mask"].to(self.device)
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
        label_batch = _to(dict(self.tokenizer([t for _, t in pairs], padding=True, return_tensors="pt")), self.device)
        return self.pooled(
            label_batch["input_ids"],
            label_batch["attention_mask"],
            torch.tensor([i for i, _ in pairs], device=self.device),
            inputs=False,
        )

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
            batch = _to(self.tokenize(texts, fit=False), self.device)
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
            _to(batch, self.device), ids.repeat_interleave(torch.tensor(sizes, device=self.device))
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
        logits = self._run(j, batch["labels"]).logits
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
        batch = _to(
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


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean over attended positions (sentence-transformers pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, H), (B, L, H) -> (B, L) cosine similarities."""
    return torch.einsum("bh,blh->bl", F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1))


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}
