"""The frozen model with prompts, in all three families (tiny random models from conftest.py)."""

import pytest
import torch
from conftest import tiny_bert, tiny_gpt2, tiny_t5

from softprompt.core.bank import PromptBank
from softprompt.core.families import DECODER_ONLY, ENCODER_DECODER, ENCODER_ONLY
from softprompt.errors import UserError


def outputs(model, inputs, targets=None):
    """The family's comparable output for a batch: decoder logits, LM logits at real positions, or token states."""
    batch = model.tokenize(inputs, targets)
    ids = torch.zeros(len(inputs), dtype=torch.long)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], ids, labels=batch.get("labels"))
    if model.family == ENCODER_DECODER:
        return out.logits
    if model.family == DECODER_ONLY:
        return out.logits[:, -1]  # next-token logits after the last (real) token
    return out.sentence_embeds


def test_family_detected(tiny, family):
    assert tiny.family == family
    assert all(not p.requires_grad for p in tiny.base.parameters())


def test_prompt_from_text_equals_the_text_typed_as_tokens(tiny):
    text, rest = "the movie was", "really great"
    prompt = tiny.initial_prompt("text", length=3, text=text)
    targets = ["yes"] if tiny.family == ENCODER_DECODER else None
    typed = outputs(tiny, [f"{text} {rest}"], targets)
    tiny.bank = PromptBank(prompt)
    prompted = outputs(tiny, [rest], targets)
    torch.testing.assert_close(prompted, typed, rtol=1e-5, atol=1e-5)


def test_text_init_cycles_and_cuts():
    model = tiny_bert()
    ids = model.token_ids("red blue")
    prompt = model.initial_prompt("text", length=5, text="red blue")
    emb = model.input_embeddings().weight
    expected = emb[torch.tensor([ids[0], ids[1], ids[0], ids[1], ids[0]])]
    assert torch.equal(prompt, expected)


def test_left_padded_decoder_only_batch_equals_rows_run_alone():
    tiny = tiny_gpt2()
    tiny.bank = PromptBank(tiny.initial_prompt("vocab", length=4, first_n=40))
    texts = ["the movie was really great", "bad"]
    batched = outputs(tiny, texts)
    assert tiny.tokenize(texts)["attention_mask"][1, 0] == 0  # the short row is left padded
    for i, text in enumerate(texts):
        torch.testing.assert_close(batched[i], outputs(tiny, [text])[0], rtol=1e-5, atol=1e-5)


def test_padded_batch_equals_rows_run_alone_all_families(tiny):
    tiny.bank = PromptBank(tiny.initial_prompt("random", length=3))
    texts = ["the movie was really great fun", "bad"]
    targets = ["yes", "no"] if tiny.family == ENCODER_DECODER else None
    batched = outputs(tiny, texts, targets)
    for i, text in enumerate(texts):
        alone = outputs(tiny, [text], None if targets is None else [targets[i]])
        torch.testing.assert_close(
            batched[i][: alone.shape[1]] if tiny.family == ENCODER_DECODER else batched[i],
            alone[0],
            rtol=1e-5,
            atol=1e-5,
        )


def test_initialisers_shapes_and_ranges(tiny):
    emb = tiny.input_embeddings().weight
    r = tiny.initial_prompt("random", length=7, seed=1)
    assert r.shape == (7, tiny.hidden) and r.min() >= -0.5 and r.max() <= 0.5 and r.dtype == torch.float32
    v = tiny.initial_prompt("vocab", length=5, first_n=20)
    special = set(tiny.tokenizer.all_special_ids)
    rows = [int(torch.where((emb == row).all(1))[0][0]) for row in v]
    assert len(set(rows)) == 5 and all(i < 20 and i not in special for i in rows)
    labels = tiny.initial_prompt("labels", length=4, labels=["great", "very bad"], first_n=30)
    ids = tiny.token_ids("very bad")
    torch.testing.assert_close(labels[1], emb[ids].mean(0))
    torch.testing.assert_close(labels[0], emb[tiny.token_ids("great")[0]])
    shorter = tiny.initial_prompt(
        "labels", length=1, labels=["great", "very bad"], first_n=30
    )  # the first label that fits
    assert shorter.shape == (1, tiny.hidden)
    torch.testing.assert_close(shorter[0], labels[0])
    with pytest.raises(UserError, match="unknown initialiser"):
        tiny.initial_prompt("zeros", length=2)


