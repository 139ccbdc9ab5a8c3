"""attention.py: the kernel choice, checked on any machine, and bf16 autocast on a left-padded decoder-only batch
keeping the prompt's gradient finite, run where a GPU is present."""

import contextlib

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import gpt2_tokenizer, sentiment_rows, tiny_gpt2
from softprompt import model as model_module
from softprompt.attention import finite_attention
from softprompt.bank import PromptBank
from softprompt.model import SoftPromptModel
from softprompt.options import DataOptions
from softprompt.tasks import make_task

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_pass_on_cuda_leaves_out_cudnn_attention_and_one_elsewhere_changes_nothing(monkeypatch):
    backends = torch.backends.cuda
    before = (backends.cudnn_sdp_enabled(), backends.flash_sdp_enabled(), backends.mem_efficient_sdp_enabled(), backends.math_sdp_enabled())
    with finite_attention(torch.device("cuda")):
        assert not backends.cudnn_sdp_enabled()
        assert backends.flash_sdp_enabled() and backends.mem_efficient_sdp_enabled() and backends.math_sdp_enabled()
    after = (backends.cudnn_sdp_enabled(), backends.flash_sdp_enabled(), backends.mem_efficient_sdp_enabled(), backends.math_sdp_enabled())
    assert after == before
    with finite_attention(torch.device("cpu")):
        assert backends.cudnn_sdp_enabled() == before[0]

    seen = []
    monkeypatch.setattr(model_module, "finite_attention", lambda device: seen.append(device) or contextlib.nullcontext())
    model = tiny_gpt2()
    task = make_task(DataOptions(verbalizers={"0": "terrible", "1": "great"}))
    task.prepare(model)
    examples = task.examples(sentiment_rows()[:4], "rows", None)
    model(**task.batch(model, examples), prompt_ids=torch.zeros(4, dtype=torch.long))
    assert seen and all(d == model.bank.weight.device for d in seen)  # every pass of the base model goes through it


def tiny_llama() -> SoftPromptModel:
    torch.manual_seed(0)
    tok = gpt2_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    return SoftPromptModel(LlamaForCausalLM(config), tok, name="tiny-llama").cuda()  # head size 64, as the kernels like


@needs_cuda
def test_bf16_gradients_on_a_left_padded_batch_are_finite():
    model = tiny_llama()
    task = make_task(DataOptions(verbalizers={"0": "terrible", "1": "great"}))
    task.prepare(model)
    rows = sentiment_rows()
    rows = [{**r, "text": " ".join([r["text"]] * (1 + i % 4))} for i, r in enumerate(rows)]  # lengths 1x to 4x: many pads
    batch = {k: v.cuda() for k, v in task.batch(model, task.examples(rows, "rows", None)).items()}
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
