"""Training: only the prompt changes, loss falls, accuracy rises, the paper's optimiser, logs and early stopping."""

import contextlib
import json

import pytest
import torch
from accelerate import Accelerator
from conftest import BUILDERS, sentiment_rows, tiny_bert, tiny_gpt2
from transformers.optimization import Adafactor

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt, save_prompt
from softprompt.methods.prompt import PROMPT_FILE, default_lr
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training.accumulate import accumulation_steps, backward_accumulated
from softprompt.training.optim import PromptAdafactor, make_optimizer
from softprompt.training.step_modes import resolve_precision
from softprompt.training.train import train_prompt

VERBALIZERS = {"0": "no", "1": "yes"}


def setup(model):
    task = make_task(DataOptions(verbalizers=VERBALIZERS))
    examples = task.examples(sentiment_rows(), "rows", None)
    task.prepare(model)
    return task, examples


VOCAB_PROMPT = PromptOptions(length=8, init="vocab", vocab_first_n=40)


def run(model, task, examples, tmp_path, validation=None, prompt=VOCAB_PROMPT, **train):
    options = TrainOptions(**{"max_steps": 3, "batch_size": 10, "micro_batch_size": 10, "eval_every": 1000, **train})
    return train_prompt(model, task, examples, validation, prompt, options, tmp_path, progress=False)


def mean_loss(model, task, examples) -> float:
    model.eval()
    batch = task.batch(model, examples)
    with torch.no_grad():
        return model(**batch, prompt_ids=torch.zeros(len(examples), dtype=torch.long)).loss.item()


def test_only_the_prompt_changes(tiny, tmp_path):
    task, examples = setup(tiny)
    before = {k: v.clone() for k, v in tiny.base.state_dict().items()}
    result = run(tiny, task, examples, tmp_path, max_steps=3)
    after = tiny.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen weight changed"
    initial = tiny.initial_prompt("vocab", 8, first_n=40, seed=42)
    assert not torch.equal(tiny.bank.prompt(0), initial), "the prompt did not change"
    assert result.steps == 3 and (tmp_path / PROMPT_FILE).is_file()


def logged(folder, key: str) -> list[float]:
    return [r[key] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if key in r]


@pytest.mark.slow
def test_loss_falls_at_every_checkpoint(tiny, tmp_path):
    """With the default learning rate the loss falls steadily in every family: lower at each of three checkpoints
    (by 5% or more in every seed tried, far beyond float rounding) and below 60% of the start (at most 46% seen)."""
    task, examples = setup(tiny)
    tiny.bank = PromptBank(tiny.initial_prompt("vocab", 8, first_n=40, seed=42))
    before = mean_loss(tiny, task, examples)
    run(tiny, task, examples, tmp_path, max_steps=60, log_every=20)  # one batch holds all rows: exact losses
    losses = [before, *logged(tmp_path, "train/loss")]  # at the start and at steps 20, 40, 60
    assert len(losses) == 4
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize("build,optimizer,lr", [(tiny_gpt2, "adafactor", 0.3), (tiny_bert, "adamw", 0.1)])
def test_accuracy_rises(build, optimizer, lr, tmp_path):
    model = build()
    task, examples = setup(model)
    model.bank = PromptBank(model.initial_prompt("vocab", 8, first_n=40, seed=42))
    before = task.evaluate(model, examples, progress=False)["accuracy"]
    result = run(
        model, task, examples, tmp_path, validation=examples, optimizer=optimizer, lr=lr, max_steps=60, eval_every=20
    )
    assert result.metrics["accuracy"] >= 90 > before


def test_adafactor_has_the_papers_settings():
    weight = torch.nn.Parameter(torch.randn(1, 5, 4))
    optimizer = make_optimizer([weight], TrainOptions(lr=0.3))
    assert isinstance(optimizer, PromptAdafactor)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.3 and group["relative_step"] is False and group["scale_parameter"] is False
    assert group["decay_rate"] == -0.8 and group["t5x_weight_decay"] == 1e-5 and group["clip_threshold"] == 1.0
    weight.grad = torch.randn_like(weight)
    optimizer.step()
    state = optimizer.state[weight]
    assert "exp_avg_sq" in state and "exp_avg_sq_row" not in state  # the prompt is not factored


def t5x_adafactor(param, grads, lr, weight_decay, decay_exponent=0.8, clipping_threshold=1.0, epsilon1=1e-30):
    """T5X's Adafactor update for an unfactored parameter without momentum or parameter scaling, transcribed."""
    v = torch.zeros_like(param)
    for step, grad in enumerate(grads):  # T5X counts steps from 0
        decay_rate = 1.0 - (step + 1.0) ** -decay_exponent
        v = decay_rate * v + (1.0 - decay_rate) * (grad * grad + epsilon1)
        y = grad * v**-0.5
        y = y / max(1.0, (y.pow(2).mean().sqrt() / clipping_threshold).item())
        param = (1.0 - weight_decay) * param - lr * y
    return param


