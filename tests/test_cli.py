"""The `softprompt` command end to end, in-process, on tiny models saved as local folders."""

import io
import json
import sys

import pytest
import yaml

from conftest import BUILDERS, save_model, sentiment_rows
from softprompt.cli import main
from softprompt.model import SoftPromptModel
from softprompt.prompt import load_prompt, save_prompt


def write_data(tmp_path):
    rows = sentiment_rows()
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tmp_path, model_folder, **data):
    config = {
        "model": {"name": model_folder},
        "prompt": {"length": 4, "init": "vocab", "vocab_first_n": 40},
        "data": {"task": "classification", "train": str(write_data(tmp_path)), "validation": str(tmp_path / "train.jsonl"), "verbalizers": {"0": "no", "1": "yes"}, **data},
        "train": {"max_steps": 4, "batch_size": 10, "micro_batch_size": 5, "eval_every": 2, "output_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


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

    assert main(["eval", str(prompt), "--data.validation", str(tmp_path / "train.jsonl")]) == 0
    scores = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert set(scores) == {"accuracy", "macro_f1"}
    saved = load_prompt(prompt).metadata
    assert float(scores["accuracy"]) == pytest.approx(saved["metrics"]["accuracy"], abs=0.01)


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


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "--train.lr" in text and "Constant learning rate" in text and "--prompt.init" in text
    assert "--data.verbalizers" in text and "--config" in text


@pytest.mark.parametrize("family", ["encoder-only"])
def test_prompt_on_another_model_is_refused_unless_allowed(tmp_path, model_folder, family, capsys):
    trained_on = SoftPromptModel.load(model_folder)
    prompt = save_prompt(tmp_path / "p.safetensors", trained_on.initial_prompt("random", 3), {**trained_on.identity(), "task": {"type": "classification", "verbalizers": {"0": "no", "1": "yes"}}})
    other = save_model(BUILDERS[family](seed=1), tmp_path / "other")
    assert main(["predict", str(prompt), "great", "--model_name", other]) == 1
    assert "pass --allow_other_model" in capsys.readouterr().err
    assert main(["predict", str(prompt), "great", "--model_name", other, "--allow_other_model"]) == 0
    assert capsys.readouterr().out.strip() in {"0", "1"}
