"""Faults: a write that fails half-way (a full disk) keeps the previous file and says which file in one line; a NaN or
infinite loss, gradient or prompt stops training and keeps the last good prompt and checkpoint; a sweep killed mid-cell
resumes without rerunning finished cells or keeping the half-done one."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import save_model, sentiment_rows, tiny_bert, tiny_gpt2

from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.experiments import sweep as sweep_module
from softprompt.experiments.grid import load_sweep
from softprompt.experiments.sweep import DONE_FILE, run_sweep
from softprompt.files import atomic as files
from softprompt.files import prompt_file as prompt
from softprompt.files import state_file
from softprompt.files.prompt_file import load_prompt, save_prompt
from softprompt.methods.prompt import PROMPT_FILE
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training import checkpoint, run_folder
from softprompt.training import train as train_module
from softprompt.training.optim import NonFinite
from softprompt.training.run_output import RESULTS_FILE
from softprompt.training.train import train_prompt

TESTS = Path(__file__).parents[1]
PROMPT = PromptOptions(length=4, init="vocab", vocab_first_n=40)
OPTIONS = dict(batch_size=4, micro_batch_size=2, eval_every=2, save_every=2, keep_checkpoints=2, lr=0.3, max_steps=6)


def disk_full_after(half_bytes: int = 10):
    """An OSError(ENOSPC) raised by a writer after it has written the first bytes of its file."""

    def fail(path):
        with open(path, "wb") as f:
            f.write(b"\0" * half_bytes)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    return fail


def temporaries(folder: Path) -> list[str]:
    """Hidden files and folders anywhere under `folder` (TensorBoard's event files aside) but the run folder's marker,
    lock and holder: what a write leaves half-done."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name not in run_folder.OWN_FILES)


def setup():
    model = tiny_gpt2()
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    return model, task, task.examples(sentiment_rows(), "rows", None)


def train(folder, model=None, **options):
    model_, task, examples = setup()
    model = model or model_
    result = train_prompt(
        model, task, examples, examples, PROMPT, TrainOptions(**{**OPTIONS, **options}), folder, progress=False
    )
    return model, result


# ----- a write that fails half-way ----------------------------------------------------------------------------
def test_a_prompt_file_write_that_fails_half_way_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_prompt(tmp_path / "p.safetensors", torch.ones(3, 8), {"base_model": "x"})
    before = path.read_bytes()
    monkeypatch.setattr(prompt, "save_file", lambda tensors, tmp, metadata: disk_full_after()(tmp))
    with pytest.raises(UserError) as error:
        save_prompt(path, torch.zeros(3, 8), {"base_model": "x"})
    assert str(error.value) == f"{path}: cannot write it (No space left on device); the previous one is unchanged"
    assert path.read_bytes() == before and torch.equal(load_prompt(path).prompt, torch.ones(3, 8))
    assert temporaries(tmp_path) == []
    with pytest.raises(
        UserError, match=r"new.safetensors: cannot write it \(No space left on device\); nothing was written$"
    ):
        save_prompt(tmp_path / "new.safetensors", torch.zeros(3, 8), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]


def test_a_checkpoint_write_that_fails_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    train(tmp_path, max_steps=2)
    saved = checkpoint.latest(tmp_path)
    real = state_file.save_file
    monkeypatch.setattr(
        state_file,
        "save_file",
        lambda tensors, path, metadata: (
            disk_full_after()(path) if path.endswith("state.safetensors") else real(tensors, path, metadata=metadata)
        ),
    )
    with pytest.raises(
        UserError,
        match=r"^.*checkpoints/step-00000004: cannot write it \(No space left on device\); nothing was written$",
    ):
        train(tmp_path, max_steps=4, resume=True)
    assert checkpoint.complete(tmp_path) == [saved] and temporaries(tmp_path) == []
    state, _ = checkpoint.load(saved, 0, 1)
    assert state.step == 2 and torch.isfinite(state.trained[0]).all()


def test_a_results_file_write_that_fails_half_way_keeps_the_previous_rows(tmp_path, monkeypatch):
    train(tmp_path, max_steps=2)
    before = (tmp_path / RESULTS_FILE).read_text()
    real = Path.write_text

    def full_disk_for_results(self, text, *args, **kwargs):
        if self.name.startswith(f".{RESULTS_FILE}."):
            disk_full_after()(self)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk_for_results)
    with pytest.raises(
        UserError, match=rf"{RESULTS_FILE}: cannot write it \(No space left on device\); the previous one is unchanged$"
    ):
        train(tmp_path, max_steps=2)
    assert (tmp_path / RESULTS_FILE).read_text() == before and len(before.splitlines()) == 1
    assert temporaries(tmp_path) == []


