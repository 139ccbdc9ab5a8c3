"""Model weights stored as pickles (PyTorch's .bin/.pt checkpoints) can run code when read: softprompt loads weights
from safetensors only, unless the user trusts the source (--model.trust_pickle=true)."""

from pathlib import Path

from softprompt.errors import UserError

SAFE = ("*.safetensors", "*.safetensors.index.json")
PICKLED = ("*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt", "*.pkl")
TRUST_HINT = "convert it to safetensors (save_pretrained), or pass --model.trust_pickle=true if you trust its source"


def refuse_pickled_folder(folder: str, name: str) -> None:
    """Refuse a local model folder whose weights are pickles only, naming the file."""
    path = Path(folder)
    if any(next(path.glob(p), None) for p in SAFE):
        return
    pickled = sorted(f.name for p in PICKLED for f in path.glob(p))
    if pickled:
        raise UserError(
            f"model folder {name}: its weights are a pickle ({pickled[0]}), which can run code when loaded and is not loaded by default; {TRUST_HINT}"
        )


def hub_pickle_message(name: str) -> str:
    """A hub model with no safetensors weights, as transformers' refusal under use_safetensors=True says."""
    return f"model {name!r}: its weights on the hub are a pickle (no safetensors file), which can run code when loaded and is not loaded by default; {TRUST_HINT}"
