"""DePT: a prompt with a low-rank offset to the first input embeddings, carried per row, trained at two rates, saved."""

import pytest
import torch
from conftest import sentiment_rows

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt
from softprompt.methods.prompt import PROMPT_FILE
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.reparam.dept import DePTBank
from softprompt.tasks import make_task
from softprompt.training.option_checks import check_prompt
from softprompt.training.train import train_prompt

LABELS = ["yes", "no"]


def scores(model, texts, prompt_ids) -> list[torch.Tensor]:
    return model.score_labels(texts, [LABELS] * len(texts), prompt_ids)


def swap_offset(model, source: str, replacement: str) -> torch.Tensor:
    """An input offset that turns the first input word `source` into `replacement`: zeros, then the difference of their
    embeddings at the first token after the leading special token."""
    weights = model.input_embeddings().weight.detach()
    (a,), (b,) = model.token_ids(source), model.token_ids(replacement)
    offset = torch.zeros(model.after_special + 1, model.hidden)
    offset[-1] = weights[b] - weights[a]
    return offset  # (N, H)


def test_the_offset_is_added_to_each_rows_first_input_tokens(tiny):
    prompt = torch.randn(3, tiny.hidden) * 0.5
    texts = ["great", "great film and very good story"]  # the short row is padded (left for decoder-only)
    tiny.bank = PromptBank(prompt)
    typed = scores(tiny, ["awful", "awful film and very good story"], [0, 0])
    tiny.bank = PromptBank(prompt, offsets=[swap_offset(tiny, "great", "awful")])
    for got, expected in zip(scores(tiny, texts, [0, 0]), typed):
        assert torch.allclose(got, expected, atol=1e-5)


def test_a_mixed_batch_of_a_dept_prompt_and_a_plain_one_equals_each_alone(tiny):
    torch.manual_seed(0)
    prompts = [torch.randn(2, tiny.hidden) * 0.5, torch.randn(4, tiny.hidden) * 0.5]
    tiny.bank = PromptBank(prompts, ["dept", "plain"], [torch.randn(3, tiny.hidden) * 0.5, None])
    texts = ["great", "the plot was boring", "not fun", "i loved the music"]
    ids = [0, 1, 0, 1]
    together = scores(tiny, texts, ids)
    for text, i, row in zip(texts, ids, together):
        assert torch.allclose(row, scores(tiny, [text], [i])[0], atol=1e-5)
    without = PromptBank(prompts, ["dept", "plain"])  # the offset matters
    tiny.bank = without
    assert not torch.allclose(scores(tiny, texts[:1], [0])[0], together[0], atol=1e-4)
    assert torch.allclose(scores(tiny, texts[1:2], [1])[0], together[1], atol=1e-5)


def test_training_changes_the_prompt_and_its_offset_only_and_the_file_serves_them(tiny, tmp_path):
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    examples = task.examples(sentiment_rows(), "rows", None)
    task.prepare(tiny)
    frozen = {k: v.clone() for k, v in tiny.base.state_dict().items()}
    options = PromptOptions(length=4, init="vocab", vocab_first_n=40, dept_positions=3, dept_rank=2)
    train = TrainOptions(
        max_steps=3, batch_size=10, micro_batch_size=10, eval_every=1000, optimizer="adamw", lr=1e-2, dept_lr=1e-2
    )
    train_prompt(tiny, task, examples, None, options, train, tmp_path, progress=False)
    assert all(torch.equal(frozen[k], v) for k, v in tiny.base.state_dict().items()), "a frozen weight changed"
    bank = tiny.bank
    assert isinstance(bank, DePTBank)
    assert not torch.equal(bank.prompt(0), tiny.initial_prompt("vocab", 4, first_n=40, seed=42)), (
        "the prompt did not change"
    )
    assert bank.b.abs().sum() > 0, "the offset did not change"
    saved = load_prompt(tmp_path / PROMPT_FILE)
    assert saved.offset.shape == (3, tiny.hidden) and torch.equal(saved.offset, bank.offset(0))
    assert saved.metadata["dept"] == {
        "positions": 3,
        "rank": 2,
        "trainable_parameters": 4 * tiny.hidden + 3 * 2 + 2 * tiny.hidden,
    }
    texts = ["great", "the plot was boring"]
    trained = scores(tiny, texts, [0, 0])
    tiny.bank = PromptBank(saved.prompt, ["loaded"], [saved.offset])
    assert all(torch.equal(a, b) for a, b in zip(scores(tiny, texts, [0, 0]), trained))


