"""The `softprompt` command end to end, in-process, on tiny models saved as local folders."""

import inspect
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import BUILDERS, recipe, save_model, write_data

from softprompt.cli import build_parser, main
from softprompt.cli.parser import COMMANDS
from softprompt.files.atomic import write_text_atomic
from softprompt.files.prompt_file import load_prompt, save_prompt
from softprompt.models.model import SoftPromptModel


@pytest.mark.slow
def test_train_info_predict_eval(tmp_path, model_folder, capsys, monkeypatch):
    config = recipe(tmp_path, model_folder)
    assert main(["train", "--config", str(config), "--train.max_steps=6"]) == 0
    out = capsys.readouterr().out
    prompt = tmp_path / "run" / "prompt.safetensors"
    assert prompt.is_file() and f"saved: {prompt}" in out
    assert "trainable parameters: 128 of" in out and "prompt file:" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 6  # the override beat the recipe's 4 steps

    assert main(["info", str(prompt)]) == 0
    info = capsys.readouterr().out
    assert "4 x 32 prompt" in info and '"verbalizers"' in info and model_folder in info

    assert main(["predict", str(prompt), "great", "awful"]) == 0
    predictions = capsys.readouterr().out.split()
    assert len(predictions) == 2 and set(predictions) <= {"0", "1"}

    monkeypatch.setattr(sys, "stdin", io.StringIO("great\n\nawful\n"))
    assert main(["predict", str(prompt)]) == 0
    assert capsys.readouterr().out.split() == predictions

    texts = tmp_path / "texts.txt"
    texts.write_text("great\nawful\n")
    assert main(["predict", str(prompt), "--file", str(texts)]) == 0
    assert capsys.readouterr().out.split() == predictions

    assert main(["predict", str(prompt), "great", "awful", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"text": "great", "prediction": predictions[0]}, {"text": "awful", "prediction": predictions[1]}]

    assert main(["eval", str(prompt), "--data.validation", str(tmp_path / "train.jsonl")]) == 0
    scores = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert set(scores) == {"accuracy", "macro_f1"}
    saved = load_prompt(prompt).metadata
    assert float(scores["accuracy"]) == pytest.approx(saved["metrics"]["accuracy"], abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["decoder-only"])
