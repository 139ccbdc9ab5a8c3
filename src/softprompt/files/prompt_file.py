"""The prompt file: a safetensors file holding one (P, H) float32 tensor plus JSON metadata; a DePT prompt adds its
(N, H) input offset (dept.py) as a second tensor.

The metadata says which model the prompt belongs to (name, width, vocabulary size and a fingerprint of the
input-embedding matrix, the same for its fp32, bf16 and fp16 copies), how it was made (initialiser, task, training
settings) and how well it did.
"""

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from softprompt.checks import MAX_TARGET_LENGTH
from softprompt.core.families import FAMILIES
from softprompt.core.template import Template
from softprompt.errors import UserError, first_line
from softprompt.files.atomic import atomic_path
from softprompt.options import TASK_NAMES

FORMAT = "softprompt"
FORMAT_VERSION = 1
TENSOR_NAME = "prompt"
OFFSET_NAME = "input_offset"


@dataclass
class PromptFile:
    prompt: torch.Tensor  # (P, H) float32
    metadata: dict[str, Any] = field(default_factory=dict)
    offset: torch.Tensor | None = None  # (N, H) float32: DePT's offset to the first N input embeddings

    @property
    def length(self) -> int:
        return self.prompt.shape[0]

    @property
    def hidden(self) -> int:
        return self.prompt.shape[1]


# The fingerprint: the L2 norms of a few rows spread evenly over the vocabulary. Rounding a row to bf16 (fp16) moves
# each value, and so the row's norm, by at most 2^-8 (2^-11) of itself, so copies of one model in fp32, bf16 and fp16
# agree well within the tolerance, while models with other weights differ by far more. A hash of rounded values
# cannot promise this: rounding boundaries always flip some values.
FINGERPRINT_ROWS = 64
NORM_TOLERANCE = 0.01  # relative
NORM_FLOOR = 1e-5  # absolute, for rows that are all zero (a padding row) or nearly so
LEGACY = re.compile(r"[0-9a-f]{16}")  # the hash that earlier prompt files hold


class Fingerprint(str):
    """An embedding fingerprint as prompt files store it ("norms:0.81234,0.79321,..."), carrying the legacy hash of
    the same embeddings so that older prompt files can still be checked."""

    legacy = ""


def embedding_fingerprint(embeddings: torch.Tensor, rows: int = FINGERPRINT_ROWS) -> Fingerprint:
    """The norms of `rows` rows of the input-embedding matrix (V, H), spread evenly, to 5 significant digits."""
    weights = embeddings.detach()
    n, last = min(rows, weights.shape[0]), weights.shape[0] - 1
    index = torch.tensor([i * last // max(n - 1, 1) for i in range(n)], device=weights.device)
    norms = weights[index].float().norm(dim=1).cpu()
    fingerprint = Fingerprint("norms:" + ",".join(f"{x:.5g}" for x in norms.tolist()))
    fingerprint.legacy = legacy_fingerprint(weights)
    return fingerprint


def legacy_fingerprint(embeddings: torch.Tensor, rows: int = 256) -> str:
    """The fingerprint of earlier prompt files: a hash of bf16-rounded sampled rows (fp16 copies do not match it)."""
    index = torch.linspace(0, embeddings.shape[0] - 1, steps=min(rows, embeddings.shape[0])).long()
    sample = embeddings.detach()[index].to("cpu", torch.bfloat16).float().contiguous()
    return hashlib.sha256(sample.numpy().tobytes()).hexdigest()[:16]


def fingerprint_difference(expected: str, actual: str) -> str | None:
    """How the embeddings fingerprinted by `expected` (from a prompt file) differ from `actual`; None when they match."""
    expected = str(expected)
    if LEGACY.fullmatch(expected):
        legacy = getattr(actual, "legacy", actual)
        return None if expected == legacy else f"fingerprint {expected} != {legacy}"
    ours, theirs = _norms(expected), _norms(actual)
    if ours is None or theirs is None:
        return f"unreadable fingerprint {(expected if ours is None else actual)[:40]!r}"
    if len(ours) != len(theirs):
        return f"{len(ours)} sampled rows against {len(theirs)}: the vocabularies differ in size"
    worst = max(abs(a - b) / max(a, b, NORM_FLOOR / NORM_TOLERANCE) for a, b in zip(ours, theirs))
    return None if worst <= NORM_TOLERANCE else f"row norms differ by up to {100 * worst:.1f}%"


def _norms(fingerprint: str) -> list[float] | None:
    kind, _, values = fingerprint.partition(":")
    try:
        return [float(v) for v in values.split(",")] if kind == "norms" else None
    except ValueError:
        return None


def save_prompt(
    path: str | os.PathLike, prompt: torch.Tensor, metadata: dict[str, Any], offset: torch.Tensor | None = None
) -> Path:
    """Write `prompt` (P, H), its input `offset` (N, H) if any, and `metadata` atomically; returns the path."""
    tensors = {TENSOR_NAME: prompt} if offset is None else {TENSOR_NAME: prompt, OFFSET_NAME: offset}
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    prompt = tensors[TENSOR_NAME]
    meta = {**metadata, "format_version": FORMAT_VERSION, "length": prompt.shape[0], "hidden_size": prompt.shape[1]}
    if offset is not None:
        meta["input_offset_positions"] = offset.shape[0]
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "metadata": json.dumps(meta)})
        tmp.write_bytes(in_fixed_order(tmp.read_bytes()))  # a prompt file is small: rewritten whole
    return path


