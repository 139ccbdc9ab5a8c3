"""Prompt key/value reuse (prefix_cache.py): decoder-only predictions with each prompt's keys and values computed once
equal recomputing them, for scoring, generation, mixed tasks with prompts of different lengths, left-padded rows and
ensembles; a changed prompt or changed weights are computed afresh; the other families never use it."""

import warnings

import pytest
import torch
from conftest import tiny_bert, tiny_gpt2, tiny_t5, word_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from softprompt.core.bank import PromptBank
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions
from softprompt.tasks import make_task


def tiny_llama(seed: int = 0) -> SoftPromptModel:
    """A Llama whose tokenizer starts every text with <s>: the prompt follows it; rotary positions."""
    torch.manual_seed(seed)
    tok = word_tokenizer(["<unk>", "<s>", "</s>"], "<s> $A", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=0.2,
    )
    return SoftPromptModel(LlamaForCausalLM(config).eval(), tok, name="tiny-llama")


DECODERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}
TEXTS = [
    "great movie",
    "the plot was very boring and really bad",
    "cat",
    "i loved it",
    "not good",
]  # left-padded together
LABELS = [["yes", "no"], ["good bad", "terrible"], ["red", "blue", "green"], ["yes", "no"], ["yes", "no"]]
IDS = [0, 1, 2, 0, 3]


@pytest.fixture(params=list(DECODERS))
def decoder(request) -> SoftPromptModel:
    model = DECODERS[request.param]()
    g = torch.Generator().manual_seed(1)
    prompts = [
        torch.randn(5, model.hidden, generator=g),
        torch.randn(2, model.hidden, generator=g),
        torch.zeros(0, model.hidden),
        torch.randn(7, model.hidden, generator=g),
    ]
    model.bank = PromptBank(prompts, ["five", "two", "none", "seven"])
    return model


def both(model: SoftPromptModel, fn):
    """fn() with reuse on (checking that the cache was used), then with it off."""
    model.kv_reuse = True
    misses, hits = model.prefix_cache.misses, model.prefix_cache.hits
    reused = fn()
    assert model.prefix_cache.misses + model.prefix_cache.hits > misses + hits, "the cache was not used"
    model.kv_reuse = False
    recomputed = fn()
    model.kv_reuse = True
    return reused, recomputed


def assert_scores_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
        assert int(x.argmax()) == int(y.argmax())


def test_mixed_task_scores_equal_recomputation(decoder):
    reused, recomputed = both(decoder, lambda: decoder.score_labels(TEXTS, LABELS, IDS))
    assert_scores_equal(reused, recomputed)
    assert decoder.prefix_cache.misses == 4 and len(decoder.prefix_cache) == 4  # each distinct prompt once


def test_each_row_equals_its_prompt_run_alone(decoder):
    mixed = decoder.score_labels(TEXTS, LABELS, IDS)
    for text, labels, i in zip(TEXTS, LABELS, IDS):
        alone = decoder.score_labels([text], [labels], [i])[0]
        torch.testing.assert_close(mixed.pop(0), alone, rtol=1e-5, atol=1e-5)


def test_a_second_batch_reuses_the_prefixes(decoder):
    decoder.score_labels(TEXTS, LABELS, IDS)
    misses, hits = decoder.prefix_cache.misses, decoder.prefix_cache.hits
    reused, recomputed = both(decoder, lambda: decoder.score_labels(TEXTS[::-1], LABELS[::-1], IDS[::-1]))
    assert decoder.prefix_cache.misses == misses and decoder.prefix_cache.hits == hits + 4
    assert_scores_equal(reused, recomputed)


def test_generation_equals_recomputation(decoder):
    def run():
        out = decoder.generate(TEXTS, IDS, max_new_tokens=6)
        logits = decoder.score_labels(TEXTS, [[t] for t in out], IDS)  # the answers' likelihoods too
        return out, logits

    (text_a, scores_a), (text_b, scores_b) = both(decoder, run)
    assert text_a == text_b and any(text_a)
    assert_scores_equal(scores_a, scores_b)


def test_generation_and_scoring_with_reused_prefixes_warn_of_nothing(decoder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoder.generate(TEXTS, IDS, max_new_tokens=2)
        decoder.score_labels(TEXTS, [["yes", "no"]] * len(TEXTS), IDS)
    assert decoder.prefix_cache.hits + decoder.prefix_cache.misses > 0  # the reusing path ran
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []


def test_ensembles_equal_recomputation_and_copies_of_one_prompt_equal_it(decoder):
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}, template="review {} it was"))
    inputs = [{"": t} for t in TEXTS]
    (members_a, votes_a), (members_b, votes_b) = both(decoder, lambda: task.predict_members(decoder, inputs, [0, 1, 3]))
    assert members_a == members_b and votes_a == votes_b

    def scores(ids):
        return decoder.class_scores(
            [x for x in inputs for _ in ids], task.label_texts, ids * len(inputs), template=task.template
        )

    copies, single = scores([3, 3, 3]).view(len(inputs), 3, -1), scores([3]).view(len(inputs), 1, -1)
    torch.testing.assert_close(copies, single.expand_as(copies), rtol=1e-5, atol=1e-5)


