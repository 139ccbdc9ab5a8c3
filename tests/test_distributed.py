"""The same training loop under torchrun: two CPU processes (gloo), one log, one prompt file, one checkpoint, the
prompt of one process with the same global batch, and evaluation sharded without duplicates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import save_model, sentiment_rows, tiny_gpt2
from softprompt import checkpoint
from softprompt.bank import PromptBank
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.train import train_prompt

PROMPT = PromptOptions(length=4, init="vocab", vocab_first_n=40)
ONE_STEP = dict(max_steps=6, batch_size=10, micro_batch_size=5, eval_every=3, save_every=3, keep_checkpoints=1, lr=0.3)


def test_two_processes_train_one_prompt(tmp_path):
    folder = save_model(tiny_gpt2(), tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows() * 4))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        "torchrun", "--nproc_per_node", "2", "-m", "softprompt.cli", "train",
        "--model.name", folder, "--data.train", "train.jsonl", "--data.validation", "train.jsonl",
        "--data.verbalizers", '{"0": "no", "1": "yes"}', "--prompt.length", "8", "--prompt.vocab_first_n", "40",
        "--train.max_steps", "20", "--train.batch_size", "16", "--train.micro_batch_size", "4",
        "--train.eval_every", "10", "--train.output_dir", "run",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("saved: ") == 1  # only the main process reports
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/accuracy" in r] == [10, 20]  # logged once, not per process
    assert (tmp_path / "run" / "prompt.safetensors").is_file()


SCRIPT = f"""
import json, os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import sentiment_rows, tiny_gpt2
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.train import train_prompt

model = tiny_gpt2()
task = make_task(DataOptions(verbalizers={{"0": "no", "1": "yes"}}))
examples = task.examples(sentiment_rows() * 2, "rows", None)
options = TrainOptions(**{{**{ONE_STEP!r}, "output_dir": "run", "max_steps": int(sys.argv[1]), "resume": sys.argv[2] == "resume"}})
scored = []  # the predictions each evaluation scores, gathered from both processes
score = task.score
task.score = lambda predictions, examples: scored.append(predictions) or score(predictions, examples)
result = train_prompt(model, task, examples, examples[:7], {PROMPT!r}, options, "run", progress=False)
if int(os.environ["RANK"]) == 0:
    print("RESULT" + json.dumps({{"metrics": result.history[-1], "predictions": scored[-1]}}))
"""


def test_two_processes_reach_the_one_process_prompt_shard_evaluation_and_resume(tmp_path):
    """The same global batch of 10 (2 x 5 rows, or 2 micro-batches of 5 in one process) gives the same prompt;
    evaluation split 3 + 4 over the processes scores each of 7 examples once, as one process does; two processes
    resume from their checkpoint (each its own random generators) to the prompt of one uninterrupted process."""
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}

    def two_processes(*args) -> dict:
        done = subprocess.run(["torchrun", "--nproc_per_node", "2", "run.py", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.split("RESULT")[1])

    def trained(run: str, processes: int) -> torch.Tensor:
        return checkpoint.load(checkpoint.latest(tmp_path / run), 0, processes)[0]["trained"][0]

    two = two_processes("6", "new")
    assert [p.name for p in checkpoint.complete(tmp_path / "run")] == ["step-00000006"]  # one checkpoint, written once
    assert sorted(f.name for f in checkpoint.latest(tmp_path / "run").iterdir()) == ["rng-0.safetensors", "rng-1.safetensors", "state.safetensors"]
    model = tiny_gpt2()
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    examples = task.examples(sentiment_rows() * 2, "rows", None)
    model.bank = PromptBank(trained("run", 2))  # the two processes' prompt at step 6, evaluated there
    predictions = task.predict_all(model, [e.fields for e in examples[:7]], progress=False)
    assert two["predictions"] == predictions
    assert two["metrics"] == {"step": 6, **{f"eval/{k}": v for k, v in task.score(predictions, examples[:7]).items()}}

    two_processes("8", "resume")
    train_prompt(model, task, examples, examples[:7], PROMPT, TrainOptions(**{**ONE_STEP, "max_steps": 8, "output_dir": str(tmp_path / "one")}), tmp_path / "one", progress=False)
    torch.testing.assert_close(trained("run", 2), trained("one", 1), rtol=1e-4, atol=1e-5)
    assert not torch.equal(trained("one", 1), tiny_gpt2().initial_prompt("vocab", 4, first_n=40, seed=42))