def in_fixed_order(data: bytes) -> bytes:
    """safetensors bytes with the header's keys sorted. safetensors writes its metadata map in the order of a hash map
    seeded per process, so the same prompt and metadata would otherwise make files that differ byte for byte."""
    n = int.from_bytes(data[:8], "little")  # the format: an 8-byte length, a JSON header, then the tensors' bytes
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the tensors' bytes stay 8-byte aligned; their offsets are after the header
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


def load_prompt(path: str | os.PathLike) -> PromptFile:
    """Read a prompt file, refusing anything that is not one, in one line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a prompt file")
    if not path.is_file():
        raise UserError(f"{path}: no such prompt file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get("format") != FORMAT or TENSOR_NAME not in f.keys():
                raise UserError(
                    f"{path}: not a softprompt prompt file (no '{TENSOR_NAME}' tensor with softprompt metadata)"
                )
            tensors = {name: f.get_slice(name).get_dtype() for name in f.keys() if name in (TENSOR_NAME, OFFSET_NAME)}
            for name, dtype in tensors.items():
                if dtype != "F32":
                    raise UserError(f"{path}: the {name} tensor is stored as {dtype}, expected F32 (float32)")
            # copies: safetensors hands out views of the mapped file, which a rewrite in place would change under us
            prompt = f.get_tensor(TENSOR_NAME).clone()
            offset = f.get_tensor(OFFSET_NAME).clone() if OFFSET_NAME in tensors else None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({_safetensors_reason(path, e)})") from None
    try:
        metadata = json.loads(header["metadata"])
    except (KeyError, ValueError, RecursionError):
        raise UserError(f"{path}: its metadata is not valid JSON") from None
    check_metadata(metadata, path)
    if prompt.dim() != 2 or 0 in prompt.shape:
        raise UserError(
            f"{path}: the prompt tensor has shape {tuple(prompt.shape)}, expected (length, hidden), neither 0"
        )
    if not torch.isfinite(prompt).all():
        raise UserError(f"{path}: the prompt holds NaN or infinite values")
    if offset is not None and (
        offset.dim() != 2 or offset.shape[1] != prompt.shape[1] or not torch.isfinite(offset).all()
    ):
        raise UserError(
            f"{path}: the input offset has shape {tuple(offset.shape)} or non-finite values, expected finite (positions, {prompt.shape[1]})"
        )
    for key, size in (("length", prompt.shape[0]), ("hidden_size", prompt.shape[1])):
        if metadata.get(key, size) != size:
            raise UserError(
                f"{path}: its metadata says {key} {_short(metadata[key])}, but the prompt tensor has {size}"
            )
    return PromptFile(prompt, metadata, offset)


def _safetensors_reason(path: Path, error: Exception) -> str:
    """Why a file is no safetensors file: empty, a pickle (what torch.save writes, never loaded here), or the reader's word."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return (
            "it is a pickle, as torch.save writes; prompts are read only from safetensors files, nothing is unpickled"
        )
    return first_line(error)


