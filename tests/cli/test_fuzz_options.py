"""Every numeric option at its bounds (0, -1, huge, NaN, infinities, text): one line on stderr naming the option,
or a run, and never a traceback; refused before any model loads. The table is built from the option dataclasses and
the commands' signatures, so a new option is fuzzed too."""

import dataclasses
import inspect
import re
import types
import typing

import pytest
from conftest import BUILDERS, ModelLoaded, save_model, sentiment_rows

from softprompt import cli
from softprompt.cli import COMMANDS, main
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, ServeOptions, TrainOptions

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

SECTIONS = {
    "model": ModelOptions,
    "prompt": PromptOptions,
    "data": DataOptions,
    "train": TrainOptions,
    "method": MethodOptions,
}
VALUES = {  # as typed on a command line (YAML: .nan and .inf are NaN and infinity)
    int: ["0", "-1", "1000000000000", "1.5"],
    float: ["0", "-1", "1e308", ".nan", "-.inf", "abc"],
}
REFUSED = {"-1", "1.5", "abc", ".nan", ".inf", "-.inf"}  # no count, size, rate or seed takes these
COMMAND_LINES = {  # a command's other arguments: enough to pass every check when the fuzzed value is sound
    "predict": ["p.safetensors", "great"],
    "neighbors": ["p.safetensors"],
    "similar": ["p.safetensors", "--bank", "."],
    "ensemble": ["--prompts", "a.safetensors", "b.safetensors", "--data.validation", "DATA"],
    "serve": ["--prompts", ".", "--model", "tiny", "--port", "0"],
    "quickstart": ["--output", "OUT"],
}


def numeric(annotation) -> type | None:
    """int or float for `int`, `float`, `int | None`, ...; None for any other type."""
    args = (
        typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
        else (annotation,)
    )
    kinds = [a for a in args if a in (int, float)]
    return kinds[0] if len(kinds) == 1 and bool not in args else None


def section_options() -> list[tuple[str, type]]:
    return [
        (f"--{section}.{f.name}", numeric(f.type))
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if numeric(f.type)
    ]


def command_options() -> list[tuple[str, str, type]]:
    """(command, --option, type) for every int or float parameter of a command that is not an options section, and
    for serve's, which travel as ServeOptions (its **options)."""
    out = []
    for name, fn in COMMANDS.items():
        for parameter in inspect.signature(fn).parameters.values():
            kind = numeric(parameter.annotation)
            if kind:
                out.append((name, f"--{parameter.name}", kind))
    out += [("serve", f"--{f.name}", numeric(f.type)) for f in dataclasses.fields(ServeOptions) if numeric(f.type)]
    return out


CASES = [("train", option, value) for option, kind in section_options() for value in VALUES[kind]]
CASES += [(command, option, value) for command, option, kind in command_options() for value in VALUES[kind]]


