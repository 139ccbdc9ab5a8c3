"""Attention kernels that keep a padded batch's gradients finite on CUDA.

In a left-padded decoder-only batch the pad positions are query rows that may attend to nothing (the causal mask
and the padding mask together). PyTorch's cuDNN attention kernel, which it prefers on recent NVIDIA GPUs, returns NaN
from its backward pass for such rows under bf16 autocast (seen on an H100 with torch 2.11: the prompt's gradient turned
NaN within a few steps of SmolLM2 prompt tuning). The memory-efficient, flash and math kernels stay finite there, so a
model pass on CUDA leaves cuDNN's kernel out; elsewhere nothing changes.
"""

import contextlib

import torch


def finite_attention(device: torch.device):
    """A context for one model pass on `device`: on CUDA, scaled-dot-product attention without the cuDNN kernel."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
