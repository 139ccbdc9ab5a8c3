"""Templates and truncation: long inputs lose the end of their longest field, never special tokens, the template's
own words or the question."""

import pytest
import torch
from conftest import WORDS, sentiment_rows, tiny_bert, tiny_t5, word_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, RobertaConfig, RobertaModel

from softprompt.core.bank import PromptBank
from softprompt.core.template import Template
from softprompt.errors import UserError
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions
from softprompt.tasks import make_task

LONG = " ".join(WORDS[10:50])  # 40 words, one token each


def tiny_llama() -> SoftPromptModel:
    """A Llama whose tokenizer starts every text with <s>, in 32 positions."""
    torch.manual_seed(0)
    tok = word_tokenizer(["<unk>", "<s>", "</s>"], "<s> $A", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        bos_token_id=1,
        eos_token_id=2,
    )
    return SoftPromptModel(LlamaForCausalLM(config).eval(), tok, name="tiny-llama")


def tiny_roberta() -> SoftPromptModel:
    """RoBERTa counts positions from padding_idx + 1: 34 position embeddings hold 32 tokens."""
    torch.manual_seed(0)
    tok = word_tokenizer(
        ["<s>", "<pad>", "</s>", "<unk>"],
        "<s> $A </s>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    config = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=34,
        pad_token_id=1,
    )
    return SoftPromptModel(RobertaModel(config, add_pooling_layer=False).eval(), tok, name="tiny-roberta")


def words(text: str) -> int:
    return len(text.split())


def test_fit_cuts_the_longest_field_at_a_word_boundary():
    template = Template("question: {question} context: {context}")
    values = {"question": "what is red", "context": LONG}
    assert template.fit(values, words, budget=100) == template.render(values)
    fitted = template.fit(values, words, budget=12)
    assert fitted == "question: what is red context: " + " ".join(LONG.split()[:7])
    # the question is cut only once the context is gone
    assert template.fit(values, words, budget=4) == "question: what is context: "


def test_fit_refuses_a_template_longer_than_the_budget():
    with pytest.raises(UserError, match="alone takes 4 tokens, more than the 3"):
        Template("one two three {} four").fit({"": "five six"}, words, budget=3)


def test_a_template_without_an_input_field_is_an_error():
    with pytest.raises(UserError, match=r"data.template: 'Review:' uses no input field"):
        make_task(DataOptions(verbalizers={"0": "bad", "1": "good"}, template="Review:"))


def test_named_fields_come_from_columns():
    task = make_task(DataOptions(task="text2text", template="question: {q} context: {c}", target_column="a"))
    (example,) = task.examples([{"q": "who", "c": "the cat", "a": "cat"}], "rows.jsonl", [1])
    assert example.fields == {"q": "who", "c": "the cat"} and example.input == "question: who context: the cat"
    with pytest.raises(UserError, match=r"rows.jsonl:1: column 'c' is empty \(null\)"):
        task.examples([{"q": "who", "c": None, "a": "cat"}], "rows.jsonl", [1])
    with pytest.raises(UserError, match="missing column 'c'"):
        task.examples([{"q": "who", "a": "cat"}], "rows.jsonl", [1])


def test_decoder_only_truncation_keeps_bos_and_puts_the_prompt_after_it():
    model = tiny_llama()
    model.bank = PromptBank(model.initial_prompt("random", 4))
    bos = model.tokenizer.bos_token_id
    batch = model.tokenize([LONG], ["yes"], max_input_length=100, max_target_length=4)
    ids = batch["input_ids"][0].tolist()
    # 32 positions: 4 for the prompt, 5 held for a target of up to 4 tokens and EOS, 23 for the input with its <s>
    assert ids[0] == bos and len(ids) == 23 + 2  # the target here is "yes </s>"
    kept = model.tokenizer.decode(ids[1:-2])
    assert LONG.startswith(kept) and len(kept.split()) == 22
    j = model.joined(batch["input_ids"], batch["attention_mask"], torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(j.inputs_embeds[0, 0], model.input_embeddings().weight[bos])
    torch.testing.assert_close(j.inputs_embeds[0, 1:5], model.bank.prompt(0))


def test_truncated_input_scores_as_its_cut_text_typed(family):
    builders = {"decoder-only": tiny_llama, "encoder-decoder": tiny_t5, "encoder-only": tiny_bert}
    model = builders[family]()
    model.bank = PromptBank(model.initial_prompt("random", 3))
    template = Template("the movie {} it was")
    fitted = model.fit_inputs([{"": LONG}], template, budget=12)[0]
    assert fitted.startswith("the movie ") and fitted.endswith(" it was") and model.count_input_tokens(fitted) == 12
    long_scores = model.class_scores([{"": LONG}], ["yes", "no"], template=template, max_input_length=12)
    torch.testing.assert_close(long_scores, model.class_scores([fitted], ["yes", "no"], max_input_length=12))


@pytest.mark.parametrize("build", [tiny_t5, tiny_llama])
def test_squad_keeps_the_question_and_cuts_the_context(build):
    task = make_task(DataOptions(task="squad", max_input_length=16))
    (example,) = task.examples([{"question": "what is red", "context": LONG, "answers": ["sun"]}], "squad.json", None)
    model = build()
    batch = task.batch(model, [example])
    n_input = int((batch["labels"][0] == -100).sum()) if model.family == "decoder-only" else batch["input_ids"].shape[1]
    assert n_input == 16
    text = model.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert text.startswith("question what is red context " + " ".join(LONG.split()[:3]))  # ':' is <unk> here


def test_roberta_style_positions_leave_room_for_the_prompt():
    model = tiny_roberta()
    assert model.max_positions == 32
    model.bank = PromptBank(model.initial_prompt("random", 4))
    assert model.input_budget(512, 8) == 28
    scores = model.class_scores([LONG, "great"], ["great", "awful"])  # 40 words would overflow the positions
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()


def test_a_prompt_that_leaves_no_room_is_refused():
    model = tiny_roberta()
    with pytest.raises(
        UserError, match="^--prompt.length 32 leaves no room for the input: tiny-roberta has 32 positions$"
    ):
        model.initial_prompt("random", 32)  # refused before it is built
    model.bank = PromptBank(torch.zeros(32, model.hidden))  # a prompt made elsewhere: refused before the model runs
    with pytest.raises(UserError, match="prompt.length 32 leave no room for the input: tiny-roberta has 32 positions"):
        model.class_scores(["great"], ["great", "awful"])


def test_sentiment_rows_fill_the_default_field():
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}, template="review: {} verdict"))
    example = task.examples(sentiment_rows(), "rows", None)[0]
    assert example.fields == {"": "great"} and example.input == "review: great verdict"
