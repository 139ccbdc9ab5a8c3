"""prompt: prompt tuning (Lester et al. 2021), ours. Only the soft prompt (P x H) trains, with the paper's Adafactor."""

from dataclasses import replace
from pathlib import Path

import torch

from softprompt.bank import PromptBank
from softprompt.methods.base import Method
from softprompt.model import SoftPromptModel
from softprompt.options import PromptOptions, TrainOptions
from softprompt.prompt import check_compatible, load_prompt, save_prompt
from softprompt.reparam import ReparamBank, make_reparam

PROMPT_FILE = "prompt.safetensors"
PAPER_LR = 0.3  # Adafactor on T5, the paper's setting
T5_EMBEDDING_RMS = 11.6  # root mean square of T5 1.1's input-embedding entries (google/t5-v1_1-small: 11.64)
T5_TYPES = ("t5", "mt5", "umt5")


def embedding_scale(model: SoftPromptModel) -> float:
    """The size of the model's embedding entries relative to T5's: 1 on T5, else their RMS over T5's 11.6."""
    if model.base.config.model_type in T5_TYPES:
        return 1.0
    rms = model.input_embeddings().weight.detach().float().pow(2).mean().sqrt().item()
    return rms / T5_EMBEDDING_RMS


def default_lr(model: SoftPromptModel) -> float:
    """The learning rate when train.lr is unset: the paper's 0.3 on T5, and on other models 0.3 scaled by the
    size of their embedding entries relative to T5's. Adafactor's (and Adam's) step moves each entry by about lr
    whatever the gradient's scale, so a rate that suits T5's entries (RMS 11.6) is 200 times too large for
    MiniLM's (RMS 0.056)."""
    return float(f"{PAPER_LR * embedding_scale(model):.2g}")


def initial_prompt(model: SoftPromptModel, o: PromptOptions, task, seed: int, allow_other_model: bool = False) -> torch.Tensor:
    """The starting (P, H) prompt: an initialiser by name, or a prompt file (whose length then wins)."""
    if o.init not in ("random", "vocab", "labels", "text"):
        file = load_prompt(o.init)
        check_compatible(file, model.hidden, model.fingerprint(), o.init, allow_other_model)
        return file.prompt
    labels = getattr(task, "label_texts", [])
    return model.initial_prompt(o.init, o.length, text=o.text, labels=labels, first_n=o.vocab_first_n, scale=o.random_scale, seed=seed)


class PromptTuning(Method):
    name = "prompt"
    optimizer = "adafactor"
    result = "prompt"
    output = PROMPT_FILE
    reparam = None  # the prompt's reparameterisation while it trains (--prompt.reparam), if any

    def training_options(self, model, o: TrainOptions) -> TrainOptions:
        return replace(o, lr=default_lr(model) if o.lr is None else o.lr)  # the optimiser and decay are the paper's

    def prepare(self, model, task, train_examples, seed):
        o = self.prompt_options
        initial = initial_prompt(model, o, task, seed, self.allow_other_model)  # (P, H)
        self.reparam = None
        if o.reparam == "none":
            model.bank = PromptBank(initial, [task.name])
            return
        self.reparam = make_reparam(o, initial, seed, gain=embedding_scale(model))
        model.bank = ReparamBank(self.reparam, task.name)

    def parameters(self, model):
        return [p for p in model.bank.parameters() if p.requires_grad]  # the prompt, or its reparameterisation's

    def metadata(self):
        return {"init": self.prompt_options.init, **({"reparam": self.reparam.describe()} if self.reparam else {})}

    def save(self, model, folder, metadata):
        return save_prompt(self.path(folder), model.bank.prompt(0), metadata)

    def load(self, model, folder):
        path = self.path(folder)
        file = load_prompt(path)
        check_compatible(file, model.hidden, model.fingerprint(), str(path), self.allow_other_model)
        model.bank = PromptBank(file.prompt, [Path(folder).name or "prompt"])
        return model
