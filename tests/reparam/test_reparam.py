"""Reparameterised prompts (residual, ULPT): the saved prompt is exactly the one trained with, only the
reparameterisation trains, the frozen model never changes, and the file is a plain prompt file that records how."""

import json

import pytest
import torch
from conftest import BUILDERS, sentiment_rows

from softprompt.cli import main
from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt, save_prompt
from softprompt.methods import make_method
from softprompt.methods.prompt import PROMPT_FILE
from softprompt.options import DataOptions, MethodOptions, PromptOptions, TrainOptions
from softprompt.reparam import NAMES, REPARAMS, ULPT, ReparamBank, Residual, make_reparam
from softprompt.reparam.ulpt import projection
from softprompt.tasks import make_task
from softprompt.training.option_checks import check_prompt
from softprompt.training.run_output import RESULTS_FILE
from softprompt.training.train import train

VERBALIZERS = {"0": "no", "1": "yes"}
OPTIONS = {"residual": dict(reparam="residual", bottleneck=6), "ulpt": dict(reparam="ulpt", rank=4)}


def setup(model):
    task = make_task(DataOptions(verbalizers=VERBALIZERS))
    examples = task.examples(sentiment_rows(), "rows", None)
    task.prepare(model)
    return task, examples


def prompt_options(name: str, **extra) -> PromptOptions:
    return PromptOptions(length=8, init="vocab", vocab_first_n=40, **OPTIONS[name], **extra)


def outputs(model, task, examples):
    """The model's logits and loss on every example, one batch."""
    batch = task.batch(model, examples)
    with torch.no_grad():
        out = model(**batch, prompt_ids=torch.zeros(len(examples), dtype=torch.long))
    return out.logits, out.loss


