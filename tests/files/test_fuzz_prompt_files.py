"""Broken prompt files are refused in one line naming the file: by the library and by every command that reads one
(exit status 1, one line on stderr, no traceback, nothing written); `serve` refuses one in one log line and serves
the others. tests/files/test_prompt_file.py has the NaN/inf,
junk-bytes, missing-file and width-mismatch refusals of the library call."""

import json
import os
import re

import pytest
import torch
import uvicorn
from conftest import BUILDERS, save_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from softprompt import cli
from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.files.prompt_file import FORMAT, load_prompt, save_prompt
from softprompt.files.state_file import STRUCTURE, load_state, save_state
from softprompt.inference.loading import load_with_prompts

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

SCALE = int(os.environ.get("SOFTPROMPT_FUZZ_SCALE", "1"))  # more generated cases per property, for a long run
HIDDEN = 32
TASK = {"type": "classification", "verbalizers": {"0": "no", "1": "yes"}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_model(BUILDERS["decoder-only"](), tmp_path_factory.mktemp("model") / "tiny-gpt2")


def identity(folder) -> dict:
    return {"base_model": folder, "family": "decoder-only", "task": TASK}


def raw(path, tensors: dict, metadata) -> None:
    """A safetensors file with softprompt's header, `metadata` written as given (any JSON, or a raw string)."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    save_file(tensors, str(path), metadata={"format": FORMAT, "metadata": text})


def with_metadata(**changes):
    def make(path, folder):
        raw(path, {"prompt": torch.zeros(4, HIDDEN)}, {**identity(folder), "format_version": 1, **changes})

    return make


def tensor(value):
    def make(path, folder):
        raw(path, {"prompt": value}, identity(folder))

    return make


def good(path, folder):
    save_prompt(path, torch.zeros(4, HIDDEN), identity(folder))


def cut(path, folder):
    good(path, folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])


def pickle_renamed(path, folder):
    torch.save({"prompt": torch.zeros(4, HIDDEN)}, path)


BROKEN = {  # name: (writes the file, what the message says)
    "truncated": (cut, "not a readable safetensors file"),
    "empty": (lambda p, f: p.write_bytes(b""), "the file is empty"),
    "a folder": (lambda p, f: p.mkdir(), "is a folder, not a prompt file"),
    "a pickle renamed": (pickle_renamed, "it is a pickle, as torch.save writes"),
    "float16": (tensor(torch.zeros(4, HIDDEN, dtype=torch.float16)), "stored as F16, expected F32"),
    "int64": (tensor(torch.zeros(4, HIDDEN, dtype=torch.int64)), "stored as I64, expected F32"),
    "bool": (tensor(torch.zeros(4, HIDDEN, dtype=torch.bool)), "stored as BOOL, expected F32"),
    "1-D": (tensor(torch.zeros(HIDDEN)), r"has shape \(32,\), expected \(length, hidden\)"),
    "3-D": (tensor(torch.zeros(1, 4, HIDDEN)), r"has shape \(1, 4, 32\)"),
    "no rows": (tensor(torch.zeros(0, HIDDEN)), r"has shape \(0, 32\)"),
    "NaN": (tensor(torch.full((4, HIDDEN), float("nan"))), "NaN or infinite"),
    "-inf": (tensor(torch.full((4, HIDDEN), float("-inf"))), "NaN or infinite"),
    "wrong hidden size": (tensor(torch.zeros(4, 16)), "prompt width 16 does not match the model's hidden size 32"),
    "metadata not JSON": (
        lambda p, f: raw(p, {"prompt": torch.zeros(4, HIDDEN)}, '{"base_model": '),
        "metadata is not valid JSON",
    ),
    "metadata not an object": (
        lambda p, f: raw(p, {"prompt": torch.zeros(4, HIDDEN)}, [1, 2]),
        "metadata is not a JSON object",
    ),
    "no softprompt header": (
        lambda p, f: save_file({"prompt": torch.zeros(4, HIDDEN)}, str(p)),
        "not a softprompt prompt file",
    ),
    "a newer format": (with_metadata(format_version=99), "format version 99 is newer"),
    "format_version a string": (with_metadata(format_version="1"), "'format_version' is '1', expected an integer"),
    "base_model a number": (with_metadata(base_model=5), "'base_model' is 5, expected a string"),
    "no base_model": (with_metadata(base_model=""), "does not name its base model"),
    "an unknown family": (with_metadata(family="robot"), "'family' is 'robot'"),
    "task a list": (with_metadata(task=["classification"]), "'task' is \\['classification'\\], expected an object"),
    "an unknown task": (with_metadata(task={"type": "poetry"}), "its task 'poetry' is not one"),
    "verbalizers a list": (
        with_metadata(task={**TASK, "verbalizers": ["no", "yes"]}),
        "'task.verbalizers' is \\['no', 'yes'\\], expected dict",
    ),
    "a label text a number": (
        with_metadata(task={**TASK, "verbalizers": {"0": 1, "1": 2}}),
        "label text that is not a string",
    ),
    "max_input_length negative": (
        with_metadata(task={**TASK, "max_input_length": -3}),
        "'task.max_input_length' is -3, expected at least 1",
    ),
    "max_input_length a string": (
        with_metadata(task={**TASK, "max_input_length": "512"}),
        "'task.max_input_length' is '512', expected int",
    ),
    "a template without a field": (with_metadata(task={**TASK, "template": "no field"}), "template cannot be used"),
    "length disagrees": (with_metadata(length=7), "says length 7, but the prompt tensor has 4"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_library_refuses_a_broken_prompt_file_in_one_line(tmp_path, folder, name):
    write, says = BROKEN[name]
    path = tmp_path / "p.safetensors"
    write(path, folder)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: [^\n]*{says}[^\n]*$"):
        load_with_prompts([str(path)])


NEEDS_A_MODEL = {
    "wrong hidden size",
    "no base_model",
}  # a sound file on its own: refused by the commands that load a model


@pytest.fixture
def run(tmp_path, folder, parser, monkeypatch, capsys):
    """main(argv) with the broken file's placeholders filled: (exit status, stdout, stderr)."""
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)  # serve checks, loads and scans, then returns
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "great", "label": 1}\n')
    sound = tmp_path / "sound" / "sound.safetensors"
    sound.parent.mkdir()
    good(sound, folder)
    places = {
        "DATA": str(data),
        "SOUND": str(sound),
        "MODEL": folder,
        "OUT": str(tmp_path / "out"),
        "BANK": str(sound.parent),
    }

    def call(argv: list[str]) -> tuple[int, str, str]:
        status = main([places.get(a, a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return call


COMMANDS = {  # every command that reads a prompt file; P is the broken one
    "eval": ["eval", "P", "--data.validation", "DATA"],
    "predict": ["predict", "P", "great"],
    "neighbors": ["neighbors", "P"],
    "ensemble": ["ensemble", "--prompts", "P", "SOUND", "--data.validation", "DATA"],
    "info": ["info", "P"],
    "similar": ["similar", "P", "--bank", "BANK"],
    "export": ["export", "P", "--output", "OUT"],
}
CASES = [
    (name, command)
    for name in BROKEN
    for command in COMMANDS
    if name not in NEEDS_A_MODEL or command in ("eval", "predict", "neighbors", "ensemble")
]


@pytest.mark.parametrize("name, command", CASES)
def test_a_command_refuses_a_broken_prompt_file_in_one_line(tmp_path, folder, run, name, command):
    write, says = BROKEN[name]
    path = tmp_path / "p.safetensors"
    write(path, folder)
    status, out, err = run([str(path) if a == "P" else a for a in COMMANDS[command]])
    assert status == 1 and re.fullmatch(rf"error: {re.escape(str(path))}: [^\n]*{says}[^\n]*\n", err), err
    assert out == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_commands_take_a_sound_prompt_file(tmp_path, folder, run, command):
    good(tmp_path / "p.safetensors", folder)
    status, out, err = run([str(tmp_path / "p.safetensors") if a == "P" else a for a in COMMANDS[command]])
    assert status == 0 and out, err


@pytest.mark.parametrize(
    "name", [name for name in BROKEN if name not in ("a folder", "no base_model")]
)  # a folder there is a task's; --model names the model
def test_serve_refuses_a_broken_prompt_file_in_one_log_line_and_serves_the_others(tmp_path, folder, run, name):
    write, says = BROKEN[name]
    served = tmp_path / "served"
    served.mkdir()
    write(served / "p.safetensors", folder)
    good(served / "mood.safetensors", folder)
    status, out, err = run(["serve", "--prompts", str(served), "--model", "MODEL", "--port", "0"])
    refused = [line for line in err.splitlines() if "p.safetensors" in line]
    assert (
        status == 0
        and len(refused) == 1
        and re.fullmatch(rf"WARNING: +refused p\.safetensors: [^\n]*{says}[^\n]*", refused[0])
    ), err
    assert "serving 1 tasks" in err and ": mood" in err and "Traceback" not in err


def test_serve_without_a_model_says_why_no_prompt_file_names_one(tmp_path, folder, run):
    served = tmp_path / "served"
    served.mkdir()
    cut(served / "p.safetensors", folder)
    status, _, err = run(["serve", "--prompts", str(served), "--port", "0"])
    assert status == 1 and re.fullmatch(
        rf"error: --prompts: no prompt file in {re.escape(str(served))} names its model \({re.escape(str(served / 'p.safetensors'))}: not a readable safetensors file [^\n]*\); give --model\n",
        err,
    ), err


@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_prompt_file_cut_anywhere_or_with_a_byte_changed_is_refused_or_read_whole(tmp_path, folder, data):
    path = tmp_path / "p.safetensors"
    good(path, folder)
    whole = path.read_bytes()
    at = data.draw(st.integers(0, len(whole) - 1))
    damaged = data.draw(
        st.sampled_from(
            [whole[:at], whole[:at] + bytes([whole[at] ^ data.draw(st.integers(1, 255))]) + whole[at + 1 :]]
        )
    )
    path.write_bytes(damaged)
    try:
        file = load_prompt(path)
    except UserError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        return
    # a changed byte inside the numbers or a metadata string may still read: then it is a sound prompt
    assert file.prompt.shape == (4, HIDDEN) and torch.isfinite(file.prompt).all() and isinstance(file.metadata, dict)


NODE_KINDS = ["dict", "pairs", "list", "tuple", "value", "tensor", "other"]
leaves = (
    st.fixed_dictionaries({"value": st.none() | st.integers() | st.text(max_size=4)})
    | st.fixed_dictionaries({"tensor": st.sampled_from(["t0", "t9", 3])})
    | st.integers()
)
nodes = st.recursive(
    leaves,
    lambda inner: st.dictionaries(
        st.sampled_from(NODE_KINDS),
        inner
        | st.lists(inner | st.lists(inner, max_size=2), max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=2),
        min_size=1,
        max_size=2,
    ),
    max_leaves=8,
)


@settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(structure=nodes | st.text(max_size=20) | st.none())
def test_a_state_file_of_any_structure_reads_back_or_raises_value_error(tmp_path, structure):
    path = tmp_path / "state.safetensors"
    save_file({"t0": torch.zeros(2)}, str(path), metadata={STRUCTURE: json.dumps(structure)})
    try:
        load_state(path)
    except ValueError as e:
        assert "\n" not in str(e)  # checkpoint.py quotes it in one line


def test_a_state_file_reads_back_what_was_saved(tmp_path):
    state = {"step": 3, "rng": (1, [2.5, None]), "optimizer": {0: {"m": torch.ones(2)}}, "name": "x"}
    save_state(state, tmp_path / "s.safetensors")
    back = load_state(tmp_path / "s.safetensors")
    assert back["rng"] == (1, [2.5, None]) and torch.equal(back["optimizer"][0]["m"], torch.ones(2))
