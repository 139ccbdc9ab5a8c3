"""Compiled against eager training steps: `--model.compile` (torch.compile, inductor, dynamic shapes) for softprompt's
step and for PEFT's prompt tuning, on the models, batch and lengths of bench/training.py, side by side.

    python bench/compile.py                 # the recorded run on the CPU: MiniLM, a SmolLM2-sized and a T5-base-sized model
    python bench/compile.py --quick         # a smoke run on small random models
    python bench/compile.py --device cuda   # the same on a GPU, bf16 autocast
    python bench/compile.py --write         # any of these, recorded in docs/benchmarks.md ("## Compiled steps")

For each model and trainer: the first compiled step's time (tracing and code generation), then the compiled and the
eager step alternating over several rounds; the ratio compiled / eager is taken within each round, and the median
and spread (min-max) over rounds reported. Compiling pays when the ratio is below 1 and the run has enough steps to
earn back the first step: the break-even column is how many.
"""

import argparse
import copy
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/training.py and bench/report.py, beside this file

import training  # noqa: E402
from report import BENCHMARKS, add_write_option, publish  # noqa: E402

TRAINERS = ("softprompt", "peft")


def compiled_against_eager(name: str, s: training.Setting, quick: bool) -> list[dict]:
    base, tokenizer, family = training.build(name, quick)
    rows = []
    for kind in TRAINERS:
        eager = training.trainer(kind, base, tokenizer, family, s, checkpointing=False)
        compiled_base = copy.deepcopy(base).to(training.DEVICE)
        compiled_base.compile(dynamic=True)  # as SoftPromptModel.load(compile=True) does
        compiled = training.trainer(kind, compiled_base, tokenizer, family, s, checkpointing=False, fresh=False)
        eager()  # warm-up
        training.synchronize()
        begun = time.perf_counter()
        compiled()  # the first compiled step traces and generates code
        training.synchronize()
        first = time.perf_counter() - begun
        for _ in range(
            2
        ):  # untimed: any second graph (the label texts' shape, encoder-only) and the compile workers settle
            compiled()
            eager()
        times = {"eager": [], "compiled": []}
        for r in range(s.rounds):
            for variant in ("eager", "compiled")[r % 2 :] + ("eager", "compiled")[: r % 2]:
                step = eager if variant == "eager" else compiled
                training.synchronize()
                begun = time.perf_counter()
                for _ in range(s.steps):
                    step()
                training.synchronize()
                times[variant].append((time.perf_counter() - begun) / s.steps)
        ratios = [c / e for c, e in zip(times["compiled"], times["eager"])]
        eager_step, compiled_step = statistics.median(times["eager"]), statistics.median(times["compiled"])
        saved = eager_step - compiled_step
        rows.append(
            {
                "model": name,
                "trainer": kind,
                "ratio": (statistics.median(ratios), min(ratios), max(ratios)),
                "eager_ms": 1000 * eager_step,
                "compiled_ms": 1000 * compiled_step,
                "first_s": first,
                "break_even": (first - compiled_step) / saved if saved > 0 else None,
            }
        )
        del eager, compiled, compiled_base
    return rows


def section(s: training.Setting, quick: bool, rows: list[dict], seconds: float) -> str:
    gpu = training.DEVICE.type == "cuda"
    where = torch.cuda.get_device_name(training.DEVICE) + ", bf16 autocast" if gpu else "the CPU, float32"
    flags = (" --quick" if quick else "") + (" --device cuda" if gpu else "")
    lines = [
        "## Compiled steps" + (" on a GPU" if gpu else ""),
        "",
        f"`python bench/compile.py{flags}` ({'a smoke run' if quick else 'the recorded run'}), {datetime.date.today()},"
        f" {where}, torch {torch.__version__}; {seconds:.0f} s. The models, batch ({s.batch}), lengths (T = {s.length},"
        f" P = {s.prompt}) and AdamW of [the training benchmark](#training), without checkpointing; compiled: the frozen"
        " model through torch.compile (inductor, dynamic shapes), as `--model.compile` runs it. Ratio: compiled / eager"
        f" step time, median over {s.rounds} rounds (min-max); first step: tracing and code generation, with inductor's"
        " on-disk cache as earlier runs left it (a machine's first run compiles cold, for minutes); break-even: the"
        " steps after which the compiled run has caught up.",
        "",
        "| model | trainer | compiled / eager | eager ms | compiled ms | first compiled step s | break-even steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["ratio"][1], r["ratio"][2]
        even = f"{r['break_even']:,.0f}" if r["break_even"] is not None else "never"
        lines.append(
            f"| {r['model']} | {r['trainer']} | {r['ratio'][0]:.2f} ({low:.2f}-{high:.2f}) | {r['eager_ms']:.0f} |"
            f" {r['compiled_ms']:.0f} | {r['first_s']:.0f} | {even} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small random models and few rounds: a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu (the recorded run) or cuda: bf16 autocast on a GPU")
    add_write_option(parser, BENCHMARKS)
    args = parser.parse_args()
    training.DEVICE = torch.device(args.device)
    if training.DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    sys.path.insert(0, str(training.ROOT / "src"))
    begun = time.perf_counter()
    s = training.setting(args.quick)
    rows = []
    for name in training.MODELS:
        print(f"compiled and eager steps: {name}", file=sys.stderr)
        rows += compiled_against_eager(name, s, args.quick)
    publish(section(s, args.quick, rows, time.perf_counter() - begun), BENCHMARKS, args.write)


if __name__ == "__main__":
    main()
