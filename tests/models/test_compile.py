"""--model.compile: the frozen model run through torch.compile gives the eager model's losses, gradients and
predictions at two batch lengths (dynamic shapes). The three families are traced with the aot_eager backend (the
graphs softprompt hands the compiler, without generating kernels, which takes a minute per family on 2 cores); the
option itself, with inductor's kernels, runs on the encoder-only model."""

import pytest
import torch
from conftest import BUILDERS, save_model, sentiment_rows

from softprompt.core.bank import PromptBank
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions
from softprompt.tasks import make_task

pytestmark = pytest.mark.slow  # compiles a model per family


def loss_and_gradient(model: SoftPromptModel, task, examples) -> tuple[torch.Tensor, torch.Tensor]:
    model.bank.weight.grad = None
    batch = task.batch(model, examples)
    out = model(**batch, prompt_ids=torch.zeros(len(examples), dtype=torch.long))
    out.loss.backward()
    return out.loss.detach(), model.bank.weight.grad.clone()


@pytest.mark.parametrize(
    "family, backend",
    [
        ("encoder-decoder", "aot_eager"),
        ("decoder-only", "aot_eager"),
        ("encoder-only", "aot_eager"),
        ("encoder-only", None),
    ],
)
def test_a_compiled_model_computes_what_the_eager_one_does(family, backend, tmp_path):
    folder = save_model(BUILDERS[family](), tmp_path / "model")
    eager = SoftPromptModel.load(folder)
    if backend is None:  # the option: inductor
        compiled = SoftPromptModel.load(folder, compile=True)
    else:
        compiled = SoftPromptModel.load(folder)
        compiled.base.compile(dynamic=True, backend=backend)
    prompt = eager.initial_prompt("vocab", 4, first_n=40)
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    rows = task.examples(sentiment_rows(), "rows", None)
    short, long = rows[:4], [*rows[4:7], task.examples([{"text": "great " * 9, "label": 1}], "rows", None)[0]]
    for model in (eager, compiled):
        model.bank = PromptBank(prompt.clone())
        model.train()
        task.prepare(model)
    for examples in (short, long):
        (loss_e, grad_e), (loss_c, grad_c) = (loss_and_gradient(m, task, examples) for m in (eager, compiled))
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grad_c, grad_e, rtol=1e-3, atol=1e-5)
        assert grad_e.abs().sum() > 0
    for model in (eager, compiled):
        model.eval()
    texts = [e.fields for e in rows]
    assert task.predict_all(compiled, texts, progress=False) == task.predict_all(eager, texts, progress=False)
    assert compiled.base._compiled_call_impl is not None  # the compiled path, not a silent fallback to eager
