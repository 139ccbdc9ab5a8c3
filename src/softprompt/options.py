"""Every option of every command, as dataclasses: a YAML recipe plus `--section.option=value` overrides.

The docstring under each field is its `--help` text.
"""

from dataclasses import dataclass, field
from typing import Literal

Family = Literal["encoder-decoder", "decoder-only", "encoder-only"]  # core/families.py names each
# --data.task's values, as the task registry (tasks.TASKS) names its tasks; prompt files are checked against them
TASK_NAMES = (
    "classification",
    "text2text",
    "squad",
    "mrqa",
    "boolq",
    "cb",
    "copa",
    "multirc",
    "record",
    "rte",
    "wic",
    "wsc",
    "trec",
    "sst5",
    "sst5-binary",
    "mr",
    "sst2",
)


@dataclass
class ModelOptions:
    """The frozen model (--model.*)."""

    name: str | None = None
    """Hub name or local folder of the frozen model. Unset: the model a given prompt file names (eval, predict),
    else the embedded all-MiniLM-L6-v2 (offline)."""
    family: Family | None = None
    """Model family; detected from the config when unset."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype of the frozen weights (the prompt itself is always float32)."""
    readout_scale: float = 20.0
    """Encoder-only: cosine similarities are multiplied by this before the softmax over labels."""
    trust_pickle: bool = False
    """Load model weights stored as a pickle (.bin, .pt) when the model has no safetensors weights. Pickles can run
    code when loaded: only for a source you trust."""
    compile: bool = False
    """Run the frozen model through torch.compile (dynamic shapes, so a new batch length does not recompile): fewer,
    fused kernel launches, after a first pass that compiles (seconds to minutes); the outputs are the eager ones
    (docs/benchmarks.md measures when it pays)."""


@dataclass
class PromptOptions:
    """The soft prompt: its length, initialiser and parameterisation (--prompt.*)."""

    length: int = 100
    """Number of prompt vectors P (the paper's default is 100)."""
    init: str = "vocab"
    """Initialiser: random (uniform), vocab (sampled vocabulary), labels (class labels), text, or a prompt file path."""
    text: str = ""
    """With init=text: the text whose token embeddings fill the prompt (cycled or cut to the length)."""
    vocab_first_n: int = 5000
    """With init=vocab or labels: sample from the first N token ids."""
    random_scale: float = 0.5
    """With init=random: uniform in [-scale, scale]."""
    reparam: Literal["none", "residual", "ulpt"] = "none"
    """How the prompt is parameterised while it trains (docs/successors.md): none (the prompt
    itself), residual (a shared bottleneck MLP with a skip, Razdaibiedina et al. 2023) or ulpt (r dimensions, a frozen
    random up-projection, a learned scale and shift; Wu et al. 2025). Either folds into a plain prompt when saved."""
    bottleneck: int = 400
    """residual: the MLP's bottleneck width (the paper's 400 for T5-base)."""
    reparam_dropout: float = 0.0
    """residual: dropout on the MLP's output while training (with train.dropout on, which puts the model in train mode)."""
    rank: int = 64
    """ulpt: the dimension r the prompt lives in (the paper's r=64 stores 7.9K numbers on T5-base)."""
    projection_seed: int | None = None
    """ulpt: seed of the frozen random up-projection; train.seed when unset."""
    dept_positions: int = 0
    """DePT (Shi & Lipani 2024): the number N of first input tokens whose embeddings get a trained low-rank offset
    beside the prompt (the paper's 256, with a 60-token prompt); 0 leaves DePT off. Not with --prompt.reparam."""
    dept_rank: int = 30
    """DePT: the rank r of the offset A (N, r) @ B (r, H) (the paper's 30 for T5-base)."""


