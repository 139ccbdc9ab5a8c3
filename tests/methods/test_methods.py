"""The comparison methods: each trains only what it says, reports it, saves a result that reloads to the same
predictions; prompt design's shots; combinations that cannot work stop with one line."""

import contextlib
import json
import os
import subprocess

import pytest
import torch
from accelerate import Accelerator
from conftest import BUILDERS, WORDS, gpt2_tokenizer, save_model, sentiment_rows, tiny_gpt2
from transformers import BloomConfig, BloomForCausalLM

from softprompt.cli import main
from softprompt.cli.parser import _method_name_option
from softprompt.errors import UserError
from softprompt.methods import METHODS, make_method
from softprompt.methods.prompt import default_lr
from softprompt.methods.prompt_design import designed_template
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions, MethodOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training.accumulate import backward_accumulated
from softprompt.training.run_output import RESULTS_FILE
from softprompt.training.train import train

VERBALIZERS = {"0": "no", "1": "yes"}
TRAINED = ["prompt", "model", "prefix", "lora", "adapter"]
LR = {
    "prompt": None,
    "model": 1e-3,
    "prefix": 5e-2,
    "lora": 1e-2,
    "adapter": 1e-2,
}  # rates that fit the tiny models fast
REPORT_KEYS = {
    "time",
    "method",
    "model",
    "family",
    "task",
    "trainable_parameters",
    "base_parameters",
    "trainable_percent",
    "bytes_per_task",
    "saved",
    "train_seconds",
    "eval_seconds",
    "peak_memory_bytes",
    "peak_memory_of",
    "processes",
    "distributed",
    "metrics",
    "best_step",
    "steps",
    "stopped_early",
    "config",
}


def setup(model):
    task = make_task(DataOptions(verbalizers=VERBALIZERS))
    examples = task.examples(sentiment_rows(), "rows", None)
    task.prepare(model)
    return task, examples


def run(model, method, task, examples, folder, validation=None, **options):
    o = TrainOptions(**{"max_steps": 3, "batch_size": 10, "micro_batch_size": 10, "eval_every": 1000, **options})
    return train(model, method, task, examples, validation, o, folder, progress=False)


def method_named(name, **options):
    return make_method(MethodOptions(name=name, **options), PromptOptions(length=8, init="vocab", vocab_first_n=40))


def scores(model, task, examples):
    return model.class_scores([e.fields for e in examples], task.label_texts, template=task.template)


def rows(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / RESULTS_FILE).read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_a_short_run_trains_only_what_the_method_says_and_reloads(name, family, tiny, tmp_path, monkeypatch):
    task, examples = setup(tiny)
    method = method_named(name)
    prepared = {}

    def prepare_and_remember(model, *args):  # the weights as training starts, added modules included
        type(method).prepare(method, model, *args)
        prepared.update({n: p.detach().clone() for n, p in model.named_parameters()})

    monkeypatch.setattr(method, "prepare", prepare_and_remember)
    steps = 5 if name == "prompt" else 30  # test_training.py follows the prompt's loss
    result = run(
        tiny,
        method,
        task,
        examples,
        tmp_path,
        validation=examples,
        max_steps=steps,
        eval_every=steps,
        log_every=1,
        lr=LR[name],
    )

    trained = {id(p) for p in method.parameters(tiny)}
    after = dict(tiny.named_parameters())
    changed = {n for n in prepared if not torch.equal(prepared[n], after[n])}
    frozen = {n for n, p in after.items() if id(p) not in trained}
    assert trained and not changed & frozen, f"frozen weights changed: {sorted(changed & frozen)[:3]}"
    assert changed == set(after) - frozen, (
        f"trained weights that did not change: {sorted(set(after) - frozen - changed)[:3]}"
    )
    if name == "model":
        assert frozen <= {"bank.weight"}  # every weight of the base model trained
    report = result.report
    assert report["trainable_parameters"] == sum(after[n].numel() for n in changed)
    base = BUILDERS[family]().base_parameters()  # the model before any method touched it
    assert report["base_parameters"] == base and report["trainable_percent"] == pytest.approx(
        100 * report["trainable_parameters"] / base
    )
    assert rows(tmp_path) == [json.loads(json.dumps(report))]
    assert (
        REPORT_KEYS <= set(report)
        and report["method"] == name
        and report["steps"] == steps
        and report["task"] == "classification"
    )
    assert (report["processes"], report["distributed"]) == (1, "NO")
    assert report["metrics"] == result.metrics and set(result.metrics) == {"accuracy", "macro_f1"}
    assert (
        report["bytes_per_task"] == method.stored_bytes(tmp_path) > 0
        and report["peak_memory_of"] == "rss"
        and report["peak_memory_bytes"] >= 0
    )
    assert (
        set(report["config"]) == {"model", "method", "prompt", "data", "train"}
        and report["config"]["method"]["name"] == name
    )
    assert report["config"]["train"]["lr"] == (default_lr(BUILDERS[family]()) if name == "prompt" else LR[name])
    if name != "prompt":
        losses = [
            r["train/loss"]
            for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if "train/loss" in r
        ]
        assert losses[-1] < 0.7 * losses[0], losses  # at most 0.52 seen over three seeds

    expected = scores(tiny, task, examples)
    reloaded = make_method(MethodOptions(name=name)).load(BUILDERS[family](), tmp_path)
    torch.testing.assert_close(scores(reloaded, task, examples), expected, rtol=1e-4, atol=1e-4)


