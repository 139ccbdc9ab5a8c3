"""Tiny random models of the three families, built from configs with in-memory tokenizers: no download.

Width 32 and no dropout, so that a few optimiser steps on the prompt alone measurably fit a small task."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
import yaml

if (
    not torch.cuda.is_available()
):  # DeepSpeed (for its tests) warns on stdout, when first imported, that it found no GPU
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # (saving a model imports it); said up front, it stays quiet

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from softprompt.files.prompt_file import save_prompt
from softprompt.models.model import SoftPromptModel

WORDS = (
    "the a movie film plot acting was is great terrible good bad awful wonderful boring fun loved hated "
    "it this i not very really story ending cast music question context answer what who where paris rome "
    "yes no positive negative true false one two three red blue green cat dog sun moon".split()
)


def word_tokenizer(specials: list[str], template: str | None, **roles) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=roles["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(s, vocab[s]) for s in specials if s in template]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **roles)


def t5_tokenizer():
    return word_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def gpt2_tokenizer():
    return word_tokenizer(
        ["<|endoftext|>", "<unk>"], None, eos_token="<|endoftext|>", unk_token="<unk>", bos_token="<|endoftext|>"
    )


def bert_tokenizer():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return word_tokenizer(
        specials,
        "[CLS] $A [SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny_t5(seed: int = 0) -> SoftPromptModel:
    torch.manual_seed(seed)
    tok = t5_tokenizer()
    config = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return SoftPromptModel(T5ForConditionalGeneration(config).eval(), tok, name="tiny-t5")


def tiny_gpt2(seed: int = 0) -> SoftPromptModel:
    torch.manual_seed(seed)
    tok = gpt2_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return SoftPromptModel(GPT2LMHeadModel(config).eval(), tok, name="tiny-gpt2")


def tiny_bert(seed: int = 0) -> SoftPromptModel:
    torch.manual_seed(seed)
    tok = bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.5,
    )
    return SoftPromptModel(BertModel(config, add_pooling_layer=False).eval(), tok, name="tiny-bert")


BUILDERS = {"encoder-decoder": tiny_t5, "decoder-only": tiny_gpt2, "encoder-only": tiny_bert}


class ModelLoaded(Exception):
    """Raised in place of loading a model, by tests of the checks that must come first: every check has passed."""


@pytest.fixture(scope="module")
def parser():
    """The command line's parser, built once per module (jsonargparse takes 0.1 s to build one)."""
    from softprompt import cli

    return cli.build_parser()


@pytest.fixture(params=list(BUILDERS))
def family(request) -> str:
    return request.param


@pytest.fixture
def tiny(family) -> SoftPromptModel:
    return BUILDERS[family]()


POSITIVE = "great good wonderful fun loved".split()
NEGATIVE = "terrible bad awful boring hated".split()


def sentiment_rows() -> list[dict]:
    """A small learnable task: one sentiment word per row, label 1 for positive."""
    return [{"text": w, "label": int(w in POSITIVE)} for w in POSITIVE + NEGATIVE]


@pytest.fixture
def model_folder(tmp_path, family):
    """A tiny model of `family` saved as a local folder, as a user would pass to --model.name."""
    return save_model(BUILDERS[family](), tmp_path / f"tiny-{family}")


def save_model(model: SoftPromptModel, folder) -> str:
    """Save a tiny model and its tokenizer as a local folder that SoftPromptModel.load reads."""
    model.base.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return str(folder)


def embedding_readings(model: SoftPromptModel) -> dict:
    """What reads a model's embedding matrix: the labels initialiser, the fingerprint and the default rate's scale."""
    from softprompt.methods.prompt import embedding_scale

    labels = model.initial_prompt("labels", 4, labels=["no", "yes"], first_n=40, seed=1)
    return {
        "labels": labels.flatten().tolist(),
        "fingerprint": str(model.fingerprint()),
        "scale": embedding_scale(model),
    }


def trained_prompt(run_folder, processes: int = 1) -> torch.Tensor:
    """The trained prompt in a run folder's newest checkpoint, written by `processes` processes."""
    from softprompt.training import checkpoint

    return checkpoint.load(checkpoint.latest(run_folder), 0, processes)[0].trained[0]


def greedy_reference(model: SoftPromptModel, prompt: torch.Tensor, texts: list[str], max_new_tokens: int) -> list[str]:
    """The truth for generation with a prompt placed first: greedy decoding of each text alone, recomputing
    [prompt; embedded text (; generated tokens)] from scratch at every step, with no cache and no padding."""
    base, embed, eos = model.base, model.input_embeddings(), model.tokenizer.eos_token_id
    outputs = []
    with torch.no_grad():
        for text in texts:
            ids = model.tokenizer(text, return_tensors="pt")["input_ids"][0]  # (T,)
            new: list[int] = []
            while len(new) < max_new_tokens and eos not in new:
                if model.family == "encoder-decoder":
                    encoder = torch.cat([prompt, embed(ids)])[None]  # (1, P + T, H)
                    decoder = torch.tensor([[base.config.decoder_start_token_id, *new]])
                    logits = base(inputs_embeds=encoder, decoder_input_ids=decoder).logits
                else:
                    logits = base(
                        inputs_embeds=torch.cat([prompt, embed(torch.cat([ids, torch.tensor(new, dtype=torch.long)]))])[
                            None
                        ]
                    ).logits
                new.append(int(logits[0, -1].argmax()))
            outputs.append(model.tokenizer.decode(new, skip_special_tokens=True).strip())
    return outputs


# ----- what the command's tests and the serving tests share -------------------------------------------------
def write_data(tmp_path):
    rows = sentiment_rows()
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tmp_path, model_folder, **data):
    config = {
        "model": {"name": model_folder},
        "prompt": {"length": 4, "init": "vocab", "vocab_first_n": 40},
        "data": {
            "task": "classification",
            "train": str(write_data(tmp_path)),
            "validation": str(tmp_path / "train.jsonl"),
            "verbalizers": {"0": "no", "1": "yes"},
            **data,
        },
        "train": {
            "max_steps": 4,
            "batch_size": 10,
            "micro_batch_size": 5,
            "eval_every": 2,
            "output_dir": str(tmp_path / "run"),
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


SENTIMENT = {"type": "classification", "template": "review {} it was", "verbalizers": {"0": "no", "1": "yes"}}
COLOUR = {"type": "classification", "template": "the {} is", "verbalizers": {"a": "red", "b": "blue", "c": "green"}}
ANSWER = {"type": "text2text", "template": "question {}", "max_target_length": 3}
QA = {"type": "text2text", "template": "question: {question} context: {context}", "max_target_length": 4}


def write_prompt(
    path: Path, model, task: dict, length: int = 3, seed: int = 0, base_model: str = "tiny", **extra
) -> Path:
    meta = {**model.identity(), "base_model": base_model, "task": task, **extra}
    return save_prompt(path, model.initial_prompt("random", length, seed=seed), meta)