@dataclass
class DataOptions:
    """The task and its data: files or hub datasets, columns, template, labels (--data.*)."""

    task: str = "classification"
    """Task (`softprompt tasks` lists them): classification (text, label, verbalizers), text2text (input -> target
    text), squad (SQuAD v1.1 JSON), mrqa (MRQA 2019 JSONL); SuperGLUE JSONL: boolq, cb, copa, multirc, record, rte,
    wic, wsc; trec, sst5, sst5-binary (SST-5 as SST-2's labels), mr, sst2 (GLUE TSV). A named task knows its columns,
    template, label words and metric; --data.template and --data.verbalizers may still override them. A local
    FILE@train or FILE@validation splits a file without one (MR): every 10th row is validation."""
    train: str | None = None
    """Training data: a JSONL/CSV/TSV/SQuAD JSON file, or a hub data set where the hub is reachable (glue:sst2@train)."""
    validation: str | None = None
    """Validation data, same formats (glue:sst2@validation); the best prompt is kept by its metric."""
    format: Literal["auto", "jsonl", "csv", "tsv", "squad"] = "auto"
    """File format; from the extension when auto."""
    text_column: str = "text"
    """Classification: column holding the text."""
    label_column: str = "label"
    """Classification: column holding the label."""
    input_column: str = "input"
    """Text-to-text: column holding the input."""
    target_column: str = "target"
    """Text-to-text: column holding the target."""
    verbalizers: dict[str, str] = field(default_factory=dict)
    """Classification: label value -> label text, e.g. {"0": "terrible", "1": "great"}."""
    template: str = "{}"
    """Input format: {} stands for the input column (e.g. "sentence: {}"), {name} for the column `name`
    ("question: {question} context: {context}", squad's default). {prompt}, at most once, is where the prompt goes
    (default: before the input, after a leading special token). Too long inputs lose the end of their longest field;
    the template's own words, the prompt's slot and the special tokens are always kept."""
    max_input_length: int = 512
    """Longest input in tokens (cut to fit the model's positions beside the prompt)."""
    max_target_length: int = 8
    """Longest target in tokens (8 for classification; longer for QA)."""
    limit_train: int | None = None
    """Use only the first N training rows."""
    limit_validation: int | None = None
    """Use only the first N validation rows."""


@dataclass
class TrainOptions:
    """The training recipe: optimiser, batch, steps, evaluation, precision, checkpoints (--train.*)."""

    optimizer: Literal["adafactor", "adamw"] = "adafactor"
    """Adafactor with the paper's settings, or AdamW."""
    lr: float | None = None
    """Constant learning rate. Unset: the paper's 0.3 on T5, and on other models 0.3 scaled by the RMS of their
    embedding entries relative to T5's 11.6 (MiniLM: 0.0014), since Adafactor moves each entry by about lr."""
    weight_decay: float = 1e-5
    """Weight decay (paper: 1e-5)."""
    dept_lr: float | None = None
    """DePT: the learning rate of the input offset. Unset: DePT's 1e-4 on T5, scaled elsewhere as lr is."""
    decay_rate: float = 0.8
    """Adafactor: second-moment decay exponent (paper: 0.8)."""
    clip_threshold: float = 1.0
    """Adafactor: update clipping threshold."""
    max_grad_norm: float | None = None
    """Clip the gradient norm to this value; off when unset."""
    warmup_steps: int = 0
    """Linear warm-up steps before the constant learning rate."""
    batch_size: int = 32
    """Effective batch size (paper: 32), reached by gradient accumulation."""
    micro_batch_size: int = 32
    """Rows per forward pass on each device."""
    max_steps: int = 30000
    """Optimiser steps (paper: 30k); ignored when epochs is set."""
    epochs: float | None = None
    """Train for this many passes over the training data instead of max_steps."""
    eval_every: int = 1000
    """Evaluate on the validation set every N steps (and at the end)."""
    eval_batch_size: int = 64
    """Rows per forward pass when evaluating."""
    patience: int | None = None
    """Stop after this many evaluations without improvement; never when unset."""
    seed: int = 42
    """Seed for initialisation, shuffling and dropout."""
    dropout: bool = True
    """Keep the frozen model's own dropout active while training (the paper trains with dropout 0.1)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """bf16 autocast on CUDA when auto; fp32 on CPU. fp16: float16 autocast with loss scaling, for GPUs without
    bf16 (T5 overflows in float16: prefer bf16 there). The prompt stays float32 in every case."""
    gradient_checkpointing: bool = False
    """Recompute the frozen model's activations in the backward pass instead of keeping them: less memory, one more
    forward pass per step."""
    save_every: int | None = None
    """Save a checkpoint (trained parameters, optimiser, scheduler, step, data position, best so far, random
    generators) every N steps and at the end; unset: at every evaluation (train.eval_every); 0: only at the end
    and when stopped by SIGTERM or Ctrl-C."""
    keep_checkpoints: int = 2
    """Keep the newest N checkpoints in OUTPUT/checkpoints."""
    resume: bool = False
    """Continue from the newest complete checkpoint in output_dir (the same options, max_steps may grow); with
    none there, start a new run and say so."""
    log_every: int = 10
    """Write loss to the metrics log every N steps."""
    output_dir: str = "runs/prompt"
    """Folder for prompt.safetensors, metrics.jsonl, the TensorBoard logs and checkpoints/."""


@dataclass
class MethodOptions:
    """How the model is adapted: prompt tuning or a comparison method (--method.*)."""

    name: Literal["prompt", "model", "prompt-design", "prefix", "lora", "adapter"] = "prompt"
    """How the model is adapted (docs/methods.md): prompt (prompt tuning), model (model tuning), prompt-design
    (no training: instruction and in-context examples), prefix (prefix tuning, peft), lora (LoRA, peft) or adapter
    (Houlsby adapters). Methods other than prompt take their own optimiser, learning rate and weight decay (AdamW, no
    decay) wherever train.optimizer, train.lr and train.weight_decay are left at their defaults."""
    instruction: str = ""
    """prompt-design: a text put before the in-context examples and the input."""
    shots: int = 0
    """prompt-design: in-context examples drawn from the training data with train.seed and put before each input, each
    formatted with the template and followed by its target; those that do not fit the model's positions are dropped."""
    lora_rank: int = 8
    """lora: the rank r of the update matrices."""
    lora_alpha: float = 16
    """lora: the scaling numerator (updates are scaled by alpha / r)."""
    prefix_length: int = 20
    """prefix: the number of prefix positions, whose keys and values are learned in every layer."""
    adapter_size: int = 64
    """adapter: the bottleneck width of each adapter."""