def test_append_line_mends_a_line_cut_short(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "lo')
    files.append_line(log, '{"step": 3}')
    assert log.read_text() == '{"step": 1}\n{"step": 3}\n'


def test_the_command_says_in_one_line_which_file_it_could_not_write(tmp_path, monkeypatch, capsys):
    folder = save_model(tiny_gpt2(), tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    monkeypatch.setattr(prompt, "save_file", lambda tensors, tmp, metadata: disk_full_after()(tmp))
    code = main(
        [
            "train",
            "--model.name",
            folder,
            "--data.train",
            str(tmp_path / "train.jsonl"),
            "--data.verbalizers",
            '{"0": "no", "1": "yes"}',
            "--prompt.length=4",
            "--prompt.vocab_first_n=40",
            "--train.batch_size=5",
            "--train.max_steps=2",
            "--train.output_dir",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"error: {tmp_path / 'run' / PROMPT_FILE}: cannot write it (No space left on device); nothing was written"
    )
    assert not (tmp_path / "run" / PROMPT_FILE).exists() and temporaries(tmp_path / "run") == []


# ----- NaN and infinity ---------------------------------------------------------------------------------------
def test_a_nan_loss_stops_training_and_keeps_the_last_prompt_and_checkpoint(tmp_path):
    model, _, _ = setup()
    forwards = []

    def nan_from_step_5(module, args, out):
        if torch.is_grad_enabled():  # training forwards only, not evaluations
            forwards.append(1)
            if len(forwards) > 8:  # two micro-batches a step
                out.logits.fill_(float("nan"))

    model.base.register_forward_hook(nan_from_step_5)
    with pytest.raises(NonFinite) as error:
        train(tmp_path, model=model)
    message = str(error.value)
    assert message.startswith("the loss became nan at step 5: lower --train.lr") and "\n" not in message
    assert (
        f"kept: {tmp_path / 'checkpoints/step-00000004'}" in message and f"{tmp_path / PROMPT_FILE} (step " in message
    )
    assert [p.name for p in checkpoint.complete(tmp_path)] == ["step-00000002", "step-00000004"]
    state, _ = checkpoint.load(checkpoint.latest(tmp_path), 0, 1)
    assert state.step == 4 and torch.isfinite(state.trained[0]).all()
    saved = load_prompt(tmp_path / PROMPT_FILE)
    assert saved.metadata["step"] in (2, 4) and torch.isfinite(saved.prompt).all()
    assert max(json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_a_nan_gradient_stops_training_before_the_prompt_is_saved(tmp_path, monkeypatch, optimizer):
    real = train_module.backward_accumulated

    def nan_gradient_at_step_3(*args, **kwargs):
        loss = real(*args, **kwargs)
        step, params = args[4], args[5]
        if step == 3:
            for p in params:
                p.grad.fill_(float("nan"))
        return loss  # a finite loss: only the gradient is bad

    monkeypatch.setattr(train_module, "backward_accumulated", nan_gradient_at_step_3)
    with pytest.raises(
        NonFinite, match=r"^the trained parameters became NaN or infinite at step 3 .*kept: .*step-00000002"
    ):
        train(tmp_path, optimizer=optimizer, save_every=1)
    assert [p.name for p in checkpoint.complete(tmp_path)] == ["step-00000001", "step-00000002"]
    state, _ = checkpoint.load(checkpoint.latest(tmp_path), 0, 1)
    assert torch.isfinite(state.trained[0]).all()
    assert torch.isfinite(load_prompt(tmp_path / PROMPT_FILE).prompt).all()


@pytest.mark.parametrize(
    "lr, message",
    [
        ("1e30", "the loss became nan at step 2: lower --train.lr"),
        (
            "1e38",
            "the update overflowed at step 1 (value cannot be converted to type float without overflow): lower --train.lr",
        ),  # torch's AdamW refuses it
    ],
)
def test_the_command_stops_on_an_overflowing_learning_rate_in_one_line(tmp_path, capsys, lr, message):
    folder = save_model(tiny_gpt2(), tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    code = main(
        [
            "train",
            "--model.name",
            folder,
            "--data.train",
            str(tmp_path / "train.jsonl"),
            "--data.verbalizers",
            '{"0": "no", "1": "yes"}',
            "--prompt.length=4",
            "--prompt.vocab_first_n=40",
            "--train.batch_size=5",
            "--train.max_steps=4",
            "--train.optimizer=adamw",
            f"--train.lr={lr}",
            "--train.output_dir",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not any("Traceback" in line for line in err)
    assert err[-1].startswith(f"error: {message}") and err[-1].endswith("nothing was saved after it")


# ----- a sweep killed mid-cell --------------------------------------------------------------------------------
SWEEP_SCRIPT = """
import sys, time
import torch
torch.set_num_threads(1)
from softprompt.experiments import sweep
from softprompt.experiments.grid import load_sweep

real = sweep.SoftPromptModel.load
def slow_load(*args, **kwargs):
    model = real(*args, **kwargs)
    model.base.register_forward_hook(lambda *a: time.sleep(0.05))
    return model
sweep.SoftPromptModel.load = slow_load
sweep.run_sweep(load_sweep(sys.argv[1]), progress=False)
"""


@pytest.mark.slow
def test_a_sweep_killed_mid_cell_resumes_without_rerunning_finished_cells(tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    spec = {
        "output": str(tmp_path / "out"),
        "model": {"name": save_model(tiny_bert(), tmp_path / "tiny-bert")},
        "prompt": {"length": 2, "init": "vocab", "vocab_first_n": 40},
        "data": {"train": str(data), "validation": str(data), "verbalizers": {"0": "no", "1": "yes"}},
        "train": {"max_steps": 12, "batch_size": 10, "eval_every": 6, "save_every": 2},
        "grid": {"train.seed": [1, 2]},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "run.py").write_text(SWEEP_SCRIPT)
    sweep = load_sweep(tmp_path / "sweep.yaml")
    first, second = (sweep.output / "cells" / c.id for c in sweep.cells)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "sweep.yaml")], env=env)
    deadline = time.monotonic() + 120
    while checkpoint.latest(second) is None:  # the second cell has trained some steps
        assert run.poll() is None and time.monotonic() < deadline, (
            "the sweep ended before its second cell was under way"
        )
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert (first / DONE_FILE).is_file() and not (second / DONE_FILE).exists() and checkpoint.latest(second) is not None
    stamp = (first / DONE_FILE).stat().st_mtime_ns

    real, trained = sweep_module.train, []

    def counted(*args, **kwargs):
        trained.append(Path(args[-1]).name)
        assert not (Path(args[-1]) / "checkpoints").exists()  # the half-done cell starts afresh
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "train", counted)
    rows = run_sweep(load_sweep(tmp_path / "sweep.yaml"), progress=False)
    assert trained == [second.name]
    assert (first / DONE_FILE).stat().st_mtime_ns == stamp
    assert [r["cell"] for r in rows] == [c.id for c in sweep.cells]
    for folder in (first, second):
        assert json.loads((folder / DONE_FILE).read_text())["row"]["steps"] == 12
        assert not (folder / "checkpoints").exists() and temporaries(folder) == []