@pytest.fixture
def workspace(tmp_path, monkeypatch, parser):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(f'{{"text": "{r["text"]}", "label": {r["label"]}}}\n' for r in sentiment_rows()))

    def refuse(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(SoftPromptModel, "load", classmethod(refuse))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    return tmp_path


def base_line(command: str, tmp_path) -> list[str]:
    if command == "train":
        return [
            "train",
            "--data.train",
            str(tmp_path / "train.jsonl"),
            "--data.verbalizers",
            '{"0": "no", "1": "yes"}',
            "--train.output_dir",
            str(tmp_path / "run"),
        ]
    rest = [
        str(tmp_path / "train.jsonl") if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a
        for a in COMMAND_LINES.get(command, [])
    ]
    return [command, *rest]


def test_the_table_covers_the_options():
    options = {option for _, option, _ in CASES}
    assert {
        "--train.lr",
        "--train.max_steps",
        "--prompt.length",
        "--model.readout_scale",
        "--data.max_input_length",
        "--method.lora_alpha",
    } <= options
    assert {"--max_wait_ms", "--port", "--batch_size", "--k", "--steps", "--seed"} <= options
    assert len(CASES) > 150


@pytest.mark.parametrize("command, option, value", CASES)
def test_a_numeric_option_at_its_bounds_is_one_line_or_a_run(workspace, capsys, command, option, value):
    argv = [*base_line(command, workspace), f"{option}={value}"]
    try:
        status = main(argv)
    except ModelLoaded:
        status = None  # every check passed: a run
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if status is None or status == 0:
        assert value not in REFUSED, f"{option}={value} was taken"
        return
    assert status in (1, 2) and err.count("\n") == 1 and err.startswith("error: "), err
    if value in REFUSED:  # refused for this value, and says which option
        assert re.search(rf"(^error: |[^\w.-])--?{re.escape(option.lstrip('-'))}\b", err), err


@pytest.mark.parametrize(
    "command, option, value",
    [
        ("train", "--train.epochs", "1e308"),  # ceil(inf) steps: an OverflowError
        ("train", "--train.batch_size", "1000000000000"),  # a trillion micro-batches in one step, deaf to SIGTERM
        ("serve", "--max_wait_ms", "1e308"),  # the batcher's timed wait overflows: every request hangs
        ("serve", "--rescan_seconds", "1e308"),  # the rescan thread's wait overflows
    ],
)
def test_values_that_once_crashed_or_hung_a_run_are_refused_in_one_line(workspace, capsys, command, option, value):
    assert main([*base_line(command, workspace), f"{option}={value}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {option} must be at most "), err


SOUND_EXTREMES = [  # values the checks take, at their extremes; each group is one real run of a tiny model
    [
        "--train.decay_rate=1e308",
        "--train.clip_threshold=1e308",
        "--train.max_grad_norm=1e308",
        "--prompt.vocab_first_n=1000000000000",
        "--data.max_input_length=1000000000000",
        "--data.limit_train=1000000000000",
        "--data.limit_validation=1000000000000",
        "--train.eval_batch_size=1000000",
        "--train.micro_batch_size=1000000",
        "--train.eval_every=1000000000000",
        "--train.log_every=1000000000000",
        "--train.keep_checkpoints=1000000000000",
        "--train.patience=1000000000000",
        "--train.warmup_steps=1000000000000",
        "--train.seed=0",
        "--train.save_every=0",
        "--prompt.random_scale=0",
        "--prompt.init=random",
    ],
    [
        "--train.lr=0",
        "--train.weight_decay=0",
        "--prompt.reparam=residual",
        "--prompt.reparam_dropout=0",
        "--train.dropout=false",
    ],
    ["--train.lr=1e308"],
    ["--train.weight_decay=1e308"],
    ["--model.readout_scale=1e308"],
    ["--prompt.random_scale=1e308", "--prompt.init=random"],
    ["--prompt.reparam=ulpt", "--prompt.projection_seed=0", "--prompt.rank=1"],
    ["--prompt.dept_positions=2", "--train.dept_lr=1e308"],
    ["--method=lora", "--method.lora_alpha=1e308", "--method.lora_rank=1"],
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_model(BUILDERS["encoder-only"](), tmp_path_factory.mktemp("model") / "tiny-bert")


@pytest.mark.parametrize("options", SOUND_EXTREMES, ids=lambda options: options[0].split("=")[0].lstrip("-"))
def test_options_taken_at_their_extremes_run_or_stop_in_one_line(tmp_path, tiny_folder, capsys, options):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(f'{{"text": "{r["text"]}", "label": {r["label"]}}}\n' for r in sentiment_rows()))
    argv = [
        "train",
        "--model.name",
        tiny_folder,
        "--data.train",
        str(data),
        "--data.validation",
        str(data),
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        "--prompt.length=2",
        "--train.max_steps=2",
        "--train.batch_size=4",
        "--train.output_dir",
        str(tmp_path / "run"),
        *options,
    ]
    status = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status:
        last = err.rstrip("\n").split("\n")[-1]
        assert status == 1 and last.startswith("error: ") and re.fullmatch(r"error: [^\n]+", last), err
    else:
        assert (tmp_path / "run" / "prompt.safetensors").is_file() or "--method" in options[0]