def test_a_changed_prompt_is_computed_afresh(decoder):
    before = decoder.score_labels(TEXTS, LABELS, IDS)
    with torch.no_grad():
        decoder.bank.weight[0, :5] += torch.randn(5, decoder.hidden)  # in place: same tensor, new values
    reused, recomputed = both(decoder, lambda: decoder.score_labels(TEXTS, LABELS, IDS))
    assert_scores_equal(reused, recomputed)
    assert not torch.allclose(reused[0], before[0])  # rows of prompt 0 moved
    torch.testing.assert_close(reused[1], before[1], rtol=1e-5, atol=1e-5)  # others did not

    decoder.bank = PromptBank([decoder.bank.prompt(1), torch.randn(3, decoder.hidden)], ["two", "new"])  # a new bank
    reused, recomputed = both(decoder, lambda: decoder.score_labels(TEXTS[:2], LABELS[:2], [1, 0]))
    assert_scores_equal(reused, recomputed)


def test_changed_weights_drop_the_cache(decoder):
    decoder.score_labels(TEXTS, LABELS, IDS)
    with torch.no_grad():
        for p in decoder.base.parameters():
            p.add_(0.1 * torch.randn_like(p))  # as a method that tunes the model would
    reused, recomputed = both(decoder, lambda: decoder.score_labels(TEXTS, LABELS, IDS))
    assert_scores_equal(reused, recomputed)


def test_empty_inputs_fall_back_to_recomputation(decoder):
    texts, labels, ids = ["", "great"], [["yes", "no"], ["yes", "no"]], [0, 1]
    decoder.kv_reuse = False
    recomputed = decoder.score_labels(texts, labels, ids), decoder.generate(texts, ids, max_new_tokens=3)
    decoder.kv_reuse = True
    reused = decoder.score_labels(texts, labels, ids), decoder.generate(texts, ids, max_new_tokens=3)
    assert_scores_equal(reused[0], recomputed[0])
    assert reused[1] == recomputed[1]


def test_training_never_uses_it(decoder):
    batch = decoder.tokenize(TEXTS[:2], ["yes", "no"])
    decoder.train()
    decoder(**batch, prompt_ids=torch.tensor([0, 1])).loss.backward()
    with torch.no_grad():
        decoder.target_logprob(batch, torch.tensor([0, 1]))  # training mode: no reuse
    decoder.eval()
    decoder.target_logprob(batch, torch.tensor([0, 1]))  # gradients on: no reuse
    assert len(decoder.prefix_cache) == 0 and decoder.bank.weight.grad is not None


@pytest.mark.parametrize("build", [tiny_t5, tiny_bert], ids=["encoder-decoder", "encoder-only"])
def test_other_families_are_unaffected(build):
    model = build()
    model.bank = PromptBank([torch.randn(4, model.hidden), torch.randn(2, model.hidden)])
    reused = model.score_labels(TEXTS[:3], LABELS[:3], [0, 1, 0])
    model.kv_reuse = False
    assert_scores_equal(reused, model.score_labels(TEXTS[:3], LABELS[:3], [0, 1, 0]))
    assert len(model.prefix_cache) == 0 and model.prefix_cache.misses == 0


def test_served_tasks_equal_recomputation_across_a_changed_prompt_file(tmp_path):
    from conftest import ANSWER, COLOUR, SENTIMENT, write_prompt

    from softprompt.serve.engine import Engine

    model = tiny_llama()
    folder = tmp_path / "prompts"
    write_prompt(folder / "sentiment.safetensors", model, SENTIMENT, 4, seed=1)
    write_prompt(folder / "colour.safetensors", model, COLOUR, 2, seed=2)
    write_prompt(folder / "answer.safetensors", model, ANSWER, 6, seed=3)
    engine = Engine(model, folder)
    items = [("sentiment", "great fun"), ("answer", "who is it"), ("colour", "the sun and the moon"), ("answer", "cat")]

    def scores():  # what the engine's one scoring pass gives, under the current snapshot
        snapshot = engine.snapshot()
        model.bank = snapshot.bank
        rows = [(f"review {t} it was", ["no", "yes"], "sentiment") for t in ("great fun", "bad")] + [
            ("the cat is", ["red", "blue", "green"], "colour")
        ]
        return model.score_labels(
            [r[0] for r in rows], [r[1] for r in rows], [snapshot.tasks[r[2]].prompt_id for r in rows]
        )

    predicted, recomputed = both(model, lambda: (engine.predict(items), scores()))
    assert predicted[0] == recomputed[0]
    assert_scores_equal(predicted[1], recomputed[1])

    write_prompt(folder / "sentiment.safetensors", model, SENTIMENT, 4, seed=7)  # same length, other values
    assert engine.rescan().changed == ["sentiment"]
    changed, recomputed = both(model, lambda: (engine.predict(items), scores()))
    assert changed[0] == recomputed[0]
    assert_scores_equal(changed[1], recomputed[1])
    assert not torch.allclose(changed[1][0], predicted[1][0])  # the new sentiment prompt is used
    torch.testing.assert_close(changed[1][2], predicted[1][2], rtol=1e-5, atol=1e-5)  # colour kept


