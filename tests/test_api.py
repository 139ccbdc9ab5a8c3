"""softprompt.tune and softprompt.load: the Python entry point, on tiny models and a CSV with a user's own columns."""

import csv
import os
import shutil

import pytest
from conftest import sentiment_rows

import softprompt
from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.models.model import SoftPromptModel
from softprompt.tasks.base import Task

VERBALIZERS = {"neg": "no", "pos": "yes"}


def write_csv(path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for row in sentiment_rows():
            writer.writerow([row["text"], "pos" if row["label"] else "neg"])
    return str(path)


def data(tmp_path) -> dict:
    reviews = write_csv(tmp_path / "reviews.csv")
    return {
        "train": reviews,
        "validation": reviews,
        "text_column": "review",
        "label_column": "sentiment",
        "verbalizers": VERBALIZERS,
    }


TRAIN = {"max_steps": 4, "batch_size": 8, "eval_every": 2, "lr": 0.3}
PROMPT = {"length": 4, "init": "vocab", "vocab_first_n": 40}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder-only", "decoder-only"])
def test_tune_then_load_predicts_what_the_command_line_predicts(tmp_path, model_folder, capsys):
    result = softprompt.tune(
        model=model_folder, data=data(tmp_path), prompt=PROMPT, train=TRAIN, output_dir=tmp_path / "run", progress=False
    )
    assert result.prompt_path == tmp_path / "run" / "prompt.safetensors" and result.prompt_path.is_file()
    assert set(result.metrics) == {"accuracy", "macro_f1"} and result.best_step in (2, 4)

    texts = [row["text"] for row in sentiment_rows()]
    by_folder = softprompt.load(tmp_path / "run", device="cpu")
    by_file = softprompt.load(result.prompt_path)
    predictions = by_folder.predict(texts)
    assert set(predictions) <= set(VERBALIZERS) and by_file.predict(texts) == predictions
    assert by_folder.predict(texts[0]) == predictions[:1]
    capsys.readouterr()
    assert main(["predict", str(result.prompt_path), *texts]) == 0
    assert capsys.readouterr().out.split() == predictions
    # the folder's run recorded its columns; scored again on the validation file, the best prompt scores as it did
    assert by_folder.evaluate(data(tmp_path)["validation"]) == pytest.approx(result.metrics)
    # a bare prompt file records no columns: they are given for the file
    scores = by_file.evaluate(data(tmp_path)["validation"], text_column="review", label_column="sentiment")
    assert scores == pytest.approx(result.metrics)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder-only"])
def test_any_methods_output_folder_loads_and_scores_as_it_trained(tmp_path, model_folder):
    for method in ("lora", "adapter"):
        folder = tmp_path / method
        result = softprompt.tune(
            model=model_folder, data=data(tmp_path), train=TRAIN, method=method, output_dir=folder, progress=False
        )
        predictor = softprompt.load(folder)
        assert predictor.method.name == method
        assert predictor.evaluate(data(tmp_path)["validation"]) == pytest.approx(result.metrics), method
        assert set(predictor.predict(["good", "awful"])) <= set(VERBALIZERS)


@pytest.mark.parametrize("family", ["encoder-only"])
def test_a_model_already_loaded_is_trained_as_given(tmp_path, model_folder):
    frozen = SoftPromptModel.load(model_folder)
    result = softprompt.tune(
        model=(frozen.base, frozen.tokenizer),
        data=data(tmp_path),
        prompt=PROMPT,
        train={**TRAIN, "max_steps": 2},
        output_dir=tmp_path / "run",
        progress=False,
    )
    assert result.prompt_path.is_file() and result.steps == 2


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"prompt": {"lenght": 4}}, r"^prompt: 'lenght' is not one of its options \(length, init,"),
        ({"train": {"max_steps": "many"}}, r"^train\.max_steps: 'many' is not a valid value \(it takes int\)$"),
        ({"data": {"task": "nope"}}, r"^--data\.task: 'nope' is not a task"),
        ({"method": "sgd"}, r"^method\.name: 'sgd' is not a valid value \(it takes one of 'prompt', 'model',"),
        ({"train": "fast"}, r"^train: give a dict of its options or a TrainOptions, not str$"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_the_model_loads(tmp_path, monkeypatch, sections, message):
    monkeypatch.setattr(SoftPromptModel, "load", classmethod(lambda *a, **k: pytest.fail("loaded the model")))
    arguments = {"data": data(tmp_path), "output_dir": tmp_path / "run", **sections}
    with pytest.raises(UserError, match=message):
        softprompt.tune(**arguments)
    assert not (tmp_path / "run").exists()


def test_load_refuses_a_path_that_holds_no_result(tmp_path):
    with pytest.raises(
        UserError, match=r"neither a prompt file nor a run's output folder \(it has no results\.jsonl\)"
    ):
        softprompt.load(tmp_path)


def test_the_package_names_its_api():
    assert {"tune", "load", "Predictor", "TrainResult", "TrainOptions", "ServeOptions"} <= set(softprompt.__all__)
    assert all(getattr(softprompt, name) is not None for name in softprompt.__all__)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder-only"])
def test_load_takes_other_settings_and_refuses_bad_ones_before_the_model_loads(tmp_path, model_folder, monkeypatch):
    reviews = data(tmp_path)
    softprompt.tune(
        model=model_folder,
        data={**reviews, "limit_validation": 3},
        prompt=PROMPT,
        train=TRAIN,
        output_dir=tmp_path / "run",
        progress=False,
    )
    predictor = softprompt.load(tmp_path / "run", dtype="bfloat16", model={"readout_scale": 5})
    assert predictor.model.weights_dtype == "bfloat16" and predictor.model.readout_scale == 5
    limits, read = [], Task.load
    monkeypatch.setattr(
        Task, "load", lambda self, source, limit=None: (limits.append(limit), read(self, source, limit))[1]
    )
    predictor.evaluate(reviews["validation"])  # the whole file: the run's limit is the run's
    predictor.evaluate(reviews["validation"], limit_validation=2)
    assert limits == [None, 2]

    monkeypatch.setattr(SoftPromptModel, "load", classmethod(lambda *a, **k: pytest.fail("loaded the model")))
    for settings, message in [
        ({"device": "gpu"}, r"^--device: 'gpu' is not auto, cpu or cuda\[:N\]$"),
        ({"device": "cuda1"}, r"^--device: 'cuda1' is not auto, cpu or cuda\[:N\]$"),
        ({"dtype": "fp16"}, r"^model\.dtype: 'fp16' is not a valid value \(it takes one of 'auto', 'float32',"),
        ({"model": {"nmae": "m"}}, r"^model: 'nmae' is not one of its options \(name, family,"),
    ]:
        with pytest.raises(UserError, match=message):
            softprompt.load(tmp_path / "run", **settings)
    copied = shutil.copytree(tmp_path / "run", tmp_path / "copied", copy_function=shutil.copy)  # as cp -r: new times
    monkeypatch.undo()
    texts = [row["text"] for row in sentiment_rows()]
    assert softprompt.load(copied).predict(texts) == softprompt.load(tmp_path / "run").predict(texts)
    prompt = tmp_path / "run" / "prompt.safetensors"  # as a second run, killed before its report, leaves it
    os.utime(prompt, (prompt.stat().st_atime, prompt.stat().st_mtime + 60))
    with pytest.raises(UserError, match=r"prompt\.safetensors: written after the last report in .*results\.jsonl"):
        softprompt.load(tmp_path / "run")
