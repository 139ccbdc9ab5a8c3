"""A data or text file that is missing or a folder, given to any command that reads one: one line on stderr naming the
option and the file, exit status 1, before any model loads, nothing written."""

import json
import re

import pytest
import yaml
from conftest import ModelLoaded, sentiment_rows

from softprompt import cli
from softprompt.cli import main
from softprompt.models.model import SoftPromptModel

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples


@pytest.fixture
def workspace(tmp_path, monkeypatch, parser):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    (tmp_path / "a folder.jsonl").mkdir()

    def refuse(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(SoftPromptModel, "load", classmethod(refuse))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    return tmp_path


LABELS = ["--data.verbalizers", '{"0": "no", "1": "yes"}']
COMMAND_LINES = {  # X is the bad path
    "train --data.train": ["train", "--data.train", "X", *LABELS, "--train.output_dir", "run"],
    "train --data.validation": [
        "train",
        "--data.train",
        "train.jsonl",
        "--data.validation",
        "X",
        *LABELS,
        "--train.output_dir",
        "run",
    ],
    "eval --data.validation": ["eval", "--data.validation", "X", *LABELS],
    "eval PROMPT --data.validation": ["eval", "p.safetensors", "--data.validation", "X"],
    "ensemble --data.validation": ["ensemble", "--prompts", "a.safetensors", "b.safetensors", "--data.validation", "X"],
    "transfer --data.train": [
        "transfer",
        "--data.train",
        "X",
        "--data.validation",
        "train.jsonl",
        *LABELS,
        "--targets",
        '["mr=./m.txt"]',
        "--train.output_dir",
        "run",
    ],
    "transfer --targets": [
        "transfer",
        "--data.train",
        "train.jsonl",
        "--data.validation",
        "train.jsonl",
        *LABELS,
        "--targets",
        '[{"task": "mr", "validation": "X"}]',
        "--train.output_dir",
        "run",
    ],
    "predict --file": ["predict", "p.safetensors", "--file", "X"],
    "sweep data.train": ["sweep", "sweep.yaml", "--output", "run"],
}
PATHS = {
    "missing": ("nowhere.jsonl", "no such file"),
    "a folder": ("a folder.jsonl", r"is a folder; give a (data|text) file"),
}


@pytest.mark.parametrize("kind", list(PATHS))
@pytest.mark.parametrize("command", list(COMMAND_LINES))
def test_a_missing_file_or_a_folder_is_one_line_naming_it(workspace, capsys, command, kind):
    path, says = PATHS[kind]
    (workspace / "sweep.yaml").write_text(
        yaml.safe_dump({"data": {"train": path, "verbalizers": {"0": "no", "1": "yes"}}})
    )
    status = main([a.replace("X", path) for a in COMMAND_LINES[command]])
    out, err = capsys.readouterr()
    assert status == 1 and re.fullmatch(rf"error: [^\n]*{re.escape(path)}: {says}\n", err), err
    assert not (workspace / "run").exists()
