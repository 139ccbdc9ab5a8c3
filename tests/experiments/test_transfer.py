"""Transfer: each method trains once on the source task; its saved result is scored on other data without training."""

import csv
import json

import pytest
import yaml
from conftest import save_model, sentiment_rows, tiny_bert

from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.experiments import sweep as sweep_module
from softprompt.experiments.transfer import targets_from
from softprompt.options import DataOptions

SHIFTED = [
    {"text": t, "label": y}
    for t, y in (
        ("good fun", 1),
        ("bad boring", 0),
        ("loved it", 1),
        ("hated the plot", 0),
        ("wonderful", 1),
        ("awful acting", 0),
    )
]


def recipe(tmp_path, **extra):
    source = tmp_path / "train.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    shifted = tmp_path / "shifted.jsonl"
    shifted.write_text("".join(json.dumps(r) + "\n" for r in SHIFTED))
    config = {
        "model": {"name": save_model(tiny_bert(), tmp_path / "tiny-bert")},
        "prompt": {"length": 4, "init": "vocab", "vocab_first_n": 40},
        "data": {"train": str(source), "validation": str(source), "verbalizers": {"0": "no", "1": "yes"}},
        "train": {"max_steps": 4, "batch_size": 10, "eval_every": 2, "lr": 0.01, "output_dir": str(tmp_path / "out")},
        "targets": [
            f"classification={shifted}",
            {"name": "first four", "validation": str(shifted), "limit_validation": 4},
        ],
        **extra,
    }
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_transfer_trains_each_method_once_and_scores_it_on_every_target(tmp_path, monkeypatch, capsys):
    real, trained = sweep_module.train, []
    monkeypatch.setattr(sweep_module, "train", lambda *a, **k: (trained.append(a[1].name), real(*a, **k))[1])
    assert main(["transfer", "--config", str(recipe(tmp_path))]) == 0
    assert trained == ["prompt", "model"]
    out = tmp_path / "out"
    result = json.loads((out / "transfer.json").read_text())
    rows = result["rows"]
    assert [r["target"] for r in rows] == ["classification (in-domain)", "classification", "first four"]
    for row in rows:
        assert row["delta"] == row["prompt"] - row["model"] and row["metric"] == "accuracy"
        assert row["prompt"] == result["scores"][row["target"]]["prompt"]["accuracy"]
    for method in ("prompt", "model"):  # the saved result, reloaded, scores in domain what training kept as its best
        done = json.loads((out / "cells" / method / "done.json").read_text())
        assert rows[0][method] == done["row"]["value"]
    with (out / "transfer.csv").open() as f:
        assert [r["target"] for r in csv.DictReader(f)] == [r["target"] for r in rows]
    table = (out / "transfer.md").read_text()
    assert "| target | metric | prompt | model | delta (prompt - model) |" in table
    assert (
        f"| first four | accuracy | {rows[2]['prompt']:.2f} | {rows[2]['model']:.2f} | {rows[2]['delta']:+.2f} |"
        in table
    )
    assert table in capsys.readouterr().out

    trained.clear()  # run again with the model tuning run reused: only the new method trains
    assert main(["transfer", "--config", str(recipe(tmp_path)), "--methods", "[model, prompt-design]"]) == 0
    assert trained == ["prompt-design"]
    again = json.loads((out / "transfer.json").read_text())["rows"]
    assert [r["model"] for r in again] == [r["model"] for r in rows] and again[0]["delta"] == again[0]["model"] - again[
        0
    ]["prompt-design"]


def test_targets_take_the_sources_options_they_leave_unset(tmp_path):
    source = DataOptions(
        task="sst2",
        train="a.tsv",
        validation="dev.tsv",
        verbalizers={"0": "terrible", "1": "great"},
        max_input_length=64,
        limit_validation=50,
    )
    (tmp_path / "mr.txt").write_text("1 a fine film\n0 a dull film\n")
    targets = targets_from(
        [
            f"mr={tmp_path / 'mr.txt'}",
            {"name": "mr short", "task": "mr", "validation": str(tmp_path / "mr.txt"), "max_input_length": 32},
        ],
        source,
    )
    assert [t.name for t in targets] == ["sst2 (in-domain)", "mr", "mr short"]
    mr = targets[1].data
    assert (mr.task, mr.train, mr.verbalizers, mr.max_input_length, mr.limit_validation) == (
        "mr",
        None,
        {"0": "terrible", "1": "great"},
        64,
        50,
    )
    assert targets[2].data.max_input_length == 32


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["mr"], "--targets 1: 'mr': give TASK=FILE or a data section"),
        (["nope=x.txt"], "--targets 1: --data.task: 'nope' is not a task"),
        ([{"task": "mr", "validation": "./missing.txt"}], "--targets 1: data.validation: ./missing.txt: no such file"),
        ([{"task": "mr", "validaton": "x"}], "--targets 1: Group 'data' does not accept option 'validaton'"),
    ],
)
def test_bad_targets_are_refused_in_one_line(targets, message):
    with pytest.raises(UserError) as error:
        targets_from(targets, DataOptions(task="sst2", validation="dev.tsv"))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_command_refuses_bad_input_before_training(tmp_path, capsys):
    assert main(["transfer", "--config", str(recipe(tmp_path)), "--methods", "[prompt, nope]"]) == 1
    assert capsys.readouterr().err.startswith("error: --methods nope: --method: unknown method 'nope'")
    assert main(["transfer", "--config", str(recipe(tmp_path)), "--targets", "[]"]) == 1
    assert (
        capsys.readouterr().err == "error: --targets: give one or more evaluation sets (TASK=FILE, or a data section)\n"
    )
    assert not (tmp_path / "out").exists()
