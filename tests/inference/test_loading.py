"""Loading a model by folder or hub id: clear, immediate errors, and prompt files that name a folder absolutely."""

import os
import re

import pytest
import transformers
from conftest import BUILDERS, save_model

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.prompt_file import save_prompt
from softprompt.inference.loading import load_with_prompts
from softprompt.models.embedded import EMBEDDED_MODEL
from softprompt.models.model import SoftPromptModel


@pytest.mark.parametrize(
    "name", ["./no-such-model", "../no-such-model", "runs/tiny/no-such-model", "~/no-such-softprompt-model"]
)
def test_a_missing_model_folder_fails_at_once(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def no_loading(*args, **kwargs):
        raise AssertionError("a missing folder must not be looked up on the hub")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_loading)
    with pytest.raises(UserError, match=rf"^model folder {re.escape(name)}: no such folder$"):
        SoftPromptModel.load(name)


def test_a_local_folder_that_cannot_be_loaded_says_why_without_the_offline_hint(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=rf"^model folder {re.escape(str(empty))}: cannot load it \(.+\)$"):
        SoftPromptModel.load(str(empty))


def test_a_hub_id_that_cannot_be_loaded_gets_the_offline_hint():
    with pytest.raises(
        UserError,
        match=r"^model 'softprompt-tests/no-such-model': cannot load it \(.+\); offline, give a local folder$",
    ):
        SoftPromptModel.load("softprompt-tests/no-such-model")


def test_a_relative_model_folder_is_recorded_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_model(BUILDERS["decoder-only"](), tmp_path / "models" / "tiny")
    model = SoftPromptModel.load("models/tiny")
    recorded = model.identity()["base_model"]
    assert os.path.isabs(recorded) and os.path.samefile(recorded, tmp_path / "models" / "tiny")
    model.bank = PromptBank(model.initial_prompt("random", 3))
    prompt = save_prompt(
        tmp_path / "p.safetensors", model.bank.prompt(0), {**model.identity(), "task": {"type": "text2text"}}
    )

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # predicting from another directory finds the model
    reloaded, _ = load_with_prompts([str(prompt)])
    assert reloaded.name == recorded


def test_the_embedded_model_keeps_its_hub_name():
    assert SoftPromptModel.load(EMBEDDED_MODEL).identity()["base_model"] == EMBEDDED_MODEL
