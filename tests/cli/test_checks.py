"""Option checks: one line naming the option as typed, exit code 1, before any model or data is loaded."""

from dataclasses import replace

import pytest
import yaml

from softprompt.checks import output_folder
from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.training.accumulate import accumulation_steps, micro_batch
from softprompt.training.option_checks import check_training_command

# no model and no data exist at these paths: an error about them would mean the checks came too late
MISSING_MODEL = "/nonexistent/model"
MISSING_PROMPT = "/nonexistent/prompt.safetensors"


@pytest.fixture
def config(tmp_path):
    recipe = {
        "model": {"name": MISSING_MODEL},
        "data": {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "dev.jsonl")},
        "train": {"output_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return str(path)


def fails_with(capsys, argv, message):
    assert main(argv) == 1
    assert capsys.readouterr().err == f"error: {message}\n"


TRAIN_CASES = [
    ("--prompt.length=0", "--prompt.length must be at least 1 (got 0)"),
    ("--prompt.length=-5", "--prompt.length must be at least 1 (got -5)"),
    ("--train.batch_size=0", "--train.batch_size must be at least 1 (got 0)"),
    ("--train.micro_batch_size=0", "--train.micro_batch_size must be at least 1 (got 0)"),
    ("--train.eval_every=0", "--train.eval_every must be at least 1 (got 0)"),
    ("--train.log_every=-1", "--train.log_every must be at least 1 (got -1)"),
    ("--train.eval_batch_size=0", "--train.eval_batch_size must be at least 1 (got 0)"),
    ("--train.max_steps=0", "--train.max_steps must be at least 1 (got 0)"),
    ("--train.patience=0", "--train.patience must be at least 1 (got 0)"),
    ("--train.seed=-1", "--train.seed must not be negative (got -1)"),
    ("--train.lr=-0.1", "--train.lr must not be negative (got -0.1)"),
    ("--train.warmup_steps=-1", "--train.warmup_steps must not be negative (got -1)"),
    ("--train.weight_decay=-0.01", "--train.weight_decay must not be negative (got -0.01)"),
    ("--train.epochs=0", "--train.epochs must be more than 0 (got 0.0)"),
    ("--train.epochs=-1", "--train.epochs must be more than 0 (got -1.0)"),
    ("--data.limit_train=0", "--data.limit_train must be at least 1 (got 0)"),
    ("--data.limit_validation=-1", "--data.limit_validation must be at least 1 (got -1)"),
    ("--data.max_input_length=0", "--data.max_input_length must be at least 1 (got 0)"),
    ("--data.max_target_length=0", "--data.max_target_length must be at least 1 (got 0)"),
    ("--data.max_target_length=5000", "--data.max_target_length must be at most 4096 (got 5000)"),
    ("--prompt.random_scale=1e30", "--prompt.random_scale must be at most 1000.0 (got 1e+30)"),
    ("--model.readout_scale=1e308", "--model.readout_scale must be at most 1000.0 (got 1e+308)"),
    ("--data.train=null", "--data.train: give a training file"),
    ("--train.keep_checkpoints=0", "--train.keep_checkpoints must be at least 1 (got 0)"),
    ("--train.save_every=-1", "--train.save_every must not be negative (got -1)"),
]


@pytest.mark.parametrize("option, message", TRAIN_CASES)
def test_train_refuses_bad_options_before_loading(config, capsys, option, message):
    fails_with(capsys, ["train", "--config", config, option], message)


def test_train_refuses_a_batch_that_micro_batches_do_not_divide(config, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    fails_with(
        capsys,
        ["train", "--config", config, "--train.batch_size=10", "--train.micro_batch_size=4"],
        "--train.batch_size 10 is not a multiple of --train.micro_batch_size x processes = 4 (4 rows x 1 processes)",
    )
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun sets it: the micro-batch capped at the share of 2 rows
    fails_with(
        capsys,
        ["train", "--config", config, "--train.batch_size=8"],
        "--train.batch_size 8 is not a multiple of --train.micro_batch_size x processes = 6 (2 rows x 3 processes, the micro-batch capped at batch_size / processes)",
    )


@pytest.mark.parametrize(
    "batch, micro, processes, rows, steps",
    [(32, 32, 1, 32, 1), (32, 32, 8, 4, 1), (32, 2, 8, 2, 2), (10, 5, 2, 5, 1), (8, 32, 1, 8, 1)],
)
def test_a_recipe_runs_unchanged_on_more_processes_its_micro_batch_capped_at_their_share(
    batch, micro, processes, rows, steps
):
    """The default 32-row batch and micro-batch on 8 processes: 4 rows each, one micro-batch per step."""
    assert micro_batch(batch, micro, processes) == rows
    assert accumulation_steps(batch, micro, processes) == steps


def test_train_refuses_an_output_folder_that_is_or_lies_under_a_file(config, a_file, capsys):
    fails_with(
        capsys,
        ["train", "--config", config, f"--train.output_dir={a_file}"],
        f"--train.output_dir: {a_file} is a file, not a folder",
    )
    fails_with(
        capsys,
        ["train", "--config", config, f"--train.output_dir={a_file}/run"],
        f"--train.output_dir: {a_file}/run lies under {a_file}, which is a file",
    )


@pytest.mark.parametrize(
    "option, message",
    [
        ("--train.eval_batch_size=0", "--train.eval_batch_size must be at least 1 (got 0)"),
        ("--data.limit_validation=0", "--data.limit_validation must be at least 1 (got 0)"),
        ("--data.max_target_length=0", "--data.max_target_length must be at least 1 (got 0)"),
        (
            "--data.task=boolk",
            "--data.task: 'boolk' is not a task; the tasks are classification, text2text, squad, mrqa, boolq, cb, copa, multirc, record, rte, wic, wsc, trec, sst5, sst5-binary, mr, sst2",
        ),
    ],
)
def test_eval_refuses_bad_options_before_loading(config, capsys, option, message):
    fails_with(capsys, ["eval", MISSING_PROMPT, "--config", config, option], message)
    fails_with(capsys, ["eval", "--config", config, option], message)  # prompt design


@pytest.mark.parametrize("size", ["0", "-1"])
def test_predict_refuses_a_batch_size_below_one(capsys, size):
    fails_with(
        capsys,
        ["predict", MISSING_PROMPT, "great", f"--batch_size={size}"],
        f"--batch_size must be at least 1 (got {size})",
    )


@pytest.mark.parametrize("content", [b"\x80\x81 binary\n", b"text\x00with a NUL\n"])
def test_predict_refuses_a_file_that_is_not_text(tmp_path, capsys, content):
    binary = tmp_path / "texts.bin"
    binary.write_bytes(content)
    fails_with(capsys, ["predict", MISSING_PROMPT, "--file", str(binary)], f"{binary}: not a UTF-8 text file")


@pytest.mark.slow
def test_quickstart_checks_its_own_options(tmp_path, a_file, capsys):
    fails_with(capsys, ["quickstart", "--steps=0"], "--steps must be at least 1 (got 0)")
    fails_with(capsys, ["quickstart", "--seed=-1"], "--seed must not be negative (got -1)")
    fails_with(capsys, ["quickstart", f"--output={a_file}"], f"--output: {a_file} is a file, not a folder")
    fails_with(
        capsys, ["quickstart", f"--output={a_file}/sub"], f"--output: {a_file}/sub lies under {a_file}, which is a file"
    )


def test_defaults_and_an_unset_learning_rate_pass(tmp_path):
    check_training_command(
        PromptOptions(), DataOptions(train="train.jsonl"), TrainOptions(output_dir=str(tmp_path / "new" / "run"))
    )
    check_training_command(
        PromptOptions(), DataOptions(train="train.jsonl"), replace(TrainOptions(), lr=None, output_dir=str(tmp_path))
    )
    output_folder("--output", str(tmp_path))
    with pytest.raises(UserError, match="must not be negative"):
        check_training_command(PromptOptions(), DataOptions(train="train.jsonl"), replace(TrainOptions(), lr=-1.0))
