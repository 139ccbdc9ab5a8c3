"""A training step queues its work without waiting on it: outside the frozen model itself, nothing in the forward
and backward pass reads a tensor back to the host (on a GPU each read is a synchronisation that stalls the queue).
The reads are observed at the dispatcher, so the CPU shows what a GPU would wait for."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from softprompt.core.bank import PromptBank
from softprompt.core.families import ENCODER_ONLY

# operators whose result the host must wait for: a value read back, or an output sized by the data
HOST_READS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select"}


class HostReads(TorchDispatchMode):
    """Records the host reads dispatched while `counting`."""

    def __init__(self):
        super().__init__()
        self.counting, self.reads = True, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]  # the overload's operator
        if self.counting and name in HOST_READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def training_batch(model) -> dict:
    inputs = ["great movie", "the plot was very boring and really bad", "ok"]
    if model.family == ENCODER_ONLY:
        model.set_labels(["terrible", "great"])
        batch = model.tokenize(inputs)
        batch["class_ids"] = torch.tensor([1, 0, 1])
    else:
        batch = model.tokenize(inputs, ["yes", "no no no", "maybe yes"])
    return {**batch, "prompt_ids": torch.zeros(len(inputs), dtype=torch.long)}


def test_a_training_step_reads_nothing_back_outside_the_frozen_model(tiny):
    tiny.bank = PromptBank(torch.randn(4, tiny.hidden, generator=torch.Generator().manual_seed(0)))
    tiny.train()
    batch = training_batch(tiny)
    mode = HostReads()
    tiny.base.register_forward_pre_hook(lambda *_: setattr(mode, "counting", False))  # the model's own are its own
    tiny.base.register_forward_hook(lambda *_: setattr(mode, "counting", True))
    with mode:
        out = tiny(**batch)
        out.loss.backward()
    assert tiny.bank.weight.grad is not None and tiny.bank.weight.grad.abs().sum() > 0
    assert mode.reads == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_a_training_step_waits_only_inside_the_frozen_model(tiny):
    """What the CPU cannot show: a copy from the host's memory (a label batch, a loss count) synchronises too.
    torch's sync debug mode raises on any synchronisation outside the frozen model's own forward pass."""
    from softprompt.models.tokenising import batch_to

    tiny.bank = PromptBank(torch.randn(4, tiny.hidden, generator=torch.Generator().manual_seed(0)))
    tiny.cuda().train()
    batch = batch_to(training_batch(tiny), "cuda")
    tiny(**batch).loss.backward()  # the first step moves the label texts to the GPU, once
    tiny.base.register_forward_pre_hook(lambda *_: torch.cuda.set_sync_debug_mode(0))
    tiny.base.register_forward_hook(lambda *_: torch.cuda.set_sync_debug_mode("error"))
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = tiny(**batch)
        out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert tiny.bank.weight.grad.abs().sum() > 0


def test_the_host_read_detector_sees_what_a_gpu_would_wait_for():
    """The check above could fail: the reads that the earlier step made are the ones it sees."""
    labels = torch.tensor([[-100, 5, 6], [-100, -100, 7]])
    with HostReads() as mode:
        bool((labels != -100).any())  # a value read back
        labels.unique(return_inverse=True)  # an output sized by the data
        (labels != -100).nonzero()
    assert mode.reads == ["_local_scalar_dense", "_unique2", "nonzero"]


@pytest.mark.parametrize("prompts", [[4], [4, 2]], ids=["one prompt", "two lengths"])
def test_the_window_tokenize_counts_is_the_one_the_labels_give(prompts):
    """`logits_to_keep` from tokenize equals target_window over the joined labels, so that the training step need
    not read the labels back; the losses and gradients with and without it are the same."""
    from conftest import tiny_gpt2

    from softprompt.core.next_token import target_window

    model = tiny_gpt2()
    g = torch.Generator().manual_seed(0)
    model.bank = PromptBank([torch.randn(n, model.hidden, generator=g) for n in prompts]).requires_grad_(True)
    batch = model.tokenize(["great movie", "the plot was very boring and really bad", "ok"], ["yes", "no no", "a b c"])
    ids = torch.tensor([0, len(prompts) - 1, 0])
    j = model.joined(batch["input_ids"], batch["attention_mask"], ids, batch["labels"])
    assert batch["logits_to_keep"] == target_window(j.labels) == 5  # "a b c" and EOS, and the position before
    labels = batch["labels"]  # before the join, as the prompt key/value cache scores them
    assert target_window(labels, batch["logits_to_keep"]) == target_window(labels) == 5
    results = []
    for given in (batch, {k: v for k, v in batch.items() if k != "logits_to_keep"}):
        model.bank.weight.grad = None
        out = model(**given, prompt_ids=ids)
        out.loss.backward()
        results.append((out.logits.shape, out.loss.detach(), model.bank.weight.grad.clone()))
    assert results[0][0] == results[1][0]
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)
    torch.testing.assert_close(results[0][2], results[1][2], rtol=0, atol=0)
