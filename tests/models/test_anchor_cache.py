"""Encoder-only label anchors reused in inference (anchor_cache.py): scores equal recomputing every anchor, for mixed
tasks with prompts of different lengths; each (prompt, label text) pair is computed once; a changed prompt or changed
weights are computed afresh; training recomputes them with gradients."""

import torch
from conftest import tiny_bert

from softprompt.core.bank import PromptBank
from softprompt.models.model import SoftPromptModel

TEXTS = ["great movie", "the plot was very boring and really bad", "cat", "i loved it", "not good"]
LABELS = [["yes", "no"], ["good bad", "terrible"], ["red", "blue", "green"], ["yes", "no"], ["yes", "no"]]
IDS = [0, 1, 2, 0, 3]


def bert() -> SoftPromptModel:
    model = tiny_bert()
    g = torch.Generator().manual_seed(1)
    prompts = [
        torch.randn(5, model.hidden, generator=g),
        torch.randn(2, model.hidden, generator=g),
        torch.zeros(0, model.hidden),
        torch.randn(7, model.hidden, generator=g),
    ]
    model.bank = PromptBank(prompts, ["five", "two", "none", "seven"])
    return model


def recomputed(model: SoftPromptModel) -> list[torch.Tensor]:
    """Scores with every anchor computed afresh (the path training takes)."""
    model.train()
    for m in model.modules():  # training mode without dropout: the same function, no cache
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    try:
        with torch.no_grad():
            return model.score_labels(TEXTS, LABELS, IDS)
    finally:
        model.eval()


def test_reused_anchors_equal_recomputed_ones():
    model = bert()
    expected = recomputed(model)
    assert len(model.anchor_cache) == 0
    first = model.score_labels(TEXTS, LABELS, IDS)
    assert model.anchor_cache.misses == 9  # distinct (prompt, label) pairs: 0 yes/no, 1 two, 2 three, 3 yes/no
    again = model.score_labels(TEXTS, LABELS, IDS)
    assert model.anchor_cache.misses == 9 and model.anchor_cache.hits == 9
    for e, f, a in zip(expected, first, again):
        torch.testing.assert_close(f, e, rtol=0, atol=1e-5)
        assert torch.equal(f, a)


def test_anchors_are_shared_across_batches_and_tasks():
    model = bert()
    model.score_labels(TEXTS[:2], LABELS[:2], IDS[:2])
    misses = model.anchor_cache.misses
    model.score_labels(["an other text"], [["no", "yes"]], [0])  # prompt 0's yes/no: already there
    assert model.anchor_cache.misses == misses


def test_a_changed_prompt_is_computed_afresh():
    model = bert()
    model.score_labels(TEXTS, LABELS, IDS)
    with torch.no_grad():
        model.bank.weight[0].add_(0.5)  # prompt "five" changes; the others do not
    misses = model.anchor_cache.misses
    scores = model.score_labels(TEXTS, LABELS, IDS)
    assert model.anchor_cache.misses == misses + 2  # prompt 0's yes and no
    for e, s in zip(recomputed(model), scores):
        torch.testing.assert_close(s, e, rtol=0, atol=1e-5)


def test_changed_weights_drop_every_anchor():
    model = bert()
    model.score_labels(TEXTS, LABELS, IDS)
    with torch.no_grad():
        model.base.get_input_embeddings().weight.mul_(1.5)
    misses = model.anchor_cache.misses
    scores = model.score_labels(TEXTS, LABELS, IDS)
    assert model.anchor_cache.misses == misses + 9
    for e, s in zip(recomputed(model), scores):
        torch.testing.assert_close(s, e, rtol=0, atol=1e-5)


def test_training_forward_keeps_gradients_and_no_cache():
    model = bert()
    model.set_labels(["yes", "no"])
    model.bank.requires_grad_(True)
    model.train()
    batch = model.tokenize(TEXTS[:2])
    out = model(batch["input_ids"], batch["attention_mask"], torch.tensor([0, 1]), class_ids=torch.tensor([0, 1]))
    out.loss.backward()
    assert model.bank.weight.grad is not None and model.bank.weight.grad[:2].abs().sum() > 0
    assert len(model.anchor_cache) == 0


def test_trained_adapters_beside_the_base_model_drop_every_anchor():
    """Adapters are not the base model's weights, but they change every anchor: a step on them drops the cache."""
    from softprompt.methods import make_method
    from softprompt.options import DataOptions, MethodOptions, PromptOptions
    from softprompt.tasks import make_task

    model = tiny_bert()
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    make_method(MethodOptions(name="adapter"), PromptOptions()).prepare(model, task, [], 0)
    model.score_labels(TEXTS[:2], LABELS[:2], [0, 0])
    with torch.no_grad():
        for p in model.adapters.parameters():
            p.add_(0.3)  # as an optimiser step does: in place
    misses = model.anchor_cache.misses
    scores = model.score_labels(TEXTS[:2], LABELS[:2], [0, 0])
    assert model.anchor_cache.misses == misses + 4
    for e, s in zip(recomputed_rows(model, TEXTS[:2], LABELS[:2], [0, 0]), scores):
        torch.testing.assert_close(s, e, rtol=0, atol=1e-5)


def recomputed_rows(model, texts, labels, ids):
    model.anchor_cache.clear()
    out = model.score_labels(texts, labels, ids)
    model.anchor_cache.clear()
    return out