def test_the_offset_has_its_own_learning_rate(tiny, tmp_path):
    from softprompt.methods import make_method
    from softprompt.options import MethodOptions

    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    method = make_method(
        MethodOptions(), PromptOptions(length=2, init="vocab", vocab_first_n=40, dept_positions=4, dept_rank=2)
    )
    o = method.training_options(tiny, TrainOptions(lr=0.3))
    method.prepare(tiny, task, [], 0)
    groups = method.param_groups(tiny, method.parameters(tiny), o)
    assert [len(g["params"]) for g in groups] == [1, 2] and groups[1]["lr"] == o.dept_lr != o.lr
    assert groups[0]["params"][0] is tiny.bank.weight


def test_a_file_without_an_offset_loads_as_before(tiny, tmp_path):
    from softprompt.files.prompt_file import save_prompt

    save_prompt(tmp_path / "p.safetensors", torch.ones(2, tiny.hidden), {})
    file = load_prompt(tmp_path / "p.safetensors")
    assert file.offset is None and PromptBank(file.prompt, offsets=[file.offset]).offsets(torch.tensor([0])) is None


def test_dept_does_not_combine_with_a_reparameterisation():
    with pytest.raises(UserError, match="--prompt.dept_positions"):
        check_prompt(PromptOptions(dept_positions=8, reparam="ulpt"))


def test_export_to_peft_refuses_an_input_offset(tmp_path):
    from softprompt.files.prompt_file import save_prompt
    from softprompt.interop.peft import export_adapter

    save_prompt(
        tmp_path / "p.safetensors",
        torch.ones(2, 8),
        {"family": "encoder-decoder", "base_model": "t5"},
        torch.ones(3, 8),
    )
    with pytest.raises(UserError, match="input offset"):
        export_adapter(str(tmp_path / "p.safetensors"), str(tmp_path / "peft"))
    assert not (tmp_path / "peft").exists()


def test_serving_mixes_slotted_dept_and_plain_prompts_row_by_row(tmp_path, tiny):
    """One scoring pass over rows of three served files: a prompt at a template slot, a DePT prompt with its offset,
    a plain prompt; every row scores as its file's prompt alone."""
    from softprompt.files.prompt_file import save_prompt
    from softprompt.inference.loading import task_options
    from softprompt.serve.engine import Engine

    verbalizers = {"0": "no", "1": "yes"}
    templates = {"slotted": "the movie {prompt} was {}", "dept": "review {} it was", "plain": "{}"}
    torch.manual_seed(0)
    folder = tmp_path / "prompts"
    for name, template in templates.items():
        offset = torch.randn(2, tiny.hidden) if name == "dept" else None
        task = {"type": "classification", "template": template, "verbalizers": verbalizers}
        save_prompt(
            folder / f"{name}.safetensors", torch.randn(3, tiny.hidden) * 0.5, {**tiny.identity(), "task": task}, offset
        )
    engine = Engine(tiny, folder)
    items = [
        ("slotted", "great fun"),
        ("dept", "bad"),
        ("plain", "great"),
        ("dept", "very very good"),
        ("slotted", "awful"),
    ]
    captured = []
    score_labels = tiny.score_labels
    tiny.score_labels = lambda *a, **k: captured.append(score_labels(*a, **k)) or captured[-1]
    engine.predict(items)
    tiny.score_labels = score_labels
    (mixed,) = captured
    for (name, text), row in zip(items, mixed):
        file = load_prompt(folder / f"{name}.safetensors")
        task = make_task(task_options(file))
        tiny.bank = PromptBank(file.prompt, offsets=[file.offset])
        alone = tiny.class_scores([{"": text}], task.label_texts, template=task.template)[0]
        torch.testing.assert_close(row, alone, rtol=1e-5, atol=1e-5)


def test_eval_and_predict_load_the_offset_with_its_prompt(model_folder, family, tmp_path):
    from softprompt.files.prompt_file import save_prompt
    from softprompt.inference.loading import load_with_prompts
    from softprompt.models.model import SoftPromptModel

    model = SoftPromptModel.load(model_folder)
    meta = {**model.identity(), "task": {"type": "classification", "verbalizers": {"0": "no", "1": "yes"}}}
    offset = torch.randn(2, model.hidden)
    save_prompt(tmp_path / "dept.safetensors", torch.randn(3, model.hidden), meta, offset)
    save_prompt(tmp_path / "plain.safetensors", torch.randn(2, model.hidden), meta)
    loaded, _ = load_with_prompts([str(tmp_path / "dept.safetensors"), str(tmp_path / "plain.safetensors")])
    assert torch.equal(loaded.bank.offset("dept"), offset) and loaded.bank.offset("plain") is None


