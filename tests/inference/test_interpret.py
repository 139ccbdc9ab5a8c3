"""Nearest vocabulary tokens of prompt vectors and the label words among them (interpret.py, `softprompt neighbors`)."""

import json

import pytest
import torch
from conftest import BUILDERS, save_model

from softprompt.cli import main
from softprompt.files.prompt_file import save_prompt
from softprompt.inference.interpret import label_hits, nearest_tokens, report, table
from softprompt.models.model import SoftPromptModel

TEXT = "the movie was great fun"


def test_a_text_initialised_prompt_has_that_text_as_nearest_tokens(tiny):
    ids = tiny.token_ids(TEXT)
    prompt = tiny.initial_prompt("text", 7, text=TEXT)  # the text's 5 tokens, then its first 2 again
    nearest = nearest_tokens(tiny, prompt, k=3)
    expected = [ids[i % len(ids)] for i in range(7)]
    assert nearest.ids.shape == (7, 3) and nearest.ids[:, 0].tolist() == expected
    assert [row[0] for row in nearest.tokens] == tiny.tokenizer.convert_ids_to_tokens(expected)
    assert torch.allclose(nearest.similarities[:, 0], torch.ones(7), atol=1e-5)
    assert (nearest.similarities[:, :-1] >= nearest.similarities[:, 1:]).all()  # nearest first


def label_prompt(model: SoftPromptModel, words: list[str]) -> torch.Tensor:
    """(P, H): the embedding of each word in turn."""
    weights = model.input_embeddings().weight
    return weights[torch.tensor([model.token_ids(w)[0] for w in words])].detach().float()


@pytest.mark.parametrize("family", ["decoder-only"])
def test_label_words_are_counted_per_position_and_overall(tiny):
    prompt = label_prompt(tiny, ["great", "cat", "terrible", "dog", "great"])
    hits = label_hits(tiny, nearest_tokens(tiny, prompt, k=1), ["terrible", "great"])
    assert hits.per_position == [["great"], [], ["terrible"], [], ["great"]]
    assert hits.positions == {"terrible": 1, "great": 2}
    assert (hits.total, hits.positions_with_any) == (3, 3)

    everything = label_hits(tiny, nearest_tokens(tiny, prompt, k=len(tiny.tokenizer)), ["terrible", "great"])
    assert everything.positions == {"terrible": 5, "great": 5} and everything.total == 10


def test_label_words_count_the_class_label_initialiser(tiny):
    prompt = tiny.initial_prompt("labels", 6, labels=["terrible", "great"], first_n=len(tiny.tokenizer))
    hits = label_hits(tiny, nearest_tokens(tiny, prompt, k=1), ["terrible", "great"])
    assert hits.per_position[:2] == [["terrible"], ["great"]]  # one row per label, the rest sampled vocabulary


def test_k_is_checked(tiny):
    prompt = tiny.initial_prompt("text", 2, text=TEXT)
    with pytest.raises(Exception, match="-k must be between 1 and the vocabulary size"):
        nearest_tokens(tiny, prompt, k=len(tiny.tokenizer) + 1)


def labelled_prompt_file(tmp_path, family) -> tuple:
    folder = save_model(BUILDERS[family](), tmp_path / "model")
    model = SoftPromptModel.load(folder)
    path = tmp_path / "prompt.safetensors"
    task = {"type": "classification", "verbalizers": {"0": "terrible", "1": "great"}}
    save_prompt(path, label_prompt(model, ["great", "cat", "terrible", "dog"]), {**model.identity(), "task": task})
    return str(path), folder


@pytest.mark.parametrize("family", ["encoder-only"])
def test_neighbors_prints_a_table_and_json(tmp_path, family, capsys):
    path, folder = labelled_prompt_file(tmp_path, family)
    assert main(["neighbors", path, "-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 1 + 4 + 1  # title, header, 4 positions, summary
    assert lines[2].split()[:3] == ["0", "great", "1.00"] and lines[2].endswith("great")
    assert (
        lines[-1]
        == "label words among the 2 nearest tokens: terrible at 1 of 4, great at 1 of 4 positions; 2 of 4 positions have one"
    )

    assert main(["neighbors", path, "--k=2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["k"] == 2 and report["model"] == folder and len(report["positions"]) == 4
    first = report["positions"][0]
    assert (
        first["tokens"][0] == "great"
        and first["similarities"][0] == pytest.approx(1.0)
        and first["label_words"] == ["great"]
    )
    assert report["label_words"] == {"positions": {"terrible": 1, "great": 1}, "positions_with_any": 2, "total": 2}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder-decoder"])
def test_neighbors_takes_another_model_and_checks_k(tmp_path, family, capsys):
    path, folder = labelled_prompt_file(tmp_path, family)
    assert main(["neighbors", path, "--json", "--model.name", folder]) == 0
    assert json.loads(capsys.readouterr().out)["k"] == 5
    assert main(["neighbors", path, "-k", "0"]) == 1
    assert capsys.readouterr().err == "error: -k must be at least 1 (got 0)\n"


def test_the_embedded_minilm_finds_the_text_of_a_text_initialised_prompt():
    model = SoftPromptModel.load("sentence-transformers/all-MiniLM-L6-v2")
    text = "a gorgeous, moving film about friendship"
    ids = model.token_ids(text)
    nearest = nearest_tokens(model, model.initial_prompt("text", len(ids), text=text), k=5)
    assert nearest.ids[:, 0].tolist() == ids
    assert [row[0] for row in nearest.tokens] == ["a", "gorgeous", ",", "moving", "film", "about", "friendship"]


def byte_level_gpt2() -> SoftPromptModel:
    """A tiny GPT-2 with a byte-level BPE vocabulary, whose tokens spell a leading space as "Ġ" (as SmolLM2's do)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["the movie was great fun", "a great film", "terrible, not great"] * 10,
        vocab_size=300,
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64)
    return SoftPromptModel(GPT2LMHeadModel(config).eval(), tok, name="tiny-byte-level-gpt2")


def test_byte_level_tokens_are_shown_as_the_text_they_decode_to():
    model = byte_level_gpt2()
    ids = model.token_ids(" great fun")
    assert model.tokenizer.convert_ids_to_tokens(ids) == ["Ġgreat", "Ġfun"]  # one token per word, as spelled
    nearest = nearest_tokens(model, model.initial_prompt("text", 2, text=" great fun"), k=2)
    assert [row[0] for row in nearest.tokens] == ["Ġgreat", "Ġfun"]
    assert [row[0] for row in nearest.texts] == [" great", " fun"]
    lines = table(nearest, None).splitlines()
    assert lines[1].split(maxsplit=1)[1].startswith("' great' 1.00") and "Ġ" not in "".join(lines)
    positions = report(nearest, None)["positions"]
    assert positions[1]["tokens"][0] == "Ġfun" and positions[1]["texts"][0] == " fun"

    half = model.tokenizer.convert_tokens_to_ids("Ã")  # the byte 0xC3 alone: the first half of a UTF-8 character
    assert model.tokenizer.decode([half]) == "\ufffd"
    nearest = nearest_tokens(model, model.input_embeddings().weight[[half]], k=1)
    assert nearest.texts == [["Ã"]]  # its spelling, not the replacement character many tokens share