def test_no_prompt_at_all(decoder):
    """An empty bank: the prefix is BOS alone (Llama) or nothing (GPT-2)."""
    decoder.bank = PromptBank.empty(decoder.hidden)
    ids = [0] * 3
    (scores_a, text_a), (scores_b, text_b) = both(
        decoder,
        lambda: (decoder.score_labels(TEXTS[:3], LABELS[:3], ids), decoder.generate(TEXTS[:3], ids, max_new_tokens=4)),
    )
    assert_scores_equal(scores_a, scores_b)
    assert text_a == text_b


def test_the_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("SOFTPROMPT_KV_REUSE", "0")
    model = tiny_llama()
    model.bank = PromptBank(torch.randn(3, model.hidden))
    model.score_labels(TEXTS[:2], LABELS[:2], [0, 0])
    assert not model.kv_reuse and len(model.prefix_cache) == 0


def test_a_prompt_placed_in_the_text_or_with_an_input_offset_is_recomputed(decoder):
    """A `{prompt}` slot inside the text or a DePT input offset changes what precedes or follows the prompt row by
    row: the cache steps aside, and the scores are those of recomputing."""
    from softprompt.core.placement import MARK

    slotted = [f"great {MARK}movie", "i loved it"]
    calls = decoder.prefix_cache.misses + decoder.prefix_cache.hits
    decoder.kv_reuse = True
    with_slot = decoder.score_labels(slotted, [["yes", "no"]] * 2, [0, 1])
    assert decoder.prefix_cache.misses + decoder.prefix_cache.hits == calls  # not used
    decoder.kv_reuse = False
    assert_scores_equal(with_slot, decoder.score_labels(slotted, [["yes", "no"]] * 2, [0, 1]))

    decoder.kv_reuse = True
    prompts = [decoder.bank.prompt(i) for i in range(2)]
    decoder.bank = PromptBank(prompts, ["five", "two"], offsets=[torch.randn(3, decoder.hidden), None])
    offset = decoder.score_labels(TEXTS[:2], LABELS[:2], [0, 1])
    assert decoder.prefix_cache.misses + decoder.prefix_cache.hits == calls
    decoder.bank = PromptBank(prompts, ["five", "two"])
    plain = decoder.score_labels(TEXTS[:2], LABELS[:2], [0, 1])
    assert not torch.allclose(offset[0], plain[0])  # the offset took effect


def test_a_prefix_computed_under_autocast_is_not_reused_without_it(decoder):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoder.score_labels(TEXTS, LABELS, IDS)
    misses = decoder.prefix_cache.misses
    reused, recomputed = both(decoder, lambda: decoder.score_labels(TEXTS, LABELS, IDS))
    assert decoder.prefix_cache.misses == misses + 4  # each prompt computed afresh in float32
    assert_scores_equal(reused, recomputed)


def test_the_cache_holds_at_most_its_bytes_and_recomputes_what_it_dropped(decoder):
    """Past max_bytes the least recently used prefixes go; a task whose prefix went is computed again, the same."""
    cache = decoder.prefix_cache
    unbounded = [decoder.score_labels([TEXTS[0]], [LABELS[0]], [i]) for i in (0, 1, 3)]  # "five", "two", "seven"
    assert len(cache) == 3 and 0 < cache.bytes <= cache.max_bytes
    five, seven = cache.prefix(decoder, 0), cache.prefix(decoder, 3)
    cache.clear()
    cache.max_bytes = sum(t.nbytes for t in (*five, *seven))  # "seven" and "two" fit, with "five" they do not
    bounded = [decoder.score_labels([TEXTS[0]], [LABELS[0]], [i]) for i in (0, 1, 3)]
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes  # "five", least recently used, went
    for a, b in zip(bounded, unbounded):
        assert_scores_equal(a, b)
    misses = cache.misses
    assert_scores_equal(decoder.score_labels([TEXTS[0]], [LABELS[0]], [3]), unbounded[2])  # "seven" kept
    assert cache.misses == misses
    assert_scores_equal(decoder.score_labels([TEXTS[0]], [LABELS[0]], [0]), unbounded[0])  # "five" computed again
    assert cache.misses == misses + 1
