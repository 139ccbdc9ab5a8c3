"""Checkpoints: a run killed at any step and resumed ends with the prompt of an uninterrupted run, bit for bit on
CPU with one thread; a write interrupted half-way leaves the previous checkpoint in use; resuming refuses other options."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import save_model, sentiment_rows, tiny_gpt2

from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt
from softprompt.methods.prompt import PROMPT_FILE
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training import checkpoint
from softprompt.training.train import train_prompt

TESTS = Path(__file__).parents[1]
PROMPT = PromptOptions(length=4, init="vocab", vocab_first_n=40)
# 10 rows in micro-batches of 2, two per step: epochs end half-way through a step
OPTIONS = dict(batch_size=4, micro_batch_size=2, eval_every=4, save_every=1, keep_checkpoints=2, lr=0.3)

SCRIPT = f"""
import sys, time
import torch
sys.path.insert(0, {str(TESTS)!r})
torch.set_num_threads(1)
from conftest import save_model, sentiment_rows, tiny_gpt2
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training.train import train_prompt

output, resume, delay = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
model = tiny_gpt2()
for module in model.base.modules():
    if isinstance(module, torch.nn.Dropout):
        module.p = 0.1  # dropout draws from the random generators that a checkpoint restores
model.base.register_forward_hook(lambda *args: time.sleep(delay))
task = make_task(DataOptions(verbalizers={{"0": "no", "1": "yes"}}))
examples = task.examples(sentiment_rows(), "rows", None)
options = TrainOptions(max_steps=12, resume=resume, output_dir=output, **{OPTIONS!r})
train_prompt(model, task, examples, examples, PromptOptions(length=4, init="vocab", vocab_first_n=40), options, output, progress=False)
"""


def losses(folder: Path) -> list[tuple]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("train/loss"), r.get("eval/accuracy")) for r in records]


def last_trained(folder: Path) -> torch.Tensor:
    state, _ = checkpoint.load(checkpoint.latest(folder), 0, 1)
    return state.trained[0]


@pytest.mark.slow
def test_a_killed_run_resumed_ends_with_the_uninterrupted_prompt(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}

    def command(output, resume, delay=0.0):
        return [sys.executable, str(script), str(tmp_path / output), "1" if resume else "0", str(delay)]

    whole = subprocess.Popen(command("whole", False), env=env)  # beside the run to kill: one thread each
    kill_after = random.Random().randint(2, 10)  # a random step, reported on failure
    killed = subprocess.Popen(command("killed", False, delay=0.05), env=env)
    deadline = time.monotonic() + 60
    while (found := checkpoint.latest(tmp_path / "killed")) is None or int(found.name[5:]) < kill_after:
        assert killed.poll() is None and time.monotonic() < deadline, f"the run ended before checkpoint {kill_after}"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stopped_at = int(checkpoint.latest(tmp_path / "killed").name[5:])
    assert stopped_at < 12, f"killed after step {kill_after}: nothing left to resume"
    subprocess.run(command("killed", True), env=env, check=True, timeout=120)
    assert whole.wait(timeout=120) == 0

    whole, resumed = tmp_path / "whole", tmp_path / "killed"
    assert torch.equal(last_trained(resumed), last_trained(whole)), f"killed after step {stopped_at}"
    assert torch.equal(load_prompt(resumed / PROMPT_FILE).prompt, load_prompt(whole / PROMPT_FILE).prompt)
    assert losses(resumed) == losses(whole)  # the log, too: steps logged after the checkpoint were logged again
    assert len(checkpoint.complete(resumed)) == 2  # keep_checkpoints


def setup():
    model = tiny_gpt2()
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    return model, task, task.examples(sentiment_rows(), "rows", None)


def train(folder, **options):
    model, task, examples = setup()
    result = train_prompt(
        model,
        task,
        examples,
        examples,
        PROMPT,
        TrainOptions(**{**OPTIONS, "max_steps": 6, **options}),
        folder,
        progress=False,
    )
    return model, result


def test_a_write_interrupted_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    whole, _ = train(tmp_path / "whole")
    written = checkpoint.write

    def disk_full_in_step_5(obj, path):
        if path.parent.name == ".step-00000005.tmp" and path.name == checkpoint.STATE_FILE:
            raise OSError("No space left on device")
        written(obj, path)

    monkeypatch.setattr(checkpoint, "write", disk_full_in_step_5)
    with pytest.raises(UserError, match=r"checkpoints/step-00000005: cannot write it \(No space left on device\)"):
        train(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == [
        "step-00000003",
        "step-00000004",
    ]  # no temporary left
    assert checkpoint.latest(tmp_path / "run").name == "step-00000004"
    monkeypatch.setattr(checkpoint, "write", written)
    with (tmp_path / "run/metrics.jsonl").open("a") as log:
        log.write('{"step": 6, "train/lo')  # a record cut short by the crash
    resumed, result = train(tmp_path / "run", resume=True)
    assert losses(tmp_path / "run") == losses(tmp_path / "whole")
    assert result.steps == 6 and torch.equal(resumed.bank.weight, whole.bank.weight)
    assert [p.name for p in checkpoint.complete(tmp_path / "run")] == ["step-00000005", "step-00000006"]


def test_resume_continues_to_more_steps(tmp_path):
    longer, _ = train(tmp_path / "whole", max_steps=8, save_every=0)
    train(tmp_path / "run", save_every=0)  # a checkpoint at the end only
    assert [p.name for p in checkpoint.complete(tmp_path / "run")] == ["step-00000006"]
    resumed, result = train(tmp_path / "run", max_steps=8, resume=True)
    assert result.steps == 8 and torch.equal(resumed.bank.weight, longer.bank.weight)


def test_resume_refuses_other_options_naming_the_field(tmp_path):
    train(tmp_path, max_steps=2)
    with pytest.raises(
        UserError, match=r"^--train.lr: .*step-00000002 was trained with 0.3, not 0.1; resume with the same value"
    ):
        train(tmp_path, max_steps=4, lr=0.1, resume=True)
    with pytest.raises(
        UserError, match=r"^--train.resume: .*step-00000002 was written by 1 process; resume it with as many, not 2"
    ):
        checkpoint.load(checkpoint.latest(tmp_path), 0, 2)  # as two processes would


def test_resume_with_no_checkpoint_starts_a_new_run(tmp_path, capsys):
    _, result = train(tmp_path, max_steps=2, resume=True)
    assert result.steps == 2 and "no checkpoint in" in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_at_the_step_boundary(tmp_path, capsys):
    model, task, examples = setup()
    forwards = []

    def terminate_in_step_3(module, args, out):
        forwards.append(1)
        if len(forwards) == 5:  # the first micro-batch of step 3 (the evaluation comes at step 4)
            os.kill(os.getpid(), signal.SIGTERM)

    model.base.register_forward_hook(terminate_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_prompt(
            model,
            task,
            examples,
            None,
            PROMPT,
            TrainOptions(**{**OPTIONS, "max_steps": 6, "save_every": 0}),
            tmp_path,
            progress=False,
        )
    assert [p.name for p in checkpoint.complete(tmp_path)] == ["step-00000003"]  # the step under way was finished
    assert "stopped by a signal after step 3" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are put back


@pytest.mark.slow
def test_the_command_resumes(tmp_path, capsys):
    from conftest import save_model

    from softprompt.cli import main

    folder = save_model(tiny_gpt2(), tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    command = [
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
        "--train.micro_batch_size=5",
        "--train.output_dir",
        str(tmp_path / "run"),
    ]
    assert main([*command, "--train.max_steps=2"]) == 0
    assert main([*command, "--train.max_steps=3", "--train.resume=true"]) == 0
    assert f"resuming from {tmp_path / 'run/checkpoints/step-00000002'} (step 2)" in capsys.readouterr().err
    assert load_prompt(tmp_path / "run" / PROMPT_FILE).metadata["step"] == 3


def test_resume_refuses_another_prompt_or_other_data_naming_the_field(tmp_path):
    train(tmp_path, max_steps=2)
    model, task, examples = setup()
    longer = PromptOptions(length=5, init="vocab", vocab_first_n=40)
    with pytest.raises(UserError, match=r"^--train.resume: .*step-00000002 was trained with prompt.length 4, not 5$"):
        train_prompt(
            model,
            task,
            examples,
            examples,
            longer,
            TrainOptions(**{**OPTIONS, "max_steps": 4, "resume": True}),
            tmp_path,
            progress=False,
        )
    other = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}, max_input_length=64))
    with pytest.raises(
        UserError, match=r"^--train.resume: .*was trained with (task|data).max_input_length 512, not 64$"
    ):
        train_prompt(
            model,
            other,
            examples,
            examples,
            PROMPT,
            TrainOptions(**{**OPTIONS, "max_steps": 4, "resume": True}),
            tmp_path,
            progress=False,
        )


def resume(folder, model, task, train_examples, validation_examples):
    return train_prompt(
        model,
        task,
        train_examples,
        validation_examples,
        PROMPT,
        TrainOptions(**{**OPTIONS, "max_steps": 4, "resume": True}),
        folder,
        progress=False,
    )


@pytest.mark.parametrize("change", ["a row dropped", "a label flipped", "validation changed"])
def test_resume_refuses_data_whose_rows_changed(tmp_path, change):
    train(tmp_path, max_steps=2)
    model, task, examples = setup()
    rows = sentiment_rows()
    if change in ("a row dropped", "validation changed"):
        rows = rows[1:]
    elif change == "a label flipped":
        rows[0]["label"] = 1 - rows[0]["label"]
    changed = task.examples(rows, "rows", None)
    kind, option = ("validation", "--data.validation") if change == "validation changed" else ("train", "--data.train")
    train_rows, validation_rows = (examples, changed) if kind == "validation" else (changed, examples)
    with pytest.raises(
        UserError, match=rf"^--train.resume: .*step-00000002 was trained on other {kind} data than {option} now holds"
    ):
        resume(tmp_path, model, task, train_rows, validation_rows)


def test_resume_takes_the_same_rows_from_a_path_spelled_otherwise(tmp_path, monkeypatch, capsys):
    from softprompt.cli import main

    monkeypatch.chdir(tmp_path)
    Path("tr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    folder = save_model(tiny_gpt2(), tmp_path / "model")
    command = [
        "train",
        "--model.name",
        folder,
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        "--prompt.length=4",
        "--prompt.vocab_first_n=40",
        "--train.batch_size=5",
        "--train.micro_batch_size=5",
        "--train.output_dir=run",
    ]
    assert main([*command, "--data.train=tr.jsonl", "--train.max_steps=2"]) == 0
    assert main([*command, "--data.train=./tr.jsonl", "--train.max_steps=3", "--train.resume=true"]) == 0
    assert "resuming from run/checkpoints/step-00000002 (step 2)" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["readout_scale", "dtype"])
def test_resume_refuses_a_model_run_another_way_naming_how(tmp_path, change):
    train(tmp_path, max_steps=2)
    model, task, examples = setup()
    if change == "readout_scale":
        model.readout_scale = 5.0
        expected = "model.readout_scale 20.0, not 5.0"
    else:
        model.base.to(torch.float64)
        expected = "model.dtype 'float32', not 'float64'"
    with pytest.raises(UserError, match=rf"^--train.resume: .*step-00000002 was trained with {expected}$"):
        resume(tmp_path, model, task, examples, examples)


def test_resuming_a_finished_run_trains_nothing_and_adds_no_report(tmp_path, capsys):
    train(tmp_path, max_steps=4)
    rows = (tmp_path / "results.jsonl").read_text()
    before = load_prompt(tmp_path / PROMPT_FILE).prompt
    _, result = train(tmp_path, max_steps=4, resume=True)
    assert result.steps == 4 and (tmp_path / "results.jsonl").read_text() == rows
    assert torch.equal(load_prompt(tmp_path / PROMPT_FILE).prompt, before)
    assert (
        "the run had already ended at step 4; nothing was trained, and results.jsonl is unchanged"
        in capsys.readouterr().err
    )


def test_resume_refuses_fewer_steps_than_the_checkpoint_holds(tmp_path):
    train(tmp_path, max_steps=4)
    with pytest.raises(
        UserError, match=r"^--train.max_steps 2: .*step-00000004 is at step 4 already; resume with at least 4 steps$"
    ):
        train(tmp_path, max_steps=2, resume=True)


def test_a_resumed_run_whose_best_was_its_last_step_ends_holding_that_best(tmp_path, monkeypatch):
    """Every evaluation scores the same, so the best stays at step 4, the last step of the first run."""
    monkeypatch.setattr(
        type(make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))),
        "score",
        lambda self, predictions, examples: {"accuracy": 50.0, "macro_f1": 50.0},
    )
    train(tmp_path, max_steps=4, save_every=0)
    model, result = train(tmp_path, max_steps=8, resume=True)
    saved = load_prompt(tmp_path / PROMPT_FILE).prompt
    assert result.best_step == 4 and not torch.equal(last_trained(tmp_path), saved)  # training went on after the best
    assert torch.equal(model.bank.weight[0], saved)  # and the model was put back to it, as the file holds


def test_a_corrupt_checkpoint_is_refused_in_one_line(tmp_path):
    train(tmp_path, max_steps=2, save_every=0)
    (checkpoint.latest(tmp_path) / checkpoint.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(
        UserError,
        match=r"^--train.resume: .*state.safetensors: not a readable checkpoint file \(.*\); delete its folder",
    ):
        train(tmp_path, max_steps=4, resume=True)


def test_a_field_only_one_side_records_is_refused_unless_the_identity_gained_or_lost_it(tmp_path):
    saved = SimpleNamespace(  # the two fields of a checkpoint's TrainingState that it reads
        identity={
            "method": {"init": "vocab", "reparam": {"kind": "residual"}},
            "model": {"base_model": "m"},
            "data": {"train": "t.jsonl"},
        },
        options={},
    )
    with pytest.raises(UserError, match=r"was trained with method\.reparam \{'kind': 'residual'\}, not None$"):
        checkpoint.check_same_run(saved, {"method": {"init": "vocab"}}, {}, tmp_path)
    today = {
        "model": {"base_model": "m", "dtype": "float32", "readout_scale": 20.0},
        "data": {},
        "rows": {"train": "abc"},
    }
    checkpoint.check_same_run(saved, today, {}, tmp_path)  # what an earlier checkpoint records otherwise: no refusal


def test_a_state_file_missing_a_field_is_refused_naming_it(tmp_path):
    from softprompt.files.state_file import save_state

    folder = checkpoint.folder(tmp_path, 3)
    folder.mkdir(parents=True)
    fields = {f.name: 0 for f in dataclasses.fields(checkpoint.TrainingState)}
    del fields["history"]
    save_state(fields, folder / checkpoint.STATE_FILE)
    save_state(checkpoint.rng_state(), folder / checkpoint.rng_file(0))
    with pytest.raises(UserError, match=r"state\.safetensors lacks history; delete its folder"):
        checkpoint.load(folder, 0, 1)