def test_adafactor_matches_t5x_weight_decay_included():
    torch.manual_seed(0)
    start, grads = (
        torch.randn(1, 6, 5, dtype=torch.float64),
        [torch.randn(1, 6, 5, dtype=torch.float64) for _ in range(6)],
    )
    weight = torch.nn.Parameter(start.clone())
    optimizer = make_optimizer([weight], TrainOptions(lr=0.3, weight_decay=0.01))
    for grad in grads:
        weight.grad = grad.clone()
        optimizer.step()
    expected = t5x_adafactor(start, grads, lr=0.3, weight_decay=0.01)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-9, atol=1e-9)
    library = torch.nn.Parameter(start.clone())  # transformers' own Adafactor decays by wd * lr instead
    same_settings = Adafactor(
        [library],
        lr=0.3,
        relative_step=False,
        scale_parameter=False,
        warmup_init=False,
        decay_rate=-0.8,
        weight_decay=0.01,
        clip_threshold=1.0,
    )
    for grad in grads:
        library.grad = grad.clone()
        same_settings.step()
    assert not torch.allclose(library.detach(), expected, rtol=1e-6, atol=1e-6)


def test_default_learning_rate_follows_the_embedding_scale():
    t5, gpt2 = BUILDERS["encoder-decoder"](), BUILDERS["decoder-only"]()
    assert default_lr(t5) == 0.3  # the paper's value, exactly, on T5
    rms = gpt2.input_embeddings().weight.pow(2).mean().sqrt().item()
    assert default_lr(gpt2) == pytest.approx(0.3 * rms / 11.6, rel=0.01)
    with torch.no_grad():
        gpt2.input_embeddings().weight.mul_(10)
    assert default_lr(gpt2) == pytest.approx(3 * rms / 11.6, rel=0.01)


def test_adamw_option():
    weight = torch.nn.Parameter(torch.randn(2, 3))
    assert isinstance(make_optimizer([weight], TrainOptions(optimizer="adamw", lr=1e-3)), torch.optim.AdamW)


def test_precision_bf16_only_on_cuda_unless_asked():
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cpu") == "no"
    assert resolve_precision("fp32", "cuda") == "no"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_accumulation_reaches_the_effective_batch():
    assert accumulation_steps(32, 8, 1) == 4
    assert accumulation_steps(32, 8, 2) == 2
    assert accumulation_steps(32, 64, 1) == 1
    with pytest.raises(UserError, match="not a multiple"):
        accumulation_steps(30, 8, 1)


def prompt_gradient(model, task, examples, micro: int | None) -> torch.Tensor:
    """The prompt's gradient over `examples`: in one pass (micro=None, the reference), or accumulated as training
    accumulates micro-batches of `micro` rows."""
    model.bank.weight.grad = None
    ids = lambda rows: torch.zeros(len(rows), dtype=torch.long)  # noqa: E731
    if micro is None:
        model(**task.batch(model, examples), prompt_ids=ids(examples)).loss.backward()
    else:
        batches = [
            {**task.batch(model, examples[i : i + micro]), "prompt_ids": ids(examples[i : i + micro])}
            for i in range(0, len(examples), micro)
        ]
        backward_accumulated(model, batches, Accelerator(cpu=True), contextlib.nullcontext, step=1)
    return model.bank.weight.grad.clone()


def test_accumulated_micro_batches_give_the_full_batchs_gradient(tiny, family):
    """Targets of 2, 5, 9 and 13 tokens: every target token weighs the same however the batch is split."""
    words = "one two three four five six seven eight nine ten red blue green".split()
    if family == "encoder-only":
        task, examples = setup(tiny)
        examples = examples[:4]
    else:
        task = make_task(DataOptions(task="text2text", max_target_length=16))
        rows = [
            {"input": f"the movie {w}", "target": " ".join(words[:n])}
            for w, n in zip(["great", "bad", "fun", "awful"], [1, 4, 8, 12])
        ]
        examples = task.examples(rows, "rows", None)
        task.prepare(tiny)
    tiny.bank = PromptBank(tiny.initial_prompt("random", 3, seed=1))
    full = prompt_gradient(tiny, task, examples, None)
    assert full.abs().max() > 0
    for micro in (1, 2, 3, 4):  # 3: micro-batches of 3 rows and 1
        error = (prompt_gradient(tiny, task, examples, micro) - full).norm() / full.norm()
        assert error < 1e-5, f"micro-batches of {micro}: relative L2 error {error:.2e}"