def trained_like(reparam):
    """`reparam` with every parameter moved off its start, as training leaves it."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reparam.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator) * (p.abs().mean() + 1e-3))
    return reparam


@pytest.mark.parametrize("name", list(REPARAMS))
def test_the_folded_prompt_gives_exactly_the_training_prompts_logits(name, tiny):
    task, examples = setup(tiny)
    initial = tiny.initial_prompt("vocab", 8, first_n=40, seed=0)
    reparam = trained_like(make_reparam(prompt_options(name), initial, seed=3))
    tiny.bank = ReparamBank(reparam, "task")
    during = outputs(tiny, task, examples)
    folded = tiny.bank.prompt(0)
    assert folded.shape == initial.shape and not folded.requires_grad
    assert not torch.equal(folded, initial)  # the reparameterisation did shape the prompt
    tiny.bank = PromptBank(folded, ["task"])
    after = outputs(tiny, task, examples)
    assert torch.equal(during[0], after[0]) and torch.equal(during[1], after[1])


def run(model, name, folder, steps=5, validation=None, **extra):
    task, examples = setup(model)
    method = make_method(MethodOptions(), prompt_options(name, **extra))
    o = TrainOptions(max_steps=steps, batch_size=10, micro_batch_size=10, eval_every=1000, log_every=1)
    return method, task, examples, train(model, method, task, examples, validation, o, folder, progress=False)


@pytest.mark.parametrize("name", list(REPARAMS))
def test_only_the_reparameterisation_trains_and_the_saved_file_is_what_it_made(name, tiny, family, tmp_path):
    base = {k: v.clone() for k, v in tiny.base.state_dict().items()}
    task, examples = setup(tiny)
    method = make_method(MethodOptions(), prompt_options(name))
    starts = {}

    def prepare_and_remember(model, *args):
        type(method).prepare(method, model, *args)
        starts.update({n: p.detach().clone() for n, p in model.bank.named_parameters()})

    method.prepare = prepare_and_remember
    o = TrainOptions(max_steps=15, batch_size=10, micro_batch_size=10, eval_every=1000, log_every=1)
    result = train(tiny, method, task, examples, None, o, tmp_path, progress=False)

    assert all(torch.equal(base[k], v) for k, v in tiny.base.state_dict().items()), "a frozen weight changed"
    trained = dict(tiny.bank.named_parameters())
    assert set(trained) == set(starts) and all(n.startswith("reparam.") for n in trained)
    assert all(not torch.equal(starts[n], p) for n, p in trained.items()), (
        "a reparameterisation parameter did not train"
    )
    if name == "ulpt":
        assert torch.equal(tiny.bank.reparam.up, projection(4, tiny.hidden, seed=42))  # frozen, from train.seed
    losses = [json.loads(line)["train/loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.9 * losses[0], losses  # 0.47 to 0.82 of the start seen

    file = load_prompt(tmp_path / PROMPT_FILE)
    assert torch.equal(file.prompt, tiny.bank.prompt(0))
    count = sum(p.numel() for p in trained.values())
    recorded = file.metadata["reparam"]
    assert (
        recorded["name"] == name and recorded["trainable_parameters"] == count == result.report["trainable_parameters"]
    )
    assert (
        recorded["bottleneck"] == 6
        if name == "residual"
        else (recorded["rank"], recorded["projection_seed"]) == (4, 42)
    )
    assert file.metadata["training"]["max_steps"] == 15 and file.metadata["init"] == "vocab"
    row = json.loads((tmp_path / RESULTS_FILE).read_text().splitlines()[-1])
    assert row["trainable_parameters"] == count and row["config"]["prompt"]["reparam"] == name


def test_ulpt_stores_p_r_plus_2h_and_its_projection_comes_back_from_the_seed():
    initial = torch.randn(8, 32)
    ulpt = ULPT(initial, rank=4, seed=7)
    assert ulpt.trainable_parameters() == 8 * 4 + 2 * 32
    assert "up" not in ulpt.state_dict()  # regenerated, never stored
    again = ULPT(initial, rank=4, seed=7)
    assert torch.equal(ulpt.up, again.up) and torch.equal(ulpt.fold(), again.fold())
    assert not torch.equal(ulpt.up, ULPT(initial, rank=4, seed=8).up)
    assert ulpt.up.std().item() == pytest.approx(4**-0.5, rel=0.1)  # entries N(0, 1/r)
    assert ULPT(initial, rank=32, seed=7).fold() == pytest.approx(initial, abs=1e-4)  # full rank: the start is exact


def test_residual_is_the_papers_module_and_counts_its_mlp():
    initial = torch.randn(5, 16)
    residual = Residual(initial, bottleneck=3)
    assert residual.trainable_parameters() == 5 * 16 + (16 * 3 + 3) + (3 * 16 + 16) + 2 * 16
    x = residual.prompt.detach()
    linear1, _, linear2, _, norm = residual.mlp
    expected = x + torch.nn.functional.layer_norm(linear2(torch.relu(linear1(x))), (16,), norm.weight, norm.bias)
    torch.testing.assert_close(residual.fold(), expected)
    assert torch.equal(Residual(initial, 3, gain=0.25).mlp[-1].weight, torch.full((16,), 0.25))


@pytest.mark.parametrize("name", list(REPARAMS))
def test_the_prompt_stays_float32_under_bf16_autocast(name):
    bank = ReparamBank(trained_like(make_reparam(prompt_options(name), torch.randn(8, 32), seed=0)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prompts, lengths = bank(torch.zeros(2, dtype=torch.long))  # (2, P, H)
    assert prompts.dtype == torch.float32 and torch.equal(prompts[1], bank.prompt(0)) and lengths is None


@pytest.mark.parametrize("name", list(REPARAMS))
def test_a_reparameterisation_lives_on_its_initial_prompts_device(name):
    """The meta device stands in for a GPU: an initial prompt there (the model's embeddings) puts every parameter and
    buffer there, where the bank's first fold runs."""
    reparam = make_reparam(prompt_options(name), torch.randn(8, 32, device="meta"), seed=0)
    assert {t.device.type for t in [*reparam.parameters(), *reparam.buffers()]} == {"meta"}
    assert ReparamBank(reparam).prompt(0).device.type == "meta"


def test_residual_dropout_acts_only_while_training():
    residual = Residual(torch.randn(5, 16), bottleneck=3, dropout=0.5).train()
    assert not torch.equal(residual(), residual.fold())
    assert torch.equal(residual.eval()(), residual.fold())


def test_the_saved_file_loads_as_a_plain_prompt(tmp_path):
    model = BUILDERS["encoder-decoder"]()
    run(model, "ulpt", tmp_path, steps=2)
    expected = outputs(model, *setup(model))[0]
    fresh = BUILDERS["encoder-decoder"]()
    fresh.bank = PromptBank(load_prompt(tmp_path / PROMPT_FILE).prompt)
    assert torch.equal(outputs(fresh, *setup(fresh))[0], expected)


def test_transfer_initialisation_starts_from_the_files_vectors(tmp_path):
    model = BUILDERS["decoder-only"]()
    source = torch.randn(6, model.hidden)
    save_prompt(tmp_path / "source.safetensors", source, model.identity())
    task, _ = setup(model)
    full_rank = {"residual": OPTIONS["residual"], "ulpt": dict(reparam="ulpt", rank=model.hidden), "none": {}}
    for reparam in NAMES:
        o = PromptOptions(init=str(tmp_path / "source.safetensors"), length=100, **full_rank[reparam])
        method = make_method(MethodOptions(), o)
        method.prepare(model, task, [], seed=0)
        start = model.bank.prompt(0)
        assert start.shape == (6, model.hidden)  # the file's length wins
        if reparam == "none":
            assert torch.equal(start, source)
        elif reparam == "ulpt":  # r = H: the projection spans every direction, so the start is the file's prompt
            torch.testing.assert_close(start, source, rtol=0, atol=1e-4)
        else:  # the MLP branch adds to the file's vectors, which are what trains
            assert torch.equal(method.reparam.prompt.detach(), source)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(reparam="lora"), "--prompt.reparam: unknown reparameterisation 'lora' (none, residual, ulpt)"),
        (dict(reparam="residual", bottleneck=0), "--prompt.bottleneck must be at least 1 (got 0)"),
        (dict(reparam="ulpt", rank=0), "--prompt.rank must be at least 1 (got 0)"),
        (dict(reparam="ulpt", projection_seed=-1), "--prompt.projection_seed must not be negative (got -1)"),
        (dict(reparam="residual", reparam_dropout=1.0), "--prompt.reparam_dropout must be in [0, 1) (got 1.0)"),
    ],
)
def test_bad_options_stop_with_one_line(options, message):
    with pytest.raises(UserError) as e:
        check_prompt(PromptOptions(**options))
    assert str(e.value) == message and "\n" not in message