def test_class_scores_shape_and_generate(tiny, family):
    tiny.bank = PromptBank(tiny.initial_prompt("vocab", length=2, first_n=40))
    scores = tiny.class_scores(["the movie was great", "bad"], ["yes", "no", "one two"])
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()
    if family == ENCODER_ONLY:
        with pytest.raises(UserError, match="does not generate"):
            tiny.generate(["hi"])
    else:
        out = tiny.generate(["the movie was great", "bad"], max_new_tokens=3)
        assert len(out) == 2 and all(isinstance(o, str) for o in out)


@pytest.mark.parametrize("build", [tiny_t5, tiny_gpt2])
def test_rank_classification_scores_equal_target_loglikelihood(build):
    tiny = build()
    tiny.bank = PromptBank(tiny.initial_prompt("random", length=2))
    scores = tiny.class_scores(["the movie was great"], ["yes", "no"])
    batch = tiny.tokenize(["the movie was great"], ["no"], max_target_length=4)
    with torch.no_grad():
        out = tiny(
            batch["input_ids"], batch["attention_mask"], torch.zeros(1, dtype=torch.long), labels=batch["labels"]
        )
    n_target = int((batch["labels"] != -100).sum())
    torch.testing.assert_close(scores[0, 1], -out.loss * n_target, rtol=1e-4, atol=1e-4)


def test_mixed_prompt_batch_equals_each_prompt_alone(tiny):
    prompts = torch.stack([tiny.initial_prompt("random", 3, seed=s) for s in (1, 2)])
    tiny.bank = PromptBank(prompts, ["a", "b"])
    texts = ["the movie was great", "bad", "i hated it", "fun"]
    labels = ["no", "yes"]
    mixed = tiny.class_scores(texts, labels, prompt_ids=[0, 1, 1, 0])
    for i, text in enumerate(texts):
        alone = tiny.class_scores([text], labels, prompt_ids=[[0, 1, 1, 0][i]])
        torch.testing.assert_close(mixed[i], alone[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[0], tiny.class_scores([texts[0]], labels, prompt_ids=[1])[0])


def test_prompts_of_different_lengths_in_one_batch_equal_each_alone(tiny, family):
    prompts = {"long": tiny.initial_prompt("random", 5, seed=1), "short": tiny.initial_prompt("random", 2, seed=2)}
    texts, labels, names = (
        ["the movie was great", "bad", "i hated it", "fun"],
        ["no", "yes"],
        ["long", "short", "short", "long"],
    )
    tiny.bank = PromptBank(list(prompts.values()), list(prompts))
    ids = [tiny.bank.index(n) for n in names]
    mixed = tiny.class_scores(texts, labels, prompt_ids=ids)
    generated = None if family == ENCODER_ONLY else tiny.generate(texts, prompt_ids=ids, max_new_tokens=3)
    for i, (text, name) in enumerate(zip(texts, names)):
        tiny.bank = PromptBank(prompts[name])
        torch.testing.assert_close(mixed[i], tiny.class_scores([text], labels)[0], rtol=1e-5, atol=1e-5)
        if generated is not None:
            assert generated[i] == tiny.generate([text], max_new_tokens=3)[0]


@pytest.mark.parametrize("build", [tiny_gpt2, "llama"])
def test_decoder_losses_from_the_target_window_equal_those_from_every_position(build):
    """The LM head runs only where a target is predicted; losses and prompt gradients are those of the full head."""
    if build == "llama":
        from test_kv_reuse import tiny_llama as build
    model = build()
    model.bank = PromptBank([torch.randn(4, model.hidden, generator=torch.Generator().manual_seed(0))]).requires_grad_(
        True
    )
    batch = model.tokenize(
        ["great movie", "the plot was very boring and really bad", "ok"], ["yes", "no no no", "maybe yes"]
    )
    ids = torch.zeros(3, dtype=torch.long)
    results = []
    for keep in (True, False):
        model.keeps_logits = keep
        model.bank.weight.grad = None
        out = model(batch["input_ids"], batch["attention_mask"], ids, labels=batch["labels"])
        out.loss.backward()
        results.append((out.logits.shape[1], out.loss.detach(), out.loss_items, model.bank.weight.grad.clone()))
    (kept, loss, items, grad), (full, full_loss, full_items, full_grad) = results
    assert kept < full == batch["input_ids"].shape[1] + 4  # fewer positions through the head
    assert items == full_items
    torch.testing.assert_close(loss, full_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, full_grad, rtol=1e-5, atol=1e-6)
