"""Training killed with SIGKILL at random points, then resumed: does every run end with the prompt of an uninterrupted
run, and does no partial or temporary file remain?

    python bench/kill_resume.py              # the recorded run: 10 kills, seed 0
    python bench/kill_resume.py --write      # the same, recorded in docs/reliability.md
    python bench/kill_resume.py --kills 3 --seed 1

A tiny GPT-2 (dropout 0.1, so that the restored random generators matter) is saved as a model folder and trained with
`softprompt train` on the CPU with one thread, 1 process: first uninterrupted, then once per kill in a fresh output
folder, killed with SIGKILL at a seeded random step plus a seeded random fraction of a few steps (so that kills land
in forward passes, evaluations and checkpoint writes alike) and resumed with `--train.resume=true`. Each resumed run
must end bit for bit with the uninterrupted run's prompt file, last checkpoint and metrics log, and its output folder
must hold no hidden temporary and only files that read back whole. Prints the "## Kill and resume" section of
docs/reliability.md, and with `--write` writes it there.
"""

import argparse
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from report import RELIABILITY, add_write_option, publish  # bench/report.py, beside this file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import WORDS, gpt2_tokenizer  # noqa: E402  the tests' in-memory tokenizer

from softprompt.files.prompt_file import load_prompt  # noqa: E402
from softprompt.files.state_file import load_state  # noqa: E402
from softprompt.models.model import SoftPromptModel  # noqa: E402
from softprompt.training import checkpoint, run_folder  # noqa: E402

HEADER = "# Reliability\n\nWhat softprompt guarantees under faults, bad input, load and attack, each with the test or command that checks it.\n"
STEPS = 300
OPTIONS = [
    f"--train.max_steps={STEPS}",
    "--train.batch_size=8",
    "--train.micro_batch_size=4",
    "--train.eval_every=50",
    "--train.save_every=7",
    "--train.keep_checkpoints=2",
    "--train.log_every=1",
    "--train.seed=3",
    "--prompt.length=8",
    "--prompt.vocab_first_n=40",
]


