"""The command with its standard streams closed, full or fed text that is not UTF-8: one line on stderr and an exit
code, never a traceback. These start `python -m softprompt` as a shell would."""

import subprocess
import sys

import pytest
from conftest import save_model, tiny_gpt2

from softprompt.files.prompt_file import save_prompt

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

TASK = {"type": "classification", "template": "review {} it was", "verbalizers": {"0": "no", "1": "yes"}}


@pytest.fixture(scope="module")
def prompt(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("streams")
    model = tiny_gpt2()
    identity = {**model.identity(), "base_model": save_model(model, folder / "model")}
    return str(
        save_prompt(folder / "p.safetensors", model.initial_prompt("random", 3, seed=1), {**identity, "task": TASK})
    )


def shell(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )


def softprompt(arguments: str) -> str:
    return f"{sys.executable} -m softprompt {arguments}"


@pytest.mark.parametrize(
    ("redirect", "message"),
    [
        ("<&-", "error: no texts to predict: standard input is closed; give them as arguments or with --file"),
        ("great >&-", "error: standard output is closed; give the command somewhere to write"),
        ("great >/dev/full", "error: standard output: No space left on device"),
        (
            "$'\\xe9t\\xe9 great'",
            "error: input 1: not valid text (a lone surrogate, '\\udce9', at character 1); send UTF-8",
        ),
    ],
)
def test_predict_answers_in_one_line_whatever_its_streams(prompt, redirect, message):
    done = shell(f"{softprompt(f'predict {prompt}')} {redirect}")
    assert done.returncode == 1 and done.stderr.decode().strip().splitlines()[-1:] == [message], done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_predict_reads_a_pipe_given_as_its_file(prompt):
    done = shell(f"{softprompt(f'predict {prompt} --file')} <(printf 'great\\nawful\\n')")
    assert done.returncode == 0, done.stderr.decode()
    assert set(done.stdout.decode().split()) <= {"0", "1"} and len(done.stdout.decode().split()) == 2