def test_method_defaults_apply_where_the_options_are_left_at_theirs():
    model = BUILDERS["decoder-only"]()
    o = make_method(MethodOptions(name="model")).training_options(model, TrainOptions())
    assert (o.optimizer, o.lr, o.weight_decay) == ("adamw", 5e-5, 0.0)
    assert make_method(MethodOptions(name="lora")).training_options(model, TrainOptions()).lr == 5e-4
    assert make_method(MethodOptions(name="prefix")).training_options(model, TrainOptions()).lr == 1e-2
    given = make_method(MethodOptions(name="lora")).training_options(model, TrainOptions(lr=0.1, weight_decay=0.01))
    assert (given.lr, given.weight_decay) == (0.1, 0.01)
    prompt = make_method(MethodOptions()).training_options(model, TrainOptions())
    assert (prompt.optimizer, prompt.lr, prompt.weight_decay) == ("adafactor", default_lr(model), 1e-5)


def test_adapters_start_near_the_frozen_model(tiny):
    task, examples = setup(tiny)
    plain = scores(tiny, task, examples)
    method = method_named("adapter")
    method.prepare(tiny, task, examples, 0)
    adapted = scores(tiny, task, examples)
    assert not torch.equal(adapted, plain)  # the adapters run
    torch.testing.assert_close(adapted, plain, rtol=0.02, atol=0.02)
    assert (
        len(tiny.adapters) == {"encoder-decoder": 10, "decoder-only": 4, "encoder-only": 4}[tiny.family]
    )  # T5: cross-attention too


def test_lora_micro_batches_give_the_full_batchs_gradient(tmp_path):
    model = BUILDERS["encoder-decoder"]()
    task, examples = setup(model)
    method = method_named("lora")
    method.prepare(model, task, examples, 0)
    params = method.parameters(model)
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.1)  # lora_B starts at zero, which would leave lora_A without a gradient
    ids = lambda rows: torch.zeros(len(rows), dtype=torch.long)  # noqa: E731

    def gradient(micro):
        for p in params:
            p.grad = None
        batches = [
            {**task.batch(model, examples[i : i + micro]), "prompt_ids": ids(examples[i : i + micro])}
            for i in range(0, len(examples), micro)
        ]
        backward_accumulated(model, batches, Accelerator(cpu=True), contextlib.nullcontext, 1, params)
        return torch.cat([p.grad.flatten() for p in params])

    full = gradient(len(examples))
    for micro in (1, 3, 4):
        assert (gradient(micro) - full).norm() / full.norm() < 1e-5


