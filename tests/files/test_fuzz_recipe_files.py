"""Recipe files (`--config FILE`, `--SECTION FILE`) and sweep files, malformed or of any content: a run, or one line on
stderr naming the file (and the line or field), exit status 2 for a recipe and 1 for a sweep, never a traceback."""

import json
import os
import re

import pytest
import yaml
from conftest import ModelLoaded, sentiment_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softprompt import cli
from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.experiments.grid import load_sweep
from softprompt.models.model import SoftPromptModel

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

SCALE = int(os.environ.get("SOFTPROMPT_FUZZ_SCALE", "1"))  # more generated cases per property, for a long run
FUZZ = settings(
    max_examples=60 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def workspace(tmp_path, monkeypatch, parser):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))

    def refuse(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(SoftPromptModel, "load", classmethod(refuse))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    return tmp_path


def run(capsys, argv: list[str]) -> tuple[int | None, str]:
    """main(argv)'s exit status (None: it got as far as loading the model) and its stderr."""
    try:
        status = main(argv)
    except ModelLoaded:
        status = None
    return status, capsys.readouterr().err


BROKEN = {  # name: (file name, content or None for a folder, what the message says after the file's name)
    "malformed YAML": (
        "r.yaml",
        b"data:\n  train: [unclosed\n",
        r":3: malformed YAML \(expected ',' or '\]', but got '<stream end>'\)",
    ),
    "malformed JSON": (
        "r.json",
        b'{"data": {"train": "x"}\n "train": {}}\n',
        r":2: malformed YAML \(expected ',' or '\}', but got '<scalar>'\)",
    ),
    "a tab indent": (
        "r.yaml",
        b"data:\n\ttrain: x\n",
        r":2: malformed YAML \(found character '\\t' that cannot start any token\)",
    ),
    "not UTF-8": ("r.yaml", b"data:\n  train: \xff\n", r":2: not UTF-8 text \(byte 0xff\)"),
    "a NUL byte": ("r.yaml", b"data: {}\n\x00\n", r":2: malformed YAML \(character U\+0000 is not allowed\)"),
    "a list": ("r.yaml", b"- data\n- train\n", r": expected a mapping \(name: value\), found a list"),
    "a number": ("r.yaml", b"5\n", r": expected a mapping \(name: value\), found a number"),
    "empty": ("r.yaml", b"", r": the file is empty; expected a mapping of options"),
    "a folder": ("r.yaml", None, r": is a folder, not a YAML file"),
    "missing": ("missing.yaml", False, r": no such file"),
    "a python tag": (
        "r.yaml",
        b"data: !!python/object:os.system {}\n",
        r":1: malformed YAML \(could not determine a constructor .+\)",
    ),
}


def write(folder, name: str):
    file, content, says = BROKEN[name]
    path = folder / file
    if content is None:
        path.mkdir()
    elif content is not False:
        path.write_bytes(content)
    return path, says


COMMAND_LINES = {  # each command that takes a recipe, with the rest of a line that passes its checks
    "train": ["train", "--data.train", "train.jsonl"],
    "eval": ["eval", "--data.validation", "train.jsonl"],
    "predict": ["predict", "p.safetensors", "great"],
    "ensemble": ["ensemble", "--prompts", "a.safetensors", "b.safetensors", "--data.validation", "train.jsonl"],
    "neighbors": ["neighbors", "p.safetensors"],
    "transfer": ["transfer", "--data.train", "train.jsonl", "--targets", '["mr=./m.txt"]'],
}


@pytest.mark.parametrize("command", list(COMMAND_LINES))
@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_recipe_file_is_one_line_naming_the_file(workspace, capsys, command, name):
    path, says = write(workspace, name)
    status, err = run(capsys, [*COMMAND_LINES[command], "--config", str(path)])
    assert status == 2 and re.fullmatch(rf"error: {re.escape(str(path))}{says}\n", err), err


@pytest.mark.parametrize(
    "section, command",
    [("data", "train"), ("model", "predict"), ("train", "eval"), ("method", "train"), ("model", "ensemble")],
)
@pytest.mark.parametrize("name", ["malformed YAML", "not UTF-8", "a list", "a folder", "missing"])
def test_a_broken_section_file_is_one_line_naming_the_file(workspace, capsys, section, command, name):
    path, says = write(workspace, name)
    status, err = run(capsys, [*COMMAND_LINES[command], f"--{section}={path}"])
    assert status == 2 and re.fullmatch(rf"error: {re.escape(str(path))}{says}\n", err), err


@pytest.mark.parametrize("section", ["model", "prompt", "data", "train", "method"])
@pytest.mark.parametrize("value", ["5", "[1, 2]", "lora", "true"])
def test_a_recipe_section_that_is_not_a_mapping_is_named(workspace, capsys, section, value):
    (workspace / "r.yaml").write_text(f"{section}: {value}\n")
    status, err = run(capsys, [*COMMAND_LINES["train"], "--config", "r.yaml"])
    assert status == 2 and re.fullmatch(
        rf"error: r\.yaml: '{section}' is [^\n]+, expected a mapping of its options \({section}: \{{option: value\}}\)\n",
        err,
    ), err


@pytest.mark.parametrize(
    "option, value, says",
    [
        (
            "--config",
            '{"data": 5}',
            r"--config: 'data' is a number, expected a mapping of its options \(data: \{option: value\}\)",
        ),
        ("--config", '{"data": ', r"--config: malformed YAML \(expected the node content, but found '<stream end>'\)"),
        ("--data", '{"train": [', r"--data: malformed YAML \(expected the node content, but found '<stream end>'\)"),
    ],
)
def test_a_broken_recipe_written_out_is_named_by_its_option(workspace, capsys, option, value, says):
    status, err = run(capsys, [*COMMAND_LINES["train"], f"{option}={value}"])
    assert status == 2 and re.fullmatch(rf"error: {says}\n", err), err


def test_a_data_file_given_as_a_section_says_where_it_goes(workspace, capsys):
    status, err = run(capsys, ["ensemble", "--prompts", "p.safetensors", "--data", "train.jsonl"])
    assert (
        status == 2
        and err
        == "error: --data train.jsonl: --data takes a YAML or JSON file of data options; give one option as --data.OPTION VALUE (a data file goes in --data.train or --data.validation)\n"
    ), err


def test_serve_takes_model_name_as_the_other_commands_spell_it(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "serve": lambda **kwargs: seen.update(kwargs)})
    assert main(["serve", "--prompts", "p", "--model.name", "some/model"]) == 0 and seen["model"] == "some/model"
    assert main(["serve", "--prompts", "p", "--model.name=other/model"]) == 0 and seen["model"] == "other/model"


