"""Nested training state (dicts, lists, tuples, tensors, numbers, strings, None) in one safetensors file, so that a
checkpoint is read without unpickling anything: the tensors are the file's tensors, the structure around them is
JSON in its metadata, each tensor there a reference to its key.

JSON alone would lose what optimisers and random generators need back exactly: tuples (random.setstate), dict keys
that are not strings (an optimiser's state is keyed by parameter index) and the difference between a list and a
tuple. Those are tagged.
"""

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

STRUCTURE = "softprompt.state"


def save_state(state, path: str | os.PathLike) -> None:
    """Write `state` to `path` (safetensors), flushed to disk."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(x):
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x.detach().to("cpu").contiguous()
            return {"tensor": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {"dict": {k: encode(v) for k, v in x.items()}}
            return {"pairs": [[encode(k), encode(v)] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return {"tuple" if isinstance(x, tuple) else "list": [encode(v) for v in x]}
        if x is None or isinstance(x, (bool, int, float, str)):
            return {"value": x}
        raise TypeError(f"cannot store a {type(x).__name__} in a state file")

    structure = encode(state)
    save_file(tensors, str(path), metadata={STRUCTURE: json.dumps(structure)})
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def load_state(path: str | os.PathLike):
    """The state `save_state` wrote to `path`; a file that is no such state raises ValueError (or the safetensors
    reader's own error)."""
    with safe_open(str(Path(path)), framework="pt", device="cpu") as f:
        header = f.metadata() or {}
        if STRUCTURE not in header:
            raise ValueError(f"no {STRUCTURE} structure in its header")
        tensors = {key: f.get_tensor(key).clone() for key in f.keys()}  # copies, not views of the mapped file
    try:
        return _decode(json.loads(header[STRUCTURE]), tensors)
    except (AttributeError, TypeError, KeyError, RecursionError) as e:
        raise ValueError(f"its {STRUCTURE} structure is malformed ({type(e).__name__}: {e})") from None


def _decode(structure, tensors: dict):
    def decode(node):
        ((kind, body),) = node.items()
        if kind == "tensor":
            return tensors[body]
        if kind == "dict":
            return {k: decode(v) for k, v in body.items()}
        if kind == "pairs":
            return {decode(k): decode(v) for k, v in body}
        if kind in ("list", "tuple"):
            items = [decode(v) for v in body]
            return tuple(items) if kind == "tuple" else items
        if kind != "value":
            raise TypeError(f"unknown node {kind!r}")
        return body

    return decode(structure)
