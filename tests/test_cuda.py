"""attention.py: the kernel choice, checked on any machine, and bf16 autocast on a left-padded decoder-only batch
keeping the prompt's gradient finite; and training under the shipped FSDP and ZeRO-3 configs. Run where a GPU is
present."""

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import gpt2_tokenizer, save_model, sentiment_rows, tiny_gpt2, trained_prompt
from transformers import LlamaConfig, LlamaForCausalLM

from softprompt.core.attention import finite_attention
from softprompt.core.bank import PromptBank
from softprompt.files.prompt_file import load_prompt
from softprompt.methods import make_method
from softprompt.methods.prompt import PROMPT_FILE
from softprompt.models import model as model_module
from softprompt.models.model import SoftPromptModel
from softprompt.models.tokenising import batch_to
from softprompt.options import DataOptions, MethodOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training import checkpoint
from softprompt.training.train import train

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_pass_on_cuda_leaves_out_cudnn_attention_and_one_elsewhere_changes_nothing(monkeypatch):
    backends = torch.backends.cuda
    before = (
        backends.cudnn_sdp_enabled(),
        backends.flash_sdp_enabled(),
        backends.mem_efficient_sdp_enabled(),
        backends.math_sdp_enabled(),
    )
    with finite_attention(torch.device("cuda")):
        assert not backends.cudnn_sdp_enabled()
        assert backends.flash_sdp_enabled() and backends.mem_efficient_sdp_enabled() and backends.math_sdp_enabled()
    after = (
        backends.cudnn_sdp_enabled(),
        backends.flash_sdp_enabled(),
        backends.mem_efficient_sdp_enabled(),
        backends.math_sdp_enabled(),
    )
    assert after == before
    with finite_attention(torch.device("cpu")):
        assert backends.cudnn_sdp_enabled() == before[0]

    seen = []
    monkeypatch.setattr(
        model_module, "finite_attention", lambda device: seen.append(device) or contextlib.nullcontext()
    )
    model = tiny_gpt2()
    task = make_task(DataOptions(verbalizers={"0": "terrible", "1": "great"}))
    task.prepare(model)
    examples = task.examples(sentiment_rows()[:4], "rows", None)
    model(**task.batch(model, examples), prompt_ids=torch.zeros(4, dtype=torch.long))
    assert seen and all(d == model.bank.weight.device for d in seen)  # every pass of the base model goes through it


def tiny_llama() -> SoftPromptModel:
    torch.manual_seed(0)
    tok = gpt2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="sdpa",
    )
    return SoftPromptModel(LlamaForCausalLM(config), tok, name="tiny-llama").cuda()  # head size 64, as the kernels like


def uneven_rows() -> list[dict]:
    """The sentiment rows at 1x to 4x their length: a batch of them is mostly pads (left padding, decoder-only)."""
    return [{**r, "text": " ".join([r["text"]] * (1 + i % 4))} for i, r in enumerate(sentiment_rows())]


@needs_cuda
def test_bf16_gradients_on_a_left_padded_batch_are_finite():
    model = tiny_llama()
    task = make_task(DataOptions(verbalizers={"0": "terrible", "1": "great"}))
    task.prepare(model)
    rows = uneven_rows()
    batch = batch_to(task.batch(model, task.examples(rows, "rows", None)), "cuda")
    assert (batch["attention_mask"][:, 0] == 0).any()  # left padding
    model.bank = PromptBank(model.initial_prompt("random", 8, seed=1)).cuda()
    model.train()
    for _ in range(3):
        model.bank.weight.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**batch, prompt_ids=torch.zeros(len(rows), dtype=torch.long, device="cuda"))
        out.loss.backward()
        grad = model.bank.weight.grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        with torch.no_grad():
            model.bank.weight -= 0.1 * grad


@needs_cuda
@pytest.mark.parametrize("reparam", ["none", "residual", "ulpt"])
def test_bf16_training_with_gradient_checkpointing_on_a_left_padded_batch(tmp_path, reparam):
    """With gradient checkpointing the backward pass runs each layer's forward again: it must choose the attention
    kernels the forward pass chose (torch stops at recomputed tensors of other shapes otherwise). The reparameterised
    prompts are built on the GPU, where the model's embeddings are."""
    model = tiny_llama()
    task = make_task(DataOptions(verbalizers={"0": "terrible", "1": "great"}))
    rows = uneven_rows()
    extra = {"residual": dict(bottleneck=16), "ulpt": dict(rank=4)}.get(reparam, {})
    method = make_method(MethodOptions(), PromptOptions(length=8, init="random", reparam=reparam, **extra))
    o = TrainOptions(
        max_steps=3,
        batch_size=len(rows),
        micro_batch_size=len(rows),
        eval_every=1000,
        log_every=1,
        precision="bf16",
        gradient_checkpointing=True,
    )
    train(model, method, task, task.examples(rows, "rows", None), None, o, tmp_path, progress=False)
    losses = [json.loads(line)["train/loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert torch.isfinite(load_prompt(tmp_path / PROMPT_FILE).prompt).all()


@needs_cuda
@pytest.mark.parametrize("config", ["accelerate-fsdp.yaml", "accelerate-deepspeed-zero3.yaml"])
def test_the_shipped_sharding_configs_train_a_whole_prompt_checkpoint_and_resume(tmp_path, config):
    """configs/accelerate-fsdp.yaml and accelerate-deepspeed-zero3.yaml on one GPU: accelerate's own FSDP 2 or ZeRO-3
    shards the frozen Llama, the prompt trains whole; a run of 4 steps resumes from its checkpoint to 6 and reaches
    the prompt of an uninterrupted run on the GPU without either (float32, so that only kernel order differs)."""
    folder = save_model(tiny_llama(), tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows() * 4))
    config = Path(__file__).parents[1] / "configs" / config
    options = [
        "train",
        "--model.name",
        folder,
        "--data.train",
        "train.jsonl",
        "--data.validation",
        "train.jsonl",
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        "--prompt.length",
        "8",
        "--prompt.init",
        "random",
        "--train.batch_size",
        "8",
        "--train.eval_every",
        "2",
        "--train.precision",
        "fp32",
    ]

    def run(launcher: list[str], steps: int, output: str, resume: str = "false") -> str:
        command = [
            *launcher,
            "-m",
            "softprompt.cli",
            *options,
            "--train.max_steps",
            str(steps),
            "--train.output_dir",
            output,
            "--train.resume",
            resume,
        ]
        done = subprocess.run(
            command,
            cwd=tmp_path,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    sharded = ["accelerate", "launch", "--config_file", str(config), "--num_processes", "1"]
    run(sharded, 4, "run")
    assert checkpoint.latest(tmp_path / "run").name == "step-00000004"
    assert "resuming from" in run(sharded, 6, "run", "true")
    assert checkpoint.latest(tmp_path / "run").name == "step-00000006"
    assert (tmp_path / "run" / "prompt.safetensors").is_file()
    run([sys.executable], 6, "plain")

    torch.testing.assert_close(
        trained_prompt(tmp_path / "run"), trained_prompt(tmp_path / "plain"), rtol=1e-3, atol=1e-4
    )
