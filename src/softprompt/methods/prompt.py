"""prompt: prompt tuning (Lester et al. 2021), ours. Only the soft prompt (P x H) trains, with the paper's Adafactor;
with --prompt.dept_positions, DePT's low-rank input offset trains beside it at its own learning rate (dept.py)."""

from dataclasses import replace
from pathlib import Path

import torch

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.prompt_file import check_compatible, load_prompt, save_prompt
from softprompt.methods.base import Method
from softprompt.models.model import SoftPromptModel
from softprompt.options import PromptOptions, TrainOptions
from softprompt.reparam import ReparamBank, make_reparam
from softprompt.reparam.dept import DePTBank

PROMPT_FILE = "prompt.safetensors"
INITIALISERS = ("random", "vocab", "labels", "text")  # --prompt.init by name; anything else is a prompt file
PAPER_LR = 0.3  # Adafactor on T5, the paper's setting
DEPT_PAPER_LR = 1e-4  # DePT's low-rank offset on T5 (its prompt keeps 0.3)
T5_EMBEDDING_RMS = 11.6  # root mean square of T5 1.1's input-embedding entries (google/t5-v1_1-small: 11.64)
T5_TYPES = ("t5", "mt5", "umt5")


def embedding_scale(model: SoftPromptModel) -> float:
    """The size of the model's embedding entries relative to T5's: 1 on T5, else their RMS over T5's 11.6."""
    if model.base.config.model_type in T5_TYPES:
        return 1.0
    with model.embedding_matrix() as weights:
        rms = weights.detach().float().pow(2).mean().sqrt().item()
    return rms / T5_EMBEDDING_RMS


def default_lr(model: SoftPromptModel) -> float:
    """The learning rate when train.lr is unset: the paper's 0.3 on T5, and on other models 0.3 scaled by the
    size of their embedding entries relative to T5's. Adafactor's (and Adam's) step moves each entry by about lr
    whatever the gradient's scale, so a rate that suits T5's entries (RMS 11.6) is 200 times too large for
    MiniLM's (RMS 0.056)."""
    return float(f"{PAPER_LR * embedding_scale(model):.2g}")


def initial_prompt(
    model: SoftPromptModel, o: PromptOptions, task, seed: int, allow_other_model: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The starting (P, H) prompt and DePT (N, H) input offset (None: none, or a fresh one): an initialiser by name,
    or a prompt file (whose length then wins, and whose DePT offset a DePT run starts from)."""
    if o.init not in INITIALISERS:
        file = init_file(o)
        check_compatible(file, model.hidden, model.fingerprint(), o.init, allow_other_model)
        model.check_prompt_length(file.length, f"--prompt.init {o.init}")
        return file.prompt, file.offset
    labels = getattr(task, "label_texts", [])
    return model.initial_prompt(
        o.init, o.length, text=o.text, labels=labels, first_n=o.vocab_first_n, scale=o.random_scale, seed=seed
    ), None


def init_file(o: PromptOptions):
    """The prompt file `--prompt.init` names, read and checked against the run (before any model loads): a DePT
    file's offset starts only a DePT run over as many positions, rather than being dropped."""
    file = load_prompt(o.init)
    if file.offset is not None and file.offset.shape[0] != o.dept_positions:
        n = file.offset.shape[0]
        raise UserError(
            f"--prompt.init {o.init}: the file carries a DePT input offset over {n} positions, which only a DePT run (--prompt.dept_positions={n}, no --prompt.reparam) starts from"
        )
    return file


class PromptTuning(Method):
    name = "prompt"
    own_options = ("prompt",)
    optimizer = "adafactor"
    result = "prompt"
    output = PROMPT_FILE
    reparam = None  # the prompt's reparameterisation while it trains (--prompt.reparam), if any
    dept = None  # the DePT bank while it trains (--prompt.dept_positions), if any

    def training_options(self, model, o: TrainOptions) -> TrainOptions:
        o = replace(o, lr=default_lr(model) if o.lr is None else o.lr)  # the optimiser and decay are the paper's
        if self.prompt_options.dept_positions and o.dept_lr is None:
            o = replace(o, dept_lr=float(f"{DEPT_PAPER_LR * embedding_scale(model):.2g}"))
        return o

    def prepare(self, model, task, train_examples, seed):
        o = self.prompt_options
        initial, offset = initial_prompt(model, o, task, seed, self.allow_other_model)  # (P, H), (N, H) or None
        self.reparam = self.dept = None
        if o.dept_positions:
            self.dept = model.bank = DePTBank(initial, o.dept_positions, o.dept_rank, seed, task.name, offset)
            return
        if o.reparam == "none":
            model.bank = PromptBank(initial, [task.name])
            return
        self.reparam = make_reparam(o, initial, seed, gain=embedding_scale(model))
        model.bank = ReparamBank(self.reparam, task.name)

    def parameters(self, model):
        return [p for p in model.bank.parameters() if p.requires_grad]  # the prompt, or its reparameterisation's

    def param_groups(self, model, params, o: TrainOptions):
        if self.dept is None:
            return super().param_groups(model, params, o)
        offset = self.dept.offset_parameters()
        return [{"params": [p for p in params if all(p is not q for q in offset)]}, {"params": offset, "lr": o.dept_lr}]

    def metadata(self):
        extra = (
            {"reparam": self.reparam.describe()}
            if self.reparam
            else {"dept": self.dept.describe()}
            if self.dept
            else {}
        )
        return {"init": self.prompt_options.init, **extra}

    def save(self, model, folder, metadata):
        return save_prompt(self.path(folder), model.bank.prompt(0), metadata, model.bank.offset(0))

    def load(self, model, folder):
        path = self.path(folder)
        file = load_prompt(path)
        check_compatible(file, model.hidden, model.fingerprint(), str(path), self.allow_other_model)
        model.bank = PromptBank(file.prompt, [Path(folder).name or "prompt"], [file.offset])
        return model