def test_logs_metadata_and_best_prompt(tmp_path):
    model = tiny_gpt2()
    task, examples = setup(model)
    result = run(model, task, examples, tmp_path, validation=examples, max_steps=20, eval_every=10, log_every=5)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [5, 10, 15, 20]
    evals = [r for r in records if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [10, 20]
    assert result.metrics["accuracy"] == max(r["eval/accuracy"] for r in evals)
    assert list(tmp_path.rglob("events.out.tfevents*")), "no TensorBoard event file"
    from softprompt.files.prompt_file import load_prompt

    saved = load_prompt(tmp_path / PROMPT_FILE)
    assert torch.equal(saved.prompt, model.bank.prompt(0))  # the model holds the best prompt, as saved
    meta = saved.metadata
    assert meta["metrics"]["accuracy"] == result.metrics["accuracy"] and meta["step"] == result.best_step
    assert meta["task"]["verbalizers"] == VERBALIZERS and meta["training"]["lr"] == result.lr == default_lr(model)
    assert meta["base_model"] == "tiny-gpt2" and meta["length"] == 8 and meta["init"] == "vocab"


def test_early_stopping_when_the_metric_stops_improving(tmp_path, capsys):
    model = tiny_gpt2()
    task, examples = setup(model)
    result = run(
        model,
        task,
        examples,
        tmp_path,
        validation=examples,
        optimizer="adamw",
        lr=0.0,
        weight_decay=0.0,
        max_steps=50,
        eval_every=5,
        patience=2,
    )
    assert result.steps == 15 and result.stopped_early  # best at step 5, no improvement at 10 and 15
    assert "early stopping at step 15: accuracy has not improved for 2 evaluations" in capsys.readouterr().err


def test_nan_prompt_file_is_refused_before_anything_is_written(tmp_path):
    model = tiny_gpt2()
    task, examples = setup(model)
    bad = tmp_path / "nan.safetensors"
    save_prompt(bad, torch.full((4, model.hidden), float("nan")), model.identity())
    with pytest.raises(UserError, match="the prompt holds NaN or infinite values"):
        run(model, task, examples, tmp_path / "out", prompt=PromptOptions(init=str(bad)))
    assert not (tmp_path / "out").exists()


def test_a_loss_that_overflows_stops_training_with_a_clear_error(tmp_path):
    model = tiny_gpt2()
    task, examples = setup(model)
    huge = save_prompt(tmp_path / "huge.safetensors", torch.full((4, model.hidden), 1e30), model.identity())
    with pytest.raises(UserError, match="the loss became nan at step 1: lower --train.lr"):
        run(model, task, examples, tmp_path / "out", prompt=PromptOptions(init=str(huge)))
    assert not (tmp_path / "out" / PROMPT_FILE).exists()


def test_a_failed_rerun_leaves_the_previous_run_intact(tmp_path):
    model = tiny_gpt2()
    task, examples = setup(model)
    run(model, task, examples, tmp_path, validation=examples, max_steps=2, eval_every=2)
    before = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    assert tmp_path / PROMPT_FILE in before and tmp_path / "metrics.jsonl" in before
    other_width = save_prompt(tmp_path.parent / "narrow.safetensors", torch.zeros(4, 8), {"base_model": "other"})
    with pytest.raises(UserError, match="prompt width 8"):
        run(model, task, examples, tmp_path, prompt=PromptOptions(init=str(other_width)))
    assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == before


def test_a_rerun_replaces_the_previous_run(tmp_path):
    model = tiny_gpt2()
    task, examples = setup(model)
    run(model, task, examples, tmp_path, validation=examples, max_steps=4, eval_every=2, log_every=2)
    run(model, task, examples, tmp_path, max_steps=1, log_every=1)  # no validation: the prompt is saved at the end
    assert [r["step"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())] == [1]
    assert load_prompt(tmp_path / PROMPT_FILE).metadata["step"] == 1
    assert len(list((tmp_path / "tensorboard").rglob("events.out.tfevents*"))) == 1


@pytest.mark.parametrize("evaluated", [False, True])
def test_ctrl_c_keeps_a_prompt_and_says_which(tmp_path, capsys, evaluated):
    model = tiny_gpt2()
    task, examples = setup(model)
    calls = []

    def interrupt_at_step_3(module, args, out):
        calls.append(1)
        if len(calls) == 3 + evaluated:  # in step 3 (after the evaluation's one rank-classification pass at step 2)
            raise KeyboardInterrupt

    model.base.register_forward_hook(interrupt_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(model, task, examples, tmp_path, validation=examples if evaluated else None, max_steps=10, eval_every=2)
    err = capsys.readouterr().err
    saved = load_prompt(tmp_path / PROMPT_FILE).metadata
    if evaluated:
        assert (
            saved["step"] == 2
            and "interrupted after step 2: " in err
            and "holds the best prompt so far (accuracy" in err
        )
    else:
        assert saved["step"] == 2 and saved["interrupted"] is True  # step 3 was under way: the prompt after step 2
        assert (
            f"interrupted after step 2: saved the prompt as it stood (not evaluated) to {tmp_path / PROMPT_FILE}" in err
        )


@pytest.mark.parametrize("family", ["encoder-decoder", "decoder-only"])
def test_squad_task_trains_and_scores_generated_answers(family, tmp_path):
    model = BUILDERS[family]()
    task = make_task(DataOptions(task="squad", max_target_length=4))
    rows = [
        {"question": "what is red", "context": "the sun is red", "answers": ["sun", "the sun"]},
        {"question": "who is blue", "context": "the cat is blue", "answers": ["cat"]},
    ]
    examples = task.examples(rows, "squad.json", None)
    assert task.metric == "f1" and examples[0].target == "sun"
    result = run(
        model,
        task,
        examples,
        tmp_path,
        validation=examples,
        max_steps=2,
        batch_size=2,
        micro_batch_size=1,
        eval_every=2,
    )
    assert set(result.metrics) == {"exact_match", "f1"} and 0 <= result.metrics["f1"] <= 100
    predictions = task.predict(model, [e.fields for e in examples])
    assert len(predictions) == 2 and all(isinstance(p, str) for p in predictions)


def test_encoder_only_refuses_generative_tasks():
    with pytest.raises(UserError, match="encoder-only model predicts labels"):
        make_task(DataOptions(task="text2text")).prepare(tiny_bert())


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_keeps_the_prompt_in_float32(tmp_path, precision, dtype):
    """bf16, and fp16 with loss scaling (whose first steps may be skipped while the scale falls)."""
    model = tiny_gpt2()
    task, examples = setup(model)
    dtypes = []
    model.base.register_forward_hook(lambda module, args, out: dtypes.append(out.logits.dtype))
    result = run(model, task, examples, tmp_path, precision=precision, max_steps=6)
    assert dtypes and set(dtypes) == {dtype}  # the frozen model ran under autocast
    assert model.bank.weight.dtype == torch.float32 and torch.isfinite(model.bank.weight).all()
    assert not torch.equal(model.bank.prompt(0), model.initial_prompt("vocab", 8, first_n=40, seed=42))
    assert result.steps == 6


def test_fp16_warns_that_t5_overflows(tmp_path, capsys):
    model = BUILDERS["encoder-decoder"]()
    task, examples = setup(model)
    run(model, task, examples, tmp_path, precision="fp16", max_steps=1)
    assert "T5 overflows in float16" in capsys.readouterr().err


def test_gradient_checkpointing_gives_the_same_prompt(tmp_path):
    """With train.dropout off, the dropout layers stay off through the evaluations between steps."""
    prompts = []
    for checkpointing in (False, True):
        model = tiny_gpt2()
        for module in model.base.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.5  # would change the prompt if it ever acted
        task, examples = setup(model)
        run(
            model,
            task,
            examples,
            tmp_path / str(checkpointing),
            validation=examples,
            gradient_checkpointing=checkpointing,
            max_steps=3,
            eval_every=1,
            dropout=False,
        )
        prompts.append(model.bank.weight.detach().clone())
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.base.modules()) == checkpointing
    torch.testing.assert_close(prompts[0], prompts[1])
    assert not torch.equal(prompts[1], tiny_gpt2().initial_prompt("vocab", 8, first_n=40, seed=42))


@pytest.mark.parametrize("dropout", [False, True])
def test_gradient_checkpointing_recomputes_each_layer_in_the_backward_pass(tmp_path, dropout):
    calls = {}
    for checkpointing in (False, True):
        model = tiny_gpt2()
        attention = model.base.transformer.h[0].attn  # inside the checkpointed layer: runs again when recomputed
        attention.register_forward_hook(lambda *args, key=checkpointing: calls.__setitem__(key, calls.get(key, 0) + 1))
        task, examples = setup(model)
        run(
            model,
            task,
            examples,
            tmp_path / str(checkpointing),
            gradient_checkpointing=checkpointing,
            max_steps=2,
            dropout=dropout,
        )
    assert calls == {False: 2, True: 4}
