"""The join: prompts inserted per row, masks and labels extended, in the three families."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softprompt.core.bank import PromptBank
from softprompt.core.join import IGNORE_INDEX, insertion_offsets, join


def test_offsets_skip_left_padding_and_leading_special_token():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert insertion_offsets(mask, 0).tolist() == [2, 0, 0]
    assert insertion_offsets(mask, 1).tolist() == [3, 1, 1]


def test_join_places_each_rows_prompt_at_its_offset():
    tokens = torch.arange(2 * 3).float().view(2, 3, 1)  # (B=2, T=3, H=1): values 0..5
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    prompts = torch.tensor([[[10.0], [11.0]], [[20.0], [21.0]]])  # (B, P=2, H)
    labels = torch.tensor([[IGNORE_INDEX, 7, 8], [6, 7, 8]])
    j = join(tokens, mask, prompts, insertion_offsets(mask, 0), labels)
    assert j.inputs_embeds.squeeze(-1).tolist() == [[0, 10, 11, 1, 2], [20, 21, 3, 4, 5]]
    assert j.attention_mask.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert j.labels.tolist() == [
        [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 7, 8],
        [IGNORE_INDEX, IGNORE_INDEX, 6, 7, 8],
    ]
    assert j.prompt_mask.sum(1).tolist() == [2, 2]


def test_zero_length_prompt_leaves_inputs_unchanged():
    tokens = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    j = join(tokens, mask, torch.zeros(2, 0, 3), insertion_offsets(mask, 1))
    assert torch.equal(j.inputs_embeds, tokens)
    assert torch.equal(j.attention_mask, mask)


def test_bank_selects_a_prompt_per_row():
    bank = PromptBank(torch.stack([torch.full((2, 3), float(i)) for i in range(3)]), ["a", "b", "c"])
    rows, lengths = bank(torch.tensor([2, 0, 2]))
    assert rows.shape == (3, 2, 3) and lengths is None  # every prompt whole: the join needs no lengths
    assert rows[:, 0, 0].tolist() == [2.0, 0.0, 2.0]
    assert bank.index("b") == 1


def test_bank_holds_prompts_of_different_lengths():
    bank = PromptBank([torch.ones(3, 2), torch.full((1, 2), 2.0)], ["long", "short"])
    assert bank.length == 3 and bank.lengths.tolist() == [3, 1]
    assert torch.equal(bank.prompt("short"), torch.full((1, 2), 2.0))
    rows, lengths = bank(torch.tensor([1, 0]))
    assert lengths.tolist() == [1, 3] and rows[0, 1:].abs().sum() == 0  # zero-padded to the longest


def test_shorter_prompts_are_padded_where_the_family_pads():
    tokens = torch.arange(2 * 3).float().view(2, 3, 1)  # (B=2, T=3, H=1): values 0..5
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    prompts = torch.tensor([[[10.0], [11.0]], [[20.0], [0.0]]])  # row 1's prompt has length 1
    lengths = torch.tensor([2, 1])
    left = join(tokens, mask, prompts, insertion_offsets(mask, 0), lengths=lengths, pad_left=True)
    assert left.inputs_embeds.squeeze(-1).tolist() == [[0, 10, 11, 1, 2], [3, 20, 3, 4, 5]]
    assert left.attention_mask.tolist() == [[0, 1, 1, 1, 1], [0, 1, 1, 1, 1]]  # the extra slot is left padding
    right = join(tokens, mask, prompts, insertion_offsets(mask, 0), lengths=lengths)
    assert right.attention_mask.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 0]]  # ... or trailing padding
    assert right.inputs_embeds.squeeze(-1)[1, :4].tolist() == [20, 3, 4, 5]
    assert right.prompt_mask.sum(1).tolist() == [2, 1]


def test_a_prompt_shared_by_many_rows_gets_the_same_gradient_every_time():
    # Indexing sums a repeated row's gradients with parallel atomic adds on a CPU, so a run's prompt differed from
    # process to process; the bank's lookup must sum them in a fixed order. 64 rows x 20 x 384 is far above the
    # size at which the CPU kernels go parallel.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, 2))
    try:
        generator = torch.Generator().manual_seed(0)
        bank = PromptBank(torch.randn(2, 20, 384, generator=generator))
        ids = torch.tensor([0, 1] * 32)
        upstream = torch.randn(64, 20, 384, generator=generator)

        def gradient() -> torch.Tensor:
            bank.zero_grad()
            prompts, _ = bank(ids)
            prompts.backward(upstream)
            return bank.weight.grad.clone()

        in_order = torch.zeros_like(bank.weight)
        for row, i in zip(upstream, ids.tolist()):
            in_order[i] += row
        first = gradient()
        assert torch.equal(first, in_order)  # each prompt gets its own rows' sum, added in row order
        assert all(torch.equal(first, gradient()) for _ in range(30))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("at", [0, 1])
def test_a_prompt_at_one_column_joins_as_at_per_row_offsets(at):
    """Right-padded rows put every prompt at the same column: concatenation gives what the general gather does."""
    g = torch.Generator().manual_seed(0)
    tokens, prompts = torch.randn(3, 5, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    labels = torch.tensor([[7, 8, 9, 10, 11], [7, 8, -100, -100, -100], [7, -100, -100, -100, -100]])
    column = join(tokens, mask, prompts, at, labels)
    per_row = join(tokens, mask, prompts, torch.full((3,), at), labels)
    for field in ("inputs_embeds", "attention_mask", "labels", "prompt_mask"):
        assert torch.equal(getattr(column, field), getattr(per_row, field)), field
    assert column.prompt_mask[:, at : at + 2].all() and column.prompt_mask.sum() == 6


def reference_join(tokens, mask, prompts, offsets, labels, lengths, pad_left):
    """Each row built alone: its first `length` prompt vectors inserted at its offset, then the P - length slots it
    does not use as padding on the left (`pad_left`) or at the end. Returns embeds, mask, labels, prompt mask."""
    P = prompts.shape[1]
    rows = []
    for b in range(len(tokens)):
        n, at = (P if lengths is None else int(lengths[b])), int(offsets[b])
        pad = P - n
        e = torch.cat([tokens[b, :at], prompts[b, :n], tokens[b, at:]])
        m = torch.cat([mask[b, :at], torch.ones(n, dtype=mask.dtype), mask[b, at:]])
        lab = torch.cat([labels[b, :at], torch.full((n,), IGNORE_INDEX), labels[b, at:]])
        p = torch.cat(
            [
                torch.zeros(at, dtype=torch.bool),
                torch.ones(n, dtype=torch.bool),
                torch.zeros(len(mask[b]) - at, dtype=torch.bool),
            ]
        )
        pads = (
            torch.zeros(pad, e.shape[1]),
            torch.zeros(pad, dtype=mask.dtype),
            torch.full((pad,), IGNORE_INDEX),
            torch.zeros(pad, dtype=torch.bool),
        )
        parts = (e, m, lab, p)
        rows.append([torch.cat([q, x]) if pad_left else torch.cat([x, q]) for x, q in zip(parts, pads)])
    return [torch.stack(column) for column in zip(*rows)]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_the_join_builds_each_row_as_it_reads_alone(data):
    """Any padding side, per-row offset (a template slot puts the prompt anywhere in the text) and prompt lengths."""
    B, T, P = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6)), data.draw(st.integers(0, 4))
    pad_left = data.draw(st.booleans())
    real = [data.draw(st.integers(1, T)) for _ in range(B)]
    mask = torch.tensor([[0] * (T - n) + [1] * n if pad_left else [1] * n + [0] * (T - n) for n in real])
    first = [T - n if pad_left else 0 for n in real]
    offsets = torch.tensor([data.draw(st.integers(f, f + n)) for f, n in zip(first, real)])
    ragged = data.draw(st.booleans())
    lengths = torch.tensor([data.draw(st.integers(0, P)) for _ in range(B)]) if ragged else None
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    tokens, prompts = torch.randn(B, T, 2, generator=g), torch.randn(B, P, 2, generator=g)
    labels = torch.randint(0, 9, (B, T), generator=g).masked_fill(mask == 0, IGNORE_INDEX)
    j = join(tokens, mask, prompts, offsets, labels, lengths, pad_left=pad_left)
    embeds, want_mask, want_labels, want_prompt = reference_join(
        tokens, mask, prompts, offsets, labels, lengths, pad_left
    )
    assert torch.equal(j.attention_mask, want_mask) and torch.equal(j.labels, want_labels)
    assert torch.equal(j.prompt_mask, want_prompt)
    seen = want_mask.bool()  # what a padding position holds is never read
    assert torch.equal(j.inputs_embeds[seen], embeds[seen])