def test_ctrl_c_keeps_the_method_result_as_it_stood(tmp_path, capsys):
    model = BUILDERS["decoder-only"]()
    task, examples = setup(model)
    calls = []

    def interrupt_in_step_3(module, args, out):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    model.base.register_forward_hook(interrupt_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(model, method_named("lora"), task, examples, tmp_path, max_steps=10)
    saved = json.loads((tmp_path / "lora" / "method.json").read_text())
    assert saved["step"] == 2 and saved["interrupted"] is True and saved["method"] == "lora"
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file() and not (tmp_path / RESULTS_FILE).exists()
    assert (
        f"interrupted after step 2: saved the LoRA adapter as it stood (not evaluated) to {tmp_path / 'lora'}"
        in capsys.readouterr().err
    )


# ----- prompt design ------------------------------------------------------------------------------------


def test_prompt_design_puts_k_shots_then_the_input(tiny):
    task, examples = setup(tiny)
    method = method_named("prompt-design", shots=3, instruction="say yes or no")
    method.prepare(tiny, task, examples, 7)
    text = designed_template(task).render(method.inputs(tiny, task, [{"": "the film"}])[0])
    lines = text.split("\n")
    shots = [f"{e.input} {e.target}" for e in examples]
    assert lines[0] == "say yes or no" and lines[-1] == "the film" and len(lines) == 5
    assert all(line in shots for line in lines[1:4]) and len(set(lines[1:4])) == 3
    again = method_named("prompt-design", shots=3)
    again.prepare(tiny, task, examples, 7)
    assert [e.input for e in again.shots] == [e.input for e in method.shots]  # drawn with the seed


@pytest.mark.parametrize("family", ["decoder-only", "encoder-only"])
def test_shots_that_do_not_fit_are_dropped_not_the_input(tiny):
    """128 positions: three shots of 36 words cannot all sit beside an input of 30 words, but beside a short one."""
    task = make_task(DataOptions(verbalizers=VERBALIZERS))
    long_rows = [{"text": " ".join(WORDS[i : i + 35]), "label": i % 2} for i in range(3)]
    examples = task.examples(long_rows, "rows", None)
    task.prepare(tiny)
    method = method_named("prompt-design", shots=3)
    method.prepare(tiny, task, examples, 0)
    long_input, short_input = " ".join(WORDS[:30]), "fun"
    texts = [
        designed_template(task).render(fields)
        for fields in method.inputs(tiny, task, [{"": long_input}, {"": short_input}])
    ]
    kept = [text.count("\n") for text in texts]
    assert kept[0] < 3 and kept[0] < kept[1]
    assert texts[0].endswith("\n" + long_input) and method.fewer >= 1
    batch = tiny.tokenize(
        [{"": long_input, "_context": texts[0].removesuffix(long_input)}], template=designed_template(task)
    )
    assert tiny.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True).endswith(long_input)  # not cut


def test_prompt_design_evaluates_and_saves_the_design(tmp_path):
    model = BUILDERS["decoder-only"]()
    task, examples = setup(model)
    result = run(
        model,
        method_named("prompt-design", shots=2, instruction="answer"),
        task,
        examples,
        tmp_path,
        validation=examples,
    )
    report = result.report
    assert report["trainable_parameters"] == 0 and report["steps"] == 0 and report["shots"] == 2
    assert set(report["metrics"]) == {"accuracy", "macro_f1"} and rows(tmp_path)[0]["method"] == "prompt-design"
    design = json.loads((tmp_path / "design.json").read_text())
    assert design["instruction"] == "answer" and len(design["shots"]) == 2
    assert report["bytes_per_task"] == (tmp_path / "design.json").stat().st_size
    with pytest.raises(UserError, match="--data.validation"):
        run(model, method_named("prompt-design"), task, examples, tmp_path / "none")
    with pytest.raises(UserError, match="--method.shots 11: the training data has only 10 rows"):
        run(model, method_named("prompt-design", shots=11), task, examples, tmp_path / "many", validation=examples)


# ----- what cannot work, and the command --------------------------------------------------------------------