def test_the_offset_never_reaches_a_decoder_only_target(tmp_path):
    """Scoring (and training) a decoder-only row sees its target after the input, as generation does: without offset."""
    from conftest import tiny_gpt2

    model = tiny_gpt2()
    torch.manual_seed(0)
    prompt, offset = (
        torch.randn(2, model.hidden),
        torch.randn(2, model.hidden),
    )  # row 0: the 1-token input; row 1: " yes"
    model.bank = PromptBank(prompt, offsets=[offset])
    short = scores(model, ["great"], [0])[0]
    model.bank = PromptBank(
        prompt, offsets=[torch.cat([offset[:1], torch.randn(5, model.hidden)])]
    )  # would reach " yes"
    assert torch.allclose(scores(model, ["great"], [0])[0], short, atol=1e-6)


def test_info_shows_the_offset(tmp_path, capsys):
    from softprompt.cli import main
    from softprompt.files.prompt_file import save_prompt

    save_prompt(tmp_path / "p.safetensors", torch.ones(2, 8), {}, torch.ones(3, 8))
    main(["info", str(tmp_path / "p.safetensors")])
    assert "2 x 8 prompt and 3 x 8 input offset (DePT)" in capsys.readouterr().out


def test_low_rank_factors_give_back_an_offset_of_that_rank():
    from softprompt.reparam.dept import low_rank_factors

    g = torch.Generator().manual_seed(0)
    offset = torch.randn(5, 2, generator=g) @ torch.randn(2, 16, generator=g)  # rank 2
    a, b = low_rank_factors(offset, 2)
    assert a.shape == (5, 2) and b.shape == (2, 16)
    torch.testing.assert_close(a @ b, offset, rtol=0, atol=1e-5)
    a, b = low_rank_factors(offset, 4)  # more rank than the offset has: its own rank
    assert a.shape == (5, 2)
    torch.testing.assert_close(a @ b, offset, rtol=0, atol=1e-5)
    a, b = low_rank_factors(offset, 1)  # less: the best rank-1 approximation
    assert torch.linalg.matrix_rank(a @ b) == 1 and not torch.allclose(a @ b, offset, atol=1e-3)
    assert low_rank_factors(torch.zeros(5, 16), 4)[0].shape == (5, 0)


def test_every_rank_of_an_offset_started_from_a_file_trains():
    g = torch.Generator().manual_seed(0)
    saved = torch.randn(4, 1, generator=g) @ torch.randn(1, 8, generator=g)  # trained at rank 1
    for offset in (saved, torch.zeros(4, 8)):
        bank = DePTBank(torch.randn(2, 8, generator=g), 4, 3, seed=5, offset=offset)
        torch.testing.assert_close(bank.offset(0), offset, rtol=0, atol=1e-5)
        (bank.offsets(torch.tensor([0])) * torch.randn(1, 4, 8, generator=g)).sum().backward()
        assert (bank.b.grad.abs().sum(1) > 0).all(), "a rank of B gets no gradient"


def test_a_dept_run_initialised_from_a_dept_file_starts_from_its_prompt_and_offset(tiny, tmp_path):
    from softprompt.files.prompt_file import save_prompt
    from softprompt.methods import make_method
    from softprompt.options import MethodOptions

    g = torch.Generator().manual_seed(3)
    prompt, offset = (
        torch.randn(3, tiny.hidden, generator=g),
        torch.randn(4, 2, generator=g) @ torch.randn(2, tiny.hidden, generator=g),
    )
    source = save_prompt(tmp_path / "source.safetensors", prompt, {"embedding_fingerprint": tiny.fingerprint()}, offset)
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    method = make_method(MethodOptions(), PromptOptions(init=str(source), dept_positions=4, dept_rank=2))
    method.prepare(tiny, task, [], 0)
    assert torch.equal(tiny.bank.prompt(0), prompt)
    torch.testing.assert_close(tiny.bank.offset(0), offset, rtol=0, atol=1e-5)

    plain = make_method(MethodOptions(), PromptOptions(init=str(source)))
    with pytest.raises(UserError, match=r"--prompt.init .*source.safetensors.*--prompt.dept_positions=4"):
        plain.prepare(tiny, task, [], 0)
    other = make_method(MethodOptions(), PromptOptions(init=str(source), dept_positions=2, dept_rank=2))
    with pytest.raises(UserError, match="over 4 positions"):
        other.prepare(tiny, task, [], 0)
