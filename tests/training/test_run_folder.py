"""A run's output folder: only what a run wrote is ever removed, never the model it loads, and one run writes it at a
time (run_folder.py)."""

import errno
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import save_model, sentiment_rows, tiny_gpt2

from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt
from softprompt.training import run_folder


def recipe(tmp_path, model_folder, output) -> str:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    config = {
        "model": {"name": str(model_folder)},
        "prompt": {"length": 4, "init": "vocab", "vocab_first_n": 40},
        "data": {"task": "classification", "train": str(data), "verbalizers": {"0": "no", "1": "yes"}},
        "train": {"max_steps": 2, "batch_size": 10, "micro_batch_size": 10, "output_dir": str(output)},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture
def model_folder(tmp_path):
    return save_model(tiny_gpt2(), tmp_path / "models" / "tiny-gpt2")


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


def test_a_folder_holding_what_no_run_wrote_is_refused_and_left_as_it_was(tmp_path, model_folder, capsys):
    mine = tmp_path / "mine"
    (mine / "lora").mkdir(parents=True)
    (mine / "lora" / "weights.bin").write_bytes(b"a user's file")
    (mine / "notes.txt").write_text("my notes")
    before = snapshot(mine)
    assert main(["train", "--config", recipe(tmp_path, model_folder, mine)]) == 1
    assert (
        refused(capsys)
        == f"error: --train.output_dir {mine}: the folder holds what no softprompt run wrote (notes.txt); give a new or empty folder, or an earlier run's"
    )
    assert snapshot(mine) == before and sorted(os.listdir(mine)) == ["lora", "notes.txt"]


def test_the_current_folder_holding_the_model_is_refused_and_the_model_kept(
    tmp_path, model_folder, capsys, monkeypatch
):
    workdir = tmp_path / "work"
    folder = save_model(tiny_gpt2(), workdir / "model")
    before = snapshot(workdir)
    monkeypatch.chdir(workdir)
    assert main(["train", "--config", recipe(tmp_path, "model", "."), "--model.name=model"]) == 1
    assert "--train.output_dir .: the folder holds what no softprompt run wrote (model)" in refused(capsys)
    assert snapshot(workdir) == before and os.path.isdir(folder)


def test_an_earlier_run_holding_the_model_this_run_loads_is_not_replaced(tmp_path, model_folder, capsys):
    output = tmp_path / "run"
    assert main(["train", "--config", recipe(tmp_path, model_folder, output)]) == 0
    tuned = save_model(tiny_gpt2(seed=1), output / "model")  # as `--method model` leaves it, then loaded as the base
    capsys.readouterr()
    before = snapshot(output)
    assert main(["train", "--config", recipe(tmp_path, tuned, output)]) == 1
    assert (
        refused(capsys)
        == f"error: --train.output_dir {output}: a run there replaces {output / 'model'}, which holds the model this run loads ({tuned}); give another output folder"
    )
    assert snapshot(output) == before


def test_an_empty_output_folder_option_is_refused(tmp_path, model_folder, capsys):
    assert main(["train", "--config", recipe(tmp_path, model_folder, "x"), "--train.output_dir="]) == 1
    assert refused(capsys) == "error: --train.output_dir: empty; give the folder the run writes into"


def test_a_rerun_replaces_only_what_a_run_writes(tmp_path, model_folder, capsys):
    output = tmp_path / "run"
    assert main(["train", "--config", recipe(tmp_path, model_folder, output)]) == 0
    (output / "notes.txt").write_text("kept")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious.txt").write_text("kept too")
    (output / "lora").symlink_to(
        target, target_is_directory=True
    )  # a link among a run's names: the link goes, not its target
    assert main(["train", "--config", recipe(tmp_path, model_folder, output), "--train.max_steps=1"]) == 0
    assert (output / "notes.txt").read_text() == "kept" and (target / "precious.txt").read_text() == "kept too"
    assert not (output / "lora").exists()
    assert load_prompt(output / "prompt.safetensors").metadata["step"] == 1
    assert [json.loads(line)["steps"] for line in (output / "results.jsonl").read_text().splitlines()] == [2, 1]


def test_a_folder_an_earlier_version_wrote_without_a_marker_is_taken_as_a_run(tmp_path, model_folder, capsys):
    output = tmp_path / "run"
    assert main(["train", "--config", recipe(tmp_path, model_folder, output)]) == 0
    (output / run_folder.MARKER).unlink()
    (output / ".metrics.jsonl.x1y2.tmp").write_text("a killed write's")
    assert main(["train", "--config", recipe(tmp_path, model_folder, output), "--train.max_steps=1"]) == 0
    assert (output / run_folder.MARKER).is_file()


HOLDER = """
import sys, time
from softprompt.training import run_folder
with run_folder.hold(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_a_second_run_into_a_folder_being_written_is_refused_naming_the_holder(tmp_path, model_folder, capsys):
    output = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(output)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        assert main(["train", "--config", recipe(tmp_path, model_folder, output)]) == 1
        message = refused(capsys)
        assert message.startswith(
            f"error: --train.output_dir {output}: another run is writing this folder (process {holder.pid} on "
        )
        assert message.endswith("; wait for it to end, or give another folder")
        assert sorted(os.listdir(output)) == sorted(
            [run_folder.MARKER, run_folder.LOCK, run_folder.HOLDER]
        )  # nothing of this run
    finally:
        holder.kill()
        holder.wait()
    assert (
        main(["train", "--config", recipe(tmp_path, model_folder, output)]) == 0
    )  # a killed holder's lock is gone with it
    assert not (output / run_folder.HOLDER).exists()


def test_hold_is_refused_while_held_and_free_after(tmp_path):
    with run_folder.hold(tmp_path / "run"):
        with pytest.raises(UserError, match=f"another run is writing this folder \\(process {os.getpid()} on "):
            with run_folder.hold(tmp_path / "run"):
                pass
    with run_folder.hold(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / run_folder.HOLDER).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / run_folder.HOLDER).exists()


def test_a_folder_the_system_will_not_create_is_one_line(tmp_path, model_folder, capsys):
    assert main(["train", "--config", recipe(tmp_path, model_folder, "/proc/softprompt-run")]) == 1
    assert refused(capsys).startswith("error: --train.output_dir /proc/softprompt-run: cannot create the folder (")


def test_a_write_the_system_refuses_mid_run_is_one_line(tmp_path, model_folder, capsys, monkeypatch):
    from accelerate import Accelerator

    output = tmp_path / "run"

    def refused_tensorboard(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(output / "tensorboard"))

    monkeypatch.setattr(Accelerator, "init_trackers", refused_tensorboard)
    assert main(["train", "--config", recipe(tmp_path, model_folder, output)]) == 1
    assert refused(capsys) == f"error: {output / 'tensorboard'}: Permission denied"