@pytest.mark.parametrize("family", ["encoder-decoder", "decoder-only"])
def test_prefix_tuning_cannot_generate_and_says_so_in_one_line(tmp_path, model_folder, family, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"input": "what is red", "target": "sun"}\n')
    argv = [
        "train",
        "--model.name",
        model_folder,
        "--data.task=text2text",
        f"--data.train={data}",
        "--train.max_steps=1",
        f"--train.output_dir={tmp_path / 'run'}",
    ]
    assert main([*argv, "--method", "prefix"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"error: --method prefix: peft's prefix tuning cannot generate text from input embeddings on a {family} model; use a classification task or another method\n"
    )
    assert not (tmp_path / "run").exists()


def test_adapters_refuse_an_architecture_they_do_not_know(tmp_path):
    tok = gpt2_tokenizer()
    bloom = BloomForCausalLM(BloomConfig(vocab_size=len(tok), hidden_size=16, n_layer=1, n_head=2)).eval()
    model = SoftPromptModel(bloom, tok, "decoder-only", name="tiny-bloom")
    task, examples = setup(model)
    with pytest.raises(
        UserError,
        match=r"^--method adapter: cannot find the attention and feed-forward output projections of a bloom model \(decoder-only\)$",
    ):
        run(model, method_named("adapter"), task, examples, tmp_path)
    assert not tmp_path.joinpath("metrics.jsonl").exists()


def test_method_options_are_checked():
    with pytest.raises(UserError, match="--method.shots must be at least 0"):
        make_method(MethodOptions(name="prompt-design", shots=-1))
    with pytest.raises(UserError, match="--method.lora_rank must be at least 1"):
        make_method(MethodOptions(name="lora", lora_rank=0))
    with pytest.raises(UserError, match="unknown method 'nope'"):
        make_method(MethodOptions(name="nope"))


def test_method_name_on_the_command_line():
    assert _method_name_option(["train", "--method", "lora", "--method.lora_rank=4"]) == [
        "train",
        "--method.name=lora",
        "--method.lora_rank=4",
    ]
    assert _method_name_option(["train", "--method=prompt-design"]) == ["train", "--method.name=prompt-design"]
    assert _method_name_option(["train", "--method", "m.yaml"]) == ["train", "--method=m.yaml"]  # a recipe section
    assert _method_name_option(["eval", "--method", "lora"]) == ["eval", "--method", "lora"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder-only"])
def test_train_command_with_a_method(tmp_path, model_folder, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    out = tmp_path / "run"
    argv = [
        "train",
        "--model.name",
        model_folder,
        f"--data.train={data}",
        f"--data.validation={data}",
        '--data.verbalizers={"0": "no", "1": "yes"}',
    ]
    argv += ["--train.max_steps=2", "--train.batch_size=10", f"--train.output_dir={out}"]
    assert main([*argv, "--method", "lora", "--method.lora_rank=4"]) == 0
    printed = capsys.readouterr().out
    assert "method: lora" in printed and "trainable parameters: 1,024 of" in printed and "stored per task:" in printed
    assert (
        f"saved: {out / 'lora'}" in printed and f"report: {out / RESULTS_FILE}" in printed and "peak memory:" in printed
    )
    assert main([*argv, "--method", "model"]) == 0  # a second run in the folder replaces the first, and adds its row
    assert [r["method"] for r in rows(out)] == ["lora", "model"] and rows(out)[0]["config"]["method"]["lora_rank"] == 4
    assert (out / "model" / "model.safetensors").is_file() and not (out / "lora").exists()
    assert SoftPromptModel.load(str(out / "model")).family == "encoder-only"


def test_every_method_is_registered_under_its_own_output():
    assert list(METHODS) == ["prompt", "model", "prompt-design", "prefix", "lora", "adapter"]
    assert len({m.output for m in METHODS.values()}) == len(METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model", "adapter"])
def test_two_processes_train_with_a_method(name, tmp_path):
    """Under torchrun (gloo): every trained parameter gets a gradient on every process, one report is written."""
    folder = save_model(tiny_gpt2(), tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows() * 4))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        "torchrun",
        "--nproc_per_node",
        "2",
        "-m",
        "softprompt.cli",
        "train",
        "--method",
        name,
        "--model.name",
        folder,
        "--data.train",
        "train.jsonl",
        "--data.validation",
        "train.jsonl",
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        "--train.max_steps",
        "4",
        "--train.batch_size",
        "16",
        "--train.micro_batch_size",
        "4",
        "--train.output_dir",
        "run",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("saved: ") == 1 and [r["steps"] for r in rows(tmp_path / "run")] == [4]
