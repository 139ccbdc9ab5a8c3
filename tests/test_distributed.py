"""The same training loop under torchrun: two CPU processes (gloo), one log, one prompt file."""

import json
import os
import subprocess

from conftest import save_model, sentiment_rows, tiny_gpt2


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