@dataclass
class ServeOptions:
    """softprompt serve's options (the command spells each as --NAME; `kv_reuse` is --no_kv_reuse's opposite)."""

    host: str = "127.0.0.1"
    """Address to listen on (loopback by default)."""
    port: int = 8000
    """Port to listen on."""
    token: str | None = None
    """Bearer token every endpoint but /healthz requires; default: $SOFTPROMPT_TOKEN, else none."""
    max_batch_size: int = 32
    """Rows per model pass."""
    max_wait_ms: float = 0.0
    """How long an idle server holds a batch that is not full, waiting for more requests (0: a lone request runs at
    once; those that arrive while a batch runs are gathered into the next, which under load waits briefly for as many
    rows as the last batch held: docs/serving.md)."""
    max_inputs: int = 64
    """Inputs a request may hold (413 beyond)."""
    max_input_chars: int = 20_000
    """Characters an input may hold, all its fields together (413 beyond)."""
    max_body_bytes: int = 1_000_000
    """Bytes a request body may hold (413 beyond), checked before parsing."""
    rescan_seconds: float = 0.0
    """Rescan the prompt folder this often (0: only on POST /v1/tasks)."""
    max_new_tokens: int = 256
    """The most tokens a generated answer may have, whatever its prompt file records."""
    timeout_seconds: float = 60.0
    """A request not answered within this answers 504, and a generation stops after it; /healthz answers 503 while
    one model pass has run longer."""
    device: str = "auto"
    """auto (CUDA when available), cpu, or cuda[:N]."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype of the frozen weights."""
    compile: bool = False
    """Run the frozen model through torch.compile (as --model.compile in the other commands)."""
    kv_reuse: bool = True
    """Decoder-only: each prompt's keys and values computed once and reused (the outputs are the same)."""
    kv_cache_mb: float = 1024.0
    """Decoder-only: memory for the reused keys and values, in MB (a 20-token prompt of SmolLM2-135M takes 0.88); past
    it, the least recently used prompt's are dropped and computed again when its task comes back."""

    @property
    def kv_cache_bytes(self) -> int:
        """`kv_cache_mb` in bytes."""
        return int(self.kv_cache_mb * 2**20)