def build(folder: Path) -> tuple[str, str]:
    """A tiny GPT-2 folder with dropout, and a training file of 64 two-word rows."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = gpt2_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
    )
    model = SoftPromptModel(GPT2LMHeadModel(config), tok, name="tiny-gpt2")
    model.base.save_pretrained(folder / "model")
    model.tokenizer.save_pretrained(folder / "model")
    rows = random.Random(0)
    lines = [
        json.dumps({"text": f"{rows.choice(WORDS)} {rows.choice(WORDS)}", "label": rows.randrange(2)})
        for _ in range(64)
    ]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder / "model"), str(folder / "train.jsonl")


def command(model: str, data: str, output: Path, resume: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "softprompt",
        "train",
        "--model.name",
        model,
        "--data.train",
        data,
        "--data.validation",
        data,
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        *OPTIONS,
        "--train.output_dir",
        str(output),
        *(["--train.resume=true"] if resume else []),
    ]


def environment() -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT / "src"),
    }


def logged_step(output: Path) -> int:
    """The last step in the metrics log (it is replaced atomically, so it reads whole)."""
    try:
        lines = (output / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return json.loads(lines[-1])["step"] if lines else 0


def kill_at(cmd: list[str], output: Path, step: int, extra: float, step_seconds: float) -> int:
    """Start a run, SIGKILL it `extra` step-times after it logs `step`; returns the last step it logged."""
    run = subprocess.Popen(cmd, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while logged_step(output) < step:
        if run.poll() is not None:
            raise SystemExit(f"the run ended before step {step}")
        time.sleep(0.002)
    time.sleep(extra * step_seconds)
    run.send_signal(signal.SIGKILL)
    run.wait()
    return logged_step(output)


def uninterrupted(cmd: list[str], output: Path) -> float:
    """Run to the end; returns the seconds a step takes, from the first step logged to the end."""
    run = subprocess.Popen(cmd, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while logged_step(output) < 1 and run.poll() is None:
        time.sleep(0.002)
    begun = time.perf_counter()
    if run.wait() != 0:
        raise SystemExit("the uninterrupted run failed")
    return (time.perf_counter() - begun) / (STEPS - 1)


def hidden(output: Path) -> list[str]:
    return sorted(
        str(p.relative_to(output)) for p in output.rglob(".*") if p.name not in run_folder.OWN_FILES
    )  # not the folder's marker and lock


def unreadable(output: Path) -> list[str]:
    """Files that do not read back whole: safetensors that do not load, JSON lines that do not parse."""
    bad = []
    for path in output.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            if path.name == "prompt.safetensors":
                load_prompt(path)
            elif path.suffix == ".safetensors":
                load_state(path)
            elif path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_text().splitlines()]
        except Exception as e:  # noqa: BLE001  any failure to read back is the finding
            bad.append(f"{path.relative_to(output)} ({type(e).__name__})")
    return bad


def outcome(output: Path) -> dict:
    last = checkpoint.latest(output)
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    results = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    return {
        "prompt": load_prompt(output / "prompt.safetensors").prompt,
        "trained": load_state(last / checkpoint.STATE_FILE)["trained"][0],
        "checkpoint": last.name,
        "log": [{k: v for k, v in r.items() if k != "time"} for r in records],
        "results": [(r["metrics"], r["best_step"], r["steps"]) for r in results],
    }


def same(a: dict, b: dict) -> bool:
    return (
        torch.equal(a["prompt"], b["prompt"])
        and torch.equal(a["trained"], b["trained"])
        and all(a[k] == b[k] for k in ("checkpoint", "log", "results"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    add_write_option(parser, RELIABILITY)
    args = parser.parse_args()
    draw = random.Random(args.seed)
    points = sorted((draw.randrange(1, STEPS - 1), round(draw.uniform(0, 3), 2)) for _ in range(args.kills))
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        tmp = Path(tmp)
        model, data = build(tmp)
        step_seconds = uninterrupted(command(model, data, tmp / "whole"), tmp / "whole")
        whole = outcome(tmp / "whole")
        rows = []
        for k, (step, extra) in enumerate(points):
            output = tmp / f"killed-{k}"
            stopped = kill_at(command(model, data, output), output, step, extra, step_seconds)
            left = hidden(output)
            broken = unreadable(output)
            resumed_from = checkpoint.latest(output)
            subprocess.run(
                command(model, data, output, resume=True),
                env=environment(),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            row = {
                "step": step,
                "extra": extra,
                "logged": stopped,
                "from": resumed_from.name if resumed_from else "none",
                "left": left,
                "broken_after_kill": broken,
                "same": same(outcome(output), whole),
                "hidden_after_resume": hidden(output),
                "broken_after_resume": unreadable(output),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    write(rows, args, step_seconds)


def write(rows: list[dict], args, step_seconds: float) -> None:
    ok = sum(
        r["same"] and not r["hidden_after_resume"] and not r["broken_after_resume"] and not r["broken_after_kill"]
        for r in rows
    )
    table = [
        "| kill | killed after step (+ steps) | last step logged | resumed from | hidden temporaries left by the kill | files unreadable | resumed = uninterrupted | temporaries after resume |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(rows):
        table.append(
            f"| {k + 1} | {r['step']} (+{r['extra']}) | {r['logged']} | {r['from']} | {', '.join(r['left']) or 'none'} | "
            f"{', '.join(r['broken_after_kill'] + r['broken_after_resume']) or 'none'} | {'yes' if r['same'] else 'NO'} | {', '.join(r['hidden_after_resume']) or 'none'} |"
        )
    text = "\n".join(
        [
            "## Kill and resume",
            "",
            f"**{ok} of {len(rows)}** runs killed with SIGKILL and resumed with `--train.resume=true` ended bit for bit with the",
            "uninterrupted run's prompt file, last checkpoint, metrics log and results row, and left no hidden temporary and no",
            "file that does not read back whole (prompt file, checkpoints, metrics.jsonl, results.jsonl; TensorBoard aside).",
            "",
            f"Command: `python bench/kill_resume.py --kills {args.kills} --seed {args.seed}` ({datetime.date.today()}, {platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}). `softprompt train` on a tiny GPT-2 with dropout 0.1, CPU, one thread,",
            f"{STEPS} steps of 2 micro-batches, evaluation every 50 steps, a checkpoint every 7, the metrics log written every step",
            f"(about {1000 * step_seconds:.0f} ms a step). Each kill lands at a seeded random step plus a",
            "seeded random 0-3 step-times, so in forward and backward passes, evaluations and writes alike.",
            "",
            *table,
            "",
            "A kill mid-write leaves at most a hidden temporary (`.NAME.*.tmp`, `checkpoints/.step-N.tmp`), never a visible",
            "file cut short; the resumed run clears the temporaries before it starts.",
        ]
    )
    publish(text, RELIABILITY, args.write, HEADER)


if __name__ == "__main__":
    main()
