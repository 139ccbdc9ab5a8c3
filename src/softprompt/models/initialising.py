"""Prompt initialisation for a SoftPromptModel (a mixin of its class): a (P, H) prompt from one of the paper's
initialisers (core/initialisers.py), with the refusals worded by the model's options."""

import torch

from softprompt.core import initialisers
from softprompt.errors import UserError


class Initialising:
    """Needs `tokenizer`, `hidden`, `name`, `embedding_matrix`, `token_ids` and `check_prompt_length`
    (SoftPromptModel has them)."""

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
        """A (P, H) prompt from one of the initialisers: random, vocab, labels, text; a prompt the model cannot hold
        is refused before it is built, and one that needs more distinct tokens than the vocabulary's first ids hold."""
        self.check_prompt_length(length)
        try:
            with self.embedding_matrix() as weights:
                return self._initial_prompt(
                    weights, init, length, text=text, labels=labels, first_n=first_n, scale=scale, seed=seed
                )
        except initialisers.TooFewTokens as e:
            raise UserError(
                f"--prompt.length {length}: --prompt.init={init} samples {e.wanted} distinct tokens, and the first "
                f"{first_n} ids of {self.name}'s vocabulary (--prompt.vocab_first_n) hold {e.usable} that are not special tokens"
            ) from None

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
        generator = torch.Generator().manual_seed(seed)
        special = frozenset(self.tokenizer.all_special_ids)
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
