"""The prompt file: a safetensors file holding one (P, H) float32 tensor plus JSON metadata.

The metadata says which model the prompt belongs to (name, width, vocabulary size and a fingerprint of the
input-embedding matrix), how it was made (initialiser, task, training settings) and how well it did.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from softprompt.errors import UserError
from softprompt.files import atomic_path

FORMAT = "softprompt"
FORMAT_VERSION = 1
TENSOR_NAME = "prompt"


@dataclass
class PromptFile:
    prompt: torch.Tensor  # (P, H) float32
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.prompt.shape[0]

    @property
    def hidden(self) -> int:
        return self.prompt.shape[1]


def embedding_fingerprint(embeddings: torch.Tensor, rows: int = 256) -> str:
    """A short hash of the input-embedding matrix (V, H), the same whether the model is loaded in fp32 or bf16."""
    index = torch.linspace(0, embeddings.shape[0] - 1, steps=min(rows, embeddings.shape[0])).long()
    sample = embeddings.detach()[index].to("cpu", torch.bfloat16).float().contiguous()
    return hashlib.sha256(sample.numpy().tobytes()).hexdigest()[:16]


def save_prompt(path: str | os.PathLike, prompt: torch.Tensor, metadata: dict[str, Any]) -> Path:
    """Write `prompt` (P, H) and `metadata` atomically; returns the path."""
    prompt = prompt.detach().to("cpu", torch.float32).contiguous()
    meta = {**metadata, "format_version": FORMAT_VERSION, "length": prompt.shape[0], "hidden_size": prompt.shape[1]}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({TENSOR_NAME: prompt}, str(tmp), metadata={"format": FORMAT, "metadata": json.dumps(meta)})
    return path


def load_prompt(path: str | os.PathLike) -> PromptFile:
    """Read a prompt file, refusing anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such prompt file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT or TENSOR_NAME not in f.keys():
                raise UserError(f"{path}: not a softprompt prompt file (no '{TENSOR_NAME}' tensor with softprompt metadata)")
            prompt = f.get_tensor(TENSOR_NAME).float()
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        metadata = json.loads(header["metadata"])
    except (KeyError, json.JSONDecodeError):
        raise UserError(f"{path}: its metadata is not valid JSON") from None
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path}: format version {metadata['format_version']} is newer than this softprompt reads ({FORMAT_VERSION})")
    if prompt.dim() != 2:
        raise UserError(f"{path}: the prompt tensor has shape {tuple(prompt.shape)}, expected (length, hidden)")
    return PromptFile(prompt, metadata)


def check_compatible(prompt: PromptFile, hidden: int, fingerprint: str, source: str, allow_other_model: bool = False) -> None:
    """Refuse a prompt made for a model of another width or (unless allowed) other input embeddings."""
    if prompt.hidden != hidden:
        raise UserError(
            f"{source}: prompt width {prompt.hidden} does not match the model's hidden size {hidden} "
            f"(the prompt was trained on {prompt.metadata.get('base_model', 'another model')})"
        )
    expected = prompt.metadata.get("embedding_fingerprint")
    if expected and expected != fingerprint and not allow_other_model:
        raise UserError(
            f"{source}: the prompt was trained on {prompt.metadata.get('base_model', 'another model')} whose input embeddings "
            f"differ from this model's (fingerprint {expected} != {fingerprint}); pass --allow_other_model to use it anyway"
        )