def test_a_sound_recipe_file_runs(workspace, capsys):
    (workspace / "r.yaml").write_text(
        yaml.safe_dump(
            {"data": {"train": "train.jsonl", "verbalizers": {"0": "no", "1": "yes"}}, "train": {"max_steps": 2}}
        )
    )
    (workspace / "d.json").write_text(json.dumps({"train": "train.jsonl", "verbalizers": {"0": "no", "1": "yes"}}))
    assert run(capsys, ["train", "--config", "r.yaml"]) == (None, "")
    assert run(capsys, ["train", "--data", "d.json"]) == (None, "")
    assert run(
        capsys, ["train", "--config", '{"data": {"train": "train.jsonl", "verbalizers": {"0": "no", "1": "yes"}}}']
    ) == (None, "")


OPTIONS = [
    "model.name",
    "prompt.length",
    "prompt.init",
    "data.train",
    "data.task",
    "data.verbalizers",
    "train.lr",
    "train.max_steps",
    "method.name",
    "method.lora_rank",
    "grid",
    "tasks",
    "variants",
    "output",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.dates()
    | st.sampled_from(["train.jsonl", "lora", "random", ".nan", "1e-3"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(OPTIONS) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def nested(assignments: dict) -> dict:
    """{"data.train": x} -> {"data": {"train": x}}; a name without a dot stays at the top."""
    out: dict = {}
    for name, value in assignments.items():
        section, dot, option = name.partition(".")
        if not dot:
            out[section] = value
        elif isinstance(out.setdefault(section, {}), dict):
            out[section][option] = value
    return out


@st.composite
def yaml_bytes(draw) -> bytes:
    """A recipe of random options and values as YAML, sometimes cut short or with random bytes put in."""
    doc = nested(draw(st.dictionaries(st.sampled_from(OPTIONS), values, max_size=5)))
    return mangled(draw, yaml.safe_dump(doc, allow_unicode=True).encode())


def mangled(draw, data: bytes) -> bytes:
    """`data` intact (half the time), cut short at a random place, or with random bytes put in at one."""
    how = draw(st.sampled_from(["intact", "intact", "cut", "insert"]))
    at = draw(st.integers(0, len(data)))
    if how == "cut":
        return data[:at]
    return data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:] if how == "insert" else data


@FUZZ
@given(content=yaml_bytes(), command=st.sampled_from(["train", "eval", "predict"]))
def test_a_recipe_file_of_any_content_runs_or_is_one_line(workspace, capsys, content, command):
    (workspace / "r.yaml").write_bytes(content)
    status, err = run(capsys, [*COMMAND_LINES[command], "--config", "r.yaml"])
    assert "Traceback" not in err
    if status is not None:
        assert status in (1, 2) and re.fullmatch(r"error: [^\n]+\n", err), err


def sweep_doc(data: str) -> dict:
    return {
        "data": {"train": data, "verbalizers": {"0": "no", "1": "yes"}},
        "train": {"max_steps": 2},
        "grid": {"train.seed": [1, 2]},
    }


@st.composite
def sweep_bytes(draw, data: str) -> bytes:
    """A sound sweep file with a random value put in at a random place, sometimes cut short or with bytes put in."""
    doc = sweep_doc(data)
    place = draw(
        st.sampled_from(
            OPTIONS + ["grid.train.seed", "grid.prompt.length", "tasks.x", "variants.v", "variants.v.prompt.length"]
        )
    )
    value = draw(values)
    target = doc
    *parents, last = place.split(".", 2) if place.startswith(("grid.", "tasks.", "variants.")) else place.split(".")
    for key in parents:
        target = target.setdefault(key, {}) if isinstance(target.get(key, {}), dict) else {}
    target[last] = value
    return mangled(draw, yaml.safe_dump(doc, allow_unicode=True).encode())


@FUZZ
@given(data=st.data())
def test_a_sweep_file_of_any_content_loads_or_is_one_line_naming_it(workspace, data):
    path = workspace / "sweep.yaml"
    path.write_bytes(data.draw(sweep_bytes(str(workspace / "train.jsonl"))))
    try:
        sweep = load_sweep(path, str(workspace / "out"))
    except UserError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(f"{path}"), message
        line = re.match(re.escape(str(path)) + r":(\d+):", message)
        assert line is None or 1 <= int(line[1]) <= path.read_bytes().count(b"\n") + 1, message
        return
    assert sweep.cells


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_sweep_command_refuses_a_broken_sweep_file_in_one_line(workspace, capsys, name):
    path, says = write(workspace, name)
    status, err = run(capsys, ["sweep", str(path), "--dry_run"])
    if name == "empty":  # an empty sweep is one base cell, which lacks its training file
        assert status == 1 and err == f"error: {path}: cell base: --data.train: give a training file\n", err
        return
    assert status == 1 and re.fullmatch(rf"error: {re.escape(str(path))}{says}\n", err), err


@pytest.mark.parametrize(
    "place, value, says",
    [
        (
            "grid",
            {"train.seed": ["2020-01-01"]},
            r"grid\.train\.seed\[0\]: '2020-01-01' is a date; quote it to give a text",
        ),
        ("output", [1], r"output: expected a folder name, found a list"),
        ("data", [], r"data: expected a mapping \(name: value\), found a list"),
        ("tasks", {"x": 5}, r"tasks\.x: expected a mapping \(name: value\), found a number"),
    ],
)
def test_a_sweep_field_of_the_wrong_kind_is_named(workspace, capsys, place, value, says):
    doc = sweep_doc("train.jsonl")
    doc[place] = value
    text = yaml.safe_dump(doc).replace("'2020-01-01'", "2020-01-01")  # unquoted: YAML reads a date
    (workspace / "sweep.yaml").write_text(text)
    status, err = run(capsys, ["sweep", "sweep.yaml", "--dry_run"])
    assert status == 1 and re.fullmatch(rf"error: sweep\.yaml: {says}\n", err), err