def test_errors_are_one_line_with_no_traceback_and_no_output(tmp_path, model_folder, capsys):
    config = recipe(tmp_path, model_folder)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "great", "label": 1}\n{"text": oops}\n')
    assert main(["train", "--config", str(config), f"--data.train={bad}"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {bad}:2: malformed JSON (Expecting value)"
    assert not (tmp_path / "run").exists()  # nothing half-written

    assert main(["train", "--config", str(config), "--data.text_column=sentence"]) == 1
    assert "missing column 'sentence'" in capsys.readouterr().err

    assert main(["predict", str(tmp_path / "missing.safetensors"), "hi"]) == 1
    assert "no such prompt file" in capsys.readouterr().err

    with pytest.raises(Exception, match="malformed JSON"):
        main(["--debug", "train", "--config", str(config), f"--data.train={bad}"])


def test_a_text_after_the_options_is_refused_with_where_it_goes(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "p.safetensors"), "--batch_size", "8", "great fun"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "unrecognized arguments: great fun; texts, files and other arguments without a name go before the options"
        in err
    ), err


def test_an_option_spelled_with_hyphens_is_refused_with_its_spelling(capsys):
    assert main(["sweep", "configs/sweeps/minilm-methods.yaml", "--dry-run", "--train.max-steps=3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "options are spelled with underscores: --dry_run, --train.max_steps" in err
    assert main(["train", "--train.max_stepz", "3"]) == 2
    assert "underscores" not in capsys.readouterr().err  # a misspelling with no hyphen gets no such hint


def test_an_option_must_be_spelled_whole(capsys):
    assert main(["train", "--data.label_colum", "x"]) == 2  # argparse would take it for --data.label_column
    assert "unrecognized arguments: --data.label_colum x" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "--train.lr" in text and "Constant learning rate" in text and "--prompt.init" in text
    assert "--data.verbalizers" in text and "--config" in text


def help_text(capsys, *command) -> str:
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
    assert exit.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # rewrapped: argparse breaks lines to the terminal's width


def test_help_summarises_each_command_in_a_whole_sentence_as_the_docs_spell_it(capsys):
    overview = help_text(capsys)
    for name in COMMANDS:
        summary = " ".join(inspect.cleandoc(COMMANDS[name].__doc__).split("\n\n")[0].split())
        assert summary.endswith(".") and f"{name} {summary}" in overview, name
    assert "[--method NAME]" in help_text(capsys, "train")  # as the docs write --method lora


def test_commands_list_only_the_options_they_read(capsys):
    text = help_text(capsys, "eval")
    assert "--train.eval_batch_size" in text and "--data.validation" in text and "--model.name" in text
    assert "--train.lr" not in text and "--prompt.length" not in text and "--method" not in text
    for name in ("info", "models", "tasks", "similar", "export", "serve", "sweep", "quickstart"):
        assert "--config" not in help_text(capsys, name), name  # no recipe to take
    assert "--config" in help_text(capsys, "predict")  # its --model.* options may come from a recipe


@pytest.mark.parametrize("family", ["encoder-only"])
def test_prompt_on_another_model_is_refused_unless_allowed(tmp_path, model_folder, family, capsys):
    trained_on = SoftPromptModel.load(model_folder)
    prompt = save_prompt(
        tmp_path / "p.safetensors",
        trained_on.initial_prompt("random", 3),
        {**trained_on.identity(), "task": {"type": "classification", "verbalizers": {"0": "no", "1": "yes"}}},
    )
    other = save_model(BUILDERS[family](seed=1), tmp_path / "other")
    assert main(["predict", str(prompt), "great", "--model.name", other]) == 1
    assert "pass --allow_other_model" in capsys.readouterr().err
    assert main(["predict", str(prompt), "great", "--model.name", other, "--allow_other_model"]) == 0
    assert capsys.readouterr().out.strip() in {"0", "1"}


REPO = Path(__file__).resolve().parents[2]


def untrained_prompt(path, model_folder, **metadata):
    """A prompt file for the model in `model_folder`, as train would write it, without training."""
    model = SoftPromptModel.load(model_folder)
    task = {"type": "classification", "verbalizers": {"0": "no", "1": "yes"}}
    return save_prompt(path, model.initial_prompt("random", 3), {**model.identity(), "task": task, **metadata})


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder-only"])
def test_eval_takes_the_prompt_file_as_option_or_argument(tmp_path, model_folder, capsys):
    prompt = str(untrained_prompt(tmp_path / "p.safetensors", model_folder))
    data = str(write_data(tmp_path))
    outputs = []
    for spelling in (
        [prompt],
        ["--prompt", prompt],
        [f"--prompt={prompt}"],
        ["--config", str(recipe(tmp_path, model_folder)), "--prompt", prompt],
    ):
        assert main(["eval", *spelling, "--data.validation", data]) == 0, spelling
        outputs.append(capsys.readouterr().out)
    assert outputs[0].startswith("accuracy: ") and outputs.count(outputs[0]) == 4

    section = tmp_path / "prompt-section.yaml"  # a YAML file still sets the prompt section of the recipe
    section.write_text("length: 7\n")
    cfg = build_parser().parse_args(["eval", "--prompt", str(section), prompt])
    assert cfg.eval.prompt.length == 7 and cfg.eval.prompt_file == prompt


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == "softprompt 0.1.0\n"


@pytest.mark.parametrize("family", ["encoder-only"])
def test_info_json_prints_only_json(tmp_path, model_folder, capsys):
    prompt = untrained_prompt(tmp_path / "p.safetensors", model_folder)
    assert main(["info", str(prompt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["length"] == 3 and info["hidden"] == 32 and info["size"] == prompt.stat().st_size
    assert info["base_model"] == model_folder and info["task"]["verbalizers"] == {"0": "no", "1": "yes"}


@pytest.mark.parametrize("family", ["encoder-only"])
def test_eval_and_predict_honour_the_model_options(tmp_path, model_folder, capsys, monkeypatch):
    prompt = str(untrained_prompt(tmp_path / "p.safetensors", model_folder))
    loaded = []
    load = SoftPromptModel.load

    def recording_load(cls, *args, **kwargs):
        model = load(*args, **kwargs)
        loaded.append((model.name, model.base.dtype, model.readout_scale))
        return model

    monkeypatch.setattr(SoftPromptModel, "load", classmethod(recording_load))
    options = ["--model.dtype=bfloat16", "--model.readout_scale=5"]
    assert main(["eval", prompt, "--data.validation", str(write_data(tmp_path)), *options]) == 0
    assert main(["predict", prompt, "great", *options]) == 0
    assert loaded == [(model_folder, torch.bfloat16, 5.0)] * 2


@pytest.mark.parametrize("family", ["encoder-only"])
def test_commands_that_run_a_model_take_device(tmp_path, model_folder, capsys, monkeypatch):
    prompt = str(untrained_prompt(tmp_path / "p.safetensors", model_folder))
    data = str(write_data(tmp_path))
    devices = []
    load = SoftPromptModel.load

    def recording_load(cls, *args, **kwargs):
        model = load(*args, **kwargs)
        to = model.to
        model.to = lambda device: (devices.append(str(device)), to(device))[1]
        return model

    monkeypatch.setattr(SoftPromptModel, "load", classmethod(recording_load))
    assert main(["eval", prompt, "--data.validation", data, "--device", "cpu"]) == 0
    assert main(["predict", prompt, "great", "--device=cpu"]) == 0
    assert main(["neighbors", prompt, "--device", "cpu"]) == 0
    assert main(["ensemble", "--prompts", prompt, prompt, "--data.validation", data, "--device", "cpu"]) == 0
    assert devices == ["cpu"] * 4
    capsys.readouterr()

    monkeypatch.setattr(SoftPromptModel, "load", classmethod(lambda *a, **k: pytest.fail("loaded the model")))
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"
    commands = {
        "eval": ["eval", prompt, "--data.validation", data],
        "predict": ["predict", prompt, "great"],
        "neighbors": ["neighbors", prompt],
        "ensemble": ["ensemble", "--prompts", prompt, prompt, "--data.validation", data],
        "transfer": ["--config", str(recipe(tmp_path, model_folder)), "--targets", f"[classification={data}]"],
        "serve": ["serve", "--prompts", str(tmp_path)],
    }
    commands["transfer"].insert(0, "transfer")
    for name, argv in commands.items():
        for device, reason in (("tpu", "is not auto, cpu or cuda[:N]"), (missing, "")):
            assert main([*argv, "--device", device]) != 0, name
            err = capsys.readouterr().err
            assert err.startswith("error: --device") and len(err.strip().splitlines()) == 1, (name, err)
            assert reason in err, (name, err)


@pytest.mark.parametrize("family", ["encoder-only"])
def test_predict_hint_names_an_option_predict_has(tmp_path, model_folder, capsys):
    prompt = str(untrained_prompt(tmp_path / "p.safetensors", model_folder, base_model=""))
    assert main(["predict", prompt, "great"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().endswith("pass --model.name")
    assert main(["predict", prompt, "great", "--model.name", model_folder]) == 0
    assert capsys.readouterr().out.strip() in {"0", "1"}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder-only"])
def test_train_accepts_allow_other_model(tmp_path, model_folder, capsys, monkeypatch):
    other = save_model(BUILDERS["encoder-only"](seed=1), tmp_path / "other")
    init = untrained_prompt(tmp_path / "init.safetensors", other)
    config = recipe(tmp_path, model_folder)
    assert main(["train", "--config", str(config), f"--prompt.init={init}"]) == 1
    assert "pass --allow_other_model" in capsys.readouterr().err
    assert main(["train", "--config", str(config), f"--prompt.init={init}", "--allow_other_model"]) == 0
    assert (tmp_path / "run" / "prompt.safetensors").is_file()


@pytest.mark.parametrize("family", ["decoder-only"])
def test_an_error_during_training_starts_its_own_line(tmp_path, model_folder, capsys):
    model = SoftPromptModel.load(model_folder)
    huge = save_prompt(tmp_path / "huge.safetensors", torch.full((4, model.hidden), 1e30), model.identity())
    assert main(["train", "--config", str(recipe(tmp_path, model_folder)), f"--prompt.init={huge}"]) == 1
    err = capsys.readouterr().err
    assert "training:" in err  # the progress bar was drawn
    assert any(line.startswith("error: the loss became nan at step 1") for line in err.split("\n")), err


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(tmp_path):
    prompt = save_prompt(tmp_path / "p.safetensors", torch.zeros(2, 4), {"base_model": "m"})
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "softprompt", "info", str(prompt)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    process.stdout.close()  # the reader goes away before anything is written, as `| head` does
    err = process.stderr.read().decode()
    assert process.wait() == 1 and err == ""


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = save_prompt(tmp_path / "p.safetensors", torch.zeros(2, 4), {})
        write_text_atomic(tmp_path / "t.txt", "x")
    finally:
        os.umask(old)
    for file in (path, tmp_path / "t.txt"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask


@pytest.mark.slow
def test_predict_prints_one_line_per_text_whatever_line_breaks_an_answer_holds(
    tmp_path, model_folder, capsys, monkeypatch
):
    config = recipe(tmp_path, model_folder)
    assert main(["train", "--config", str(config), "--train.max_steps=1"]) == 0
    capsys.readouterr()
    from softprompt.tasks.classification import ClassificationTask

    answers = ["first line\nsecond line", "a\r\nb\rc\u2028d", "plain"]
    monkeypatch.setattr(
        ClassificationTask, "predict_all", lambda self, model, rows, batch_size, progress=True: answers[: len(rows)]
    )
    assert main(["predict", str(tmp_path / "run" / "prompt.safetensors"), "x", "y", "z"]) == 0
    assert capsys.readouterr().out.splitlines() == ["first line\\nsecond line", "a\\nb\\nc\\nd", "plain"]
    assert main(["predict", str(tmp_path / "run" / "prompt.safetensors"), "x", "y", "z", "--json"]) == 0
    assert [json.loads(line)["prediction"] for line in capsys.readouterr().out.splitlines()] == answers


@pytest.mark.parametrize("family", ["encoder-only"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--prompt.length=200"], "--prompt.length 200 leaves no room for the input: {model} has 128 positions"),
        (
            ["--prompt.length=100"],
            "--prompt.length 100: --prompt.init=vocab samples 100 distinct tokens, and the first 40 ids of {model}'s vocabulary (--prompt.vocab_first_n) hold 35 that are not special tokens",
        ),
        (
            ["--prompt.length=100", "--prompt.init=labels", "--prompt.vocab_first_n=5000"],
            "--prompt.init=labels samples 98 distinct tokens, and the first 5000 ids of {model}'s vocabulary (--prompt.vocab_first_n) hold",
        ),
    ],
)
def test_a_prompt_the_model_cannot_hold_is_refused_in_one_line_before_it_is_built(
    tmp_path, model_folder, capsys, options, message
):
    config = recipe(tmp_path, model_folder)
    assert main(["train", "--config", str(config), *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message.format(model=model_folder) in err, err
    assert not (tmp_path / "run").exists()