TASK_FIELDS = {"type": str, "template": str, "verbalizers": dict, "max_input_length": int, "max_target_length": int}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_metadata(metadata, path: Path) -> None:
    """Refuse metadata that would be used wrongly: not an object, a newer format, or a field this softprompt reads
    (base_model, family, the task's settings, ...) of the wrong type."""
    if not isinstance(metadata, dict):
        raise UserError(f"{path}: its metadata is not a JSON object")
    version = metadata.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{path}: its metadata field 'format_version' is {_short(version)}, expected an integer")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: format version {version} is newer than this softprompt reads ({FORMAT_VERSION})")
    for key in ("base_model", "embedding_fingerprint"):
        if not isinstance(metadata.get(key, ""), str):
            raise UserError(f"{path}: its metadata field {key!r} is {_short(metadata[key])}, expected a string")
    if metadata.get("family") is not None and metadata["family"] not in FAMILIES:
        raise UserError(
            f"{path}: its metadata field 'family' is {_short(metadata['family'])}, expected one of {', '.join(FAMILIES)}"
        )
    task = metadata.get("task", {})
    if not isinstance(task, dict):
        raise UserError(f"{path}: its metadata field 'task' is {_short(task)}, expected an object")
    for key, kind in TASK_FIELDS.items():
        value = task.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise UserError(f"{path}: its metadata field 'task.{key}' is {_short(value)}, expected {kind.__name__}")
    for key in ("max_input_length", "max_target_length"):
        if task.get(key) is not None and task[key] < 1:
            raise UserError(f"{path}: its metadata field 'task.{key}' is {task[key]}, expected at least 1")
    if task.get("max_target_length", 0) > MAX_TARGET_LENGTH:  # an answer that long generates for minutes
        raise UserError(
            f"{path}: its metadata field 'task.max_target_length' is {task['max_target_length']}, expected at most {MAX_TARGET_LENGTH}"
        )
    if not all(isinstance(v, str) for v in task.get("verbalizers", {}).values()):
        raise UserError(f"{path}: its metadata field 'task.verbalizers' holds a label text that is not a string")
    if task.get("type") is not None and task["type"] not in TASK_NAMES:
        raise UserError(
            f"{path}: its task {_short(task['type'])} is not one this softprompt knows ({', '.join(TASK_NAMES)})"
        )
    if task.get("template") is not None:
        try:
            Template(task["template"])
        except UserError as e:
            raise UserError(
                f"{path}: its task's template cannot be used ({str(e).removeprefix('--data.template: ')})"
            ) from None


def check_compatible(
    prompt: PromptFile, hidden: int, fingerprint: str, source: str, allow_other_model: bool = False
) -> None:
    """Refuse a prompt made for a model of another width or (unless allowed) other input embeddings."""
    if prompt.hidden != hidden:
        raise UserError(
            f"{source}: prompt width {prompt.hidden} does not match the model's hidden size {hidden} "
            f"(the prompt was trained on {prompt.metadata.get('base_model', 'another model')})"
        )
    expected = prompt.metadata.get("embedding_fingerprint")
    difference = fingerprint_difference(expected, fingerprint) if expected and not allow_other_model else None
    if difference:
        raise UserError(
            f"{source}: the prompt was trained on {prompt.metadata.get('base_model', 'another model')} whose input embeddings "
            f"differ from this model's ({difference}); pass --allow_other_model to use it anyway"
        )
