"""Security outside the server: nothing is unpickled. A model whose weights are only a pickle checkpoint is refused
unless the user trusts it (--model.trust_pickle=true); weights are asked of transformers as safetensors only."""

import json
import os

import pytest
import torch
import transformers
from conftest import save_model, sentiment_rows, tiny_gpt2

from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.models.model import SoftPromptModel
from softprompt.options import ModelOptions


def pickled_model(folder) -> tuple[SoftPromptModel, str]:
    """A tiny model folder whose weights are a PyTorch pickle (pytorch_model.bin), as older checkpoints are."""
    model = tiny_gpt2()
    save_model(model, folder)
    os.remove(folder / "model.safetensors")
    torch.save(model.base.state_dict(), folder / "pytorch_model.bin")
    return model, str(folder)


def test_a_pickled_model_folder_is_refused_unless_trusted(tmp_path):
    model, folder = pickled_model(tmp_path / "pickled")
    with pytest.raises(UserError) as error:
        SoftPromptModel.load(folder)
    assert str(error.value) == (
        f"model folder {folder}: its weights are a pickle (pytorch_model.bin), which can run code when loaded and is not loaded by default; "
        "convert it to safetensors (save_pretrained), or pass --model.trust_pickle=true if you trust its source"
    )
    trusted = SoftPromptModel.load(folder, trust_pickle=True)
    assert all(torch.equal(a, b) for a, b in zip(trusted.base.state_dict().values(), model.base.state_dict().values()))
    assert ModelOptions().trust_pickle is False


def test_a_folder_with_safetensors_beside_a_pickle_loads_the_safetensors(tmp_path, monkeypatch):
    model = tiny_gpt2()
    folder = save_model(model, tmp_path / "both")
    (tmp_path / "both" / "pytorch_model.bin").write_bytes(b"a pickle that must never be read")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was read"))
    loaded = SoftPromptModel.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(loaded.base.state_dict().values(), model.base.state_dict().values()))


def test_hub_models_are_asked_for_safetensors_only(monkeypatch):
    asked = {}

    class Refusing:
        @staticmethod
        def from_pretrained(path, **kwargs):
            asked.update(kwargs)
            raise OSError(
                f"{path} does not appear to have a file named model.safetensors or model.safetensors.index.json and thus cannot be loaded with `safetensors`. Please do not set `use_safetensors=True`."
            )

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: tiny_gpt2().base.config)
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", Refusing)
    with pytest.raises(
        UserError,
        match=r"^model 'someone/old-model': its weights on the hub are a pickle \(no safetensors file\), which can run code .* --model.trust_pickle=true",
    ):
        SoftPromptModel.load("someone/old-model")
    assert asked["use_safetensors"] is True
    with pytest.raises(UserError):
        SoftPromptModel.load("someone/old-model", trust_pickle=True)
    assert asked["use_safetensors"] is None  # transformers' own choice: safetensors first, else the pickle


def test_the_command_refuses_a_pickled_model_in_one_line_and_takes_the_trust_flag(tmp_path, capsys):
    _, folder = pickled_model(tmp_path / "pickled")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    command = [
        "train",
        "--model.name",
        folder,
        "--data.train",
        str(tmp_path / "train.jsonl"),
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        "--prompt.length=4",
        "--prompt.vocab_first_n=40",
        "--train.batch_size=5",
        "--train.max_steps=1",
        "--train.output_dir",
        str(tmp_path / "run"),
    ]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        f"error: model folder {folder}: its weights are a pickle (pytorch_model.bin)"
    )
    assert not (tmp_path / "run").exists()
    assert main([*command, "--model.trust_pickle=true"]) == 0
    assert (tmp_path / "run" / "prompt.safetensors").is_file()


class Payload:
    """A pickle that, once unpickled, writes a marker file: proof that something ran it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_a_payload_is_never_run_as_a_prompt_file_npy_adapter_or_state_file(tmp_path, capsys):
    import pickle

    import numpy as np

    from softprompt.files.prompt_file import load_prompt
    from softprompt.files.state_file import load_state

    marker = tmp_path / "ran"
    payload = pickle.dumps(Payload(marker))
    for name in ("p.safetensors", "state.safetensors", "p.npy", "adapter/adapter_model.bin"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(payload if not name.endswith(".npy") else b"")
    np.save(tmp_path / "p.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    (tmp_path / "adapter" / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2, "token_dim": 32, "base_model_name_or_path": "x"}
        )
    )

    with pytest.raises(UserError):
        load_prompt(tmp_path / "p.safetensors")
    with pytest.raises(Exception):  # noqa: B017  safetensors' own error: a header it cannot read
        load_state(tmp_path / "state.safetensors")
    for source in ("p.npy", "adapter"):
        assert (
            main(["import", str(tmp_path / source), "--output", str(tmp_path / "out.safetensors"), "--model.name", "x"])
            == 1
        )
    assert main(["predict", str(tmp_path / "p.safetensors"), "text"]) == 1
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