def test_a_reparameterisation_needs_prompt_tuning():
    with pytest.raises(
        UserError, match=r"^--prompt.reparam: ulpt reparameterises a soft prompt; --method lora trains none$"
    ):
        make_method(MethodOptions(name="lora"), PromptOptions(reparam="ulpt"))


def test_the_names_agree_with_the_option():
    assert NAMES == ("none", "residual", "ulpt")


def test_bad_reparam_on_the_command_line_is_one_line(tmp_path, capsys):
    code = main(
        ["train", "--prompt.rank=0", "--prompt.reparam=ulpt", "--data.train=x.jsonl", f"--train.output_dir={tmp_path}"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err == "error: --prompt.rank must be at least 1 (got 0)\n"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["decoder-only"])
def test_train_info_predict_eval_with_a_reparameterised_prompt(tmp_path, model_folder, capsys):
    from conftest import recipe

    config = recipe(tmp_path, model_folder)
    assert main(["train", "--config", str(config), "--prompt.reparam=ulpt", "--prompt.rank=2"]) == 0
    out = capsys.readouterr().out
    assert f"trainable parameters: {4 * 2 + 2 * 32} of" in out  # P r + 2H, with P = 4 and H = 32
    prompt = tmp_path / "run" / PROMPT_FILE
    assert main(["info", str(prompt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reparam"] == {
        "name": "ulpt",
        "rank": 2,
        "projection_seed": 42,
        "unit": info["reparam"]["unit"],
        "trainable_parameters": 72,
    }
    assert (info["length"], info["hidden"]) == (4, 32)
    assert main(["predict", str(prompt), "great", "awful"]) == 0
    assert set(capsys.readouterr().out.split()) <= {"0", "1"}
    assert main(["eval", str(prompt), "--data.validation", str(tmp_path / "train.jsonl")]) == 0
    scores = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert float(scores["accuracy"]) == pytest.approx(load_prompt(prompt).metadata["metrics"]["accuracy"], abs=0.01)
