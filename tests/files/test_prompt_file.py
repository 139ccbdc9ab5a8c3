"""Prompt files: save -> load gives identical predictions; prompts for another model are refused."""

import json

import pytest
import torch
from conftest import BUILDERS
from safetensors.torch import save_file

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.atomic import atomic_path
from softprompt.files.prompt_file import (
    PromptFile,
    check_compatible,
    embedding_fingerprint,
    legacy_fingerprint,
    load_prompt,
    save_prompt,
)
from softprompt.inference.loading import load_with_prompts
from softprompt.models.model import SoftPromptModel

TEXTS = ["the movie was great", "bad", "i hated the ending"]
LABELS = ["no", "yes"]


def test_save_load_gives_identical_predictions(model_folder, tmp_path):
    model = SoftPromptModel.load(model_folder)
    model.bank = PromptBank(model.initial_prompt("random", 5, seed=3))
    before = model.class_scores(TEXTS, LABELS)
    path = save_prompt(
        tmp_path / "p.safetensors",
        model.bank.prompt(0),
        {**model.identity(), "task": {"type": "classification", "verbalizers": {"0": "no", "1": "yes"}}},
    )
    reloaded, files = load_with_prompts([str(path)])
    assert reloaded.name == model_folder and reloaded.family == model.family
    assert torch.equal(reloaded.class_scores(TEXTS, LABELS), before)
    meta = files[0].metadata
    assert meta["format_version"] == 1 and meta["length"] == 5 and meta["hidden_size"] == model.hidden
    assert meta["vocab_size"] == len(model.tokenizer) and meta["embedding_fingerprint"] == model.fingerprint()


def test_prompt_is_stored_as_float32_whatever_the_model_dtype(tmp_path):
    model = BUILDERS["decoder-only"]()
    model.base.to(torch.bfloat16)
    model.bank = PromptBank(model.initial_prompt("random", 3))
    assert model.bank.weight.dtype == torch.float32
    save_prompt(tmp_path / "p.safetensors", model.bank.prompt(0), model.identity())
    assert load_prompt(tmp_path / "p.safetensors").prompt.dtype == torch.float32


def test_width_mismatch_is_refused(tmp_path):
    model = BUILDERS["encoder-only"]()
    path = save_prompt(tmp_path / "narrow.safetensors", torch.zeros(4, 8), {"base_model": "other"})
    with pytest.raises(
        UserError, match=r"narrow\.safetensors: prompt width 8 does not match the model's hidden size 32"
    ):
        check_compatible(load_prompt(path), model.hidden, model.fingerprint(), str(path))


def test_other_embeddings_refused_unless_allowed(tmp_path):
    model, other = BUILDERS["encoder-only"](seed=0), BUILDERS["encoder-only"](seed=1)
    path = save_prompt(tmp_path / "p.safetensors", torch.zeros(4, 32), other.identity())
    prompt = load_prompt(path)
    with pytest.raises(
        UserError,
        match=r"input embeddings differ from this model's \(row norms differ by up to \d+\.\d%\); pass --allow_other_model",
    ):
        check_compatible(prompt, model.hidden, model.fingerprint(), str(path))
    check_compatible(prompt, model.hidden, model.fingerprint(), str(path), allow_other_model=True)


def trained_on(fingerprint: str) -> PromptFile:
    return PromptFile(torch.zeros(2, 32), {"base_model": "m", "embedding_fingerprint": fingerprint})


@pytest.mark.parametrize("family", list(BUILDERS))
def test_fp32_bf16_and_fp16_copies_share_one_fingerprint(family):
    fingerprints = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        model = BUILDERS[family]()
        model.base.to(dtype)
        fingerprints[dtype] = model.fingerprint()
    for expected in fingerprints.values():
        for actual in fingerprints.values():
            check_compatible(trained_on(expected), 32, actual, "p.safetensors")


def test_fingerprint_sees_noise_of_five_percent():
    weights = BUILDERS["encoder-only"]().input_embeddings().weight.detach()
    direction = torch.nn.functional.normalize(
        torch.randn(weights.shape, generator=torch.Generator().manual_seed(0)), dim=1
    )
    noisy = weights + 0.05 * weights.norm(dim=1, keepdim=True) * direction  # each row moved by 5% of its norm
    with pytest.raises(UserError, match=r"row norms differ by up to"):
        check_compatible(trained_on(embedding_fingerprint(weights)), 32, embedding_fingerprint(noisy), "p.safetensors")


def test_old_hash_fingerprints_are_still_checked():
    model, other = BUILDERS["encoder-only"](seed=0), BUILDERS["encoder-only"](seed=1)
    old = legacy_fingerprint(model.input_embeddings().weight)
    assert len(old) == 16
    check_compatible(trained_on(old), 32, model.fingerprint(), "p.safetensors")
    with pytest.raises(UserError, match=rf"differ from this model's \(fingerprint {old} != [0-9a-f]{{16}}\)"):
        check_compatible(trained_on(old), 32, other.fingerprint(), "p.safetensors")


def test_a_prompt_holding_nan_or_inf_is_refused(tmp_path):
    for value in (float("nan"), float("inf")):
        path = save_prompt(tmp_path / "p.safetensors", torch.tensor([[0.0, value]]), {})
        with pytest.raises(UserError, match=r"p\.safetensors: the prompt holds NaN or infinite values$"):
            load_prompt(path)


def test_not_a_prompt_file(tmp_path):
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UserError, match="not a softprompt prompt file"):
        load_prompt(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_prompt(junk)
    with pytest.raises(UserError, match="no such prompt file"):
        load_prompt(tmp_path / "missing.safetensors")


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_metadata_is_json_in_the_safetensors_header(tmp_path):
    path = save_prompt(tmp_path / "p.safetensors", torch.ones(2, 3), {"task": {"type": "squad"}})
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"]["format"] == "softprompt"
    assert json.loads(header["__metadata__"]["metadata"])["task"] == {"type": "squad"}


def test_a_loaded_prompt_is_a_copy_that_a_rewrite_of_the_file_in_place_leaves_alone(tmp_path):
    path = save_prompt(tmp_path / "p.safetensors", torch.ones(4, 8), {"base_model": "tiny"}, torch.ones(2, 8))
    loaded = load_prompt(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # the tensors are the file's last bytes: zero them where they lie
        f.seek(size - 4 * (4 * 8 + 2 * 8))
        f.write(bytes(4 * (4 * 8 + 2 * 8)))
    assert torch.equal(load_prompt(path).prompt, torch.zeros(4, 8))  # the file did change
    assert torch.equal(loaded.prompt, torch.ones(4, 8)) and torch.equal(loaded.offset, torch.ones(2, 8))


def test_the_same_prompt_and_metadata_make_the_same_bytes_in_every_process(tmp_path):
    """safetensors orders its metadata map per process; the header is rewritten with its keys sorted, so the bytes
    depend on the prompt and metadata alone (checked on the header itself, not left to the chance of two processes)."""
    prompt = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    path = save_prompt(tmp_path / "p.safetensors", prompt, {"base_model": "m", "zeta": 1, "alpha": {"b": 2, "a": 1}})
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + n].rstrip(b" ")
    assert n % 8 == 0 and header == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":")).encode()
    assert list(json.loads(header)["__metadata__"]) == ["format", "metadata"]
    file = load_prompt(path)
    assert torch.equal(file.prompt, prompt) and file.metadata["alpha"] == {"b": 2, "a": 1}
    assert save_prompt(tmp_path / "q.safetensors", prompt, file.metadata).read_bytes() == data
