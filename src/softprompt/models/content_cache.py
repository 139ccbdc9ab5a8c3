"""What the frozen model computes for a prompt, kept for reuse: entries keyed by what they are made of (the prompt's
values and whatever else went in), the most recently used kept, all dropped when the frozen weights change (moved,
cast, trained or wrapped). Used for decoder-only prompt keys/values (prefix_cache.py) and encoder-only label
anchors (anchor_cache.py); inference only, never training."""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch


class ContentCache:
    """Up to `capacity` entries holding at most `max_bytes` of tensors (None: no bound), least recently used dropped
    first."""

    def __init__(self, capacity: int, max_bytes: int | None = None):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.hits = self.misses = 0
        self.bytes = 0  # held by the entries' tensors
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._weights: tuple | None = None  # the model state the entries belong to
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def forget_if_changed(self, model) -> None:
        """Drop every entry when the model's weights (all but its prompt bank) are not those they were computed with."""
        weights = weights_state(model)
        with self._lock:
            if weights != self._weights:
                self._entries.clear()
                self.bytes = 0
                self._weights = weights

    def lookup(self, key: str) -> tuple[bool, Any]:
        """(found, entry), counting a hit or a miss."""
        with self._lock:
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return True, self._entries[key]
            self.misses += 1
            return False, None

    def store(self, key: str, entry: Any) -> None:
        """Keep `entry`, dropping the least recently used past the bounds; one larger than `max_bytes` is not kept."""
        if self.max_bytes is not None and tensor_bytes(entry) > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self.bytes -= tensor_bytes(self._entries.pop(key))
            self._entries[key] = entry
            self.bytes += tensor_bytes(entry)
            while self._entries and (
                len(self._entries) > self.capacity or (self.max_bytes is not None and self.bytes > self.max_bytes)
            ):
                self.bytes -= tensor_bytes(self._entries.popitem(last=False)[1])

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        found, entry = self.lookup(key)
        if not found:
            entry = compute()
            self.store(key, entry)
        return entry


def tensor_bytes(entry: Any) -> int:
    """Bytes of the tensors in an entry (a tensor, None, or a tuple or list of them): their own, not those of a
    larger tensor they may view."""
    if isinstance(entry, torch.Tensor):
        return entry.nbytes
    if isinstance(entry, tuple | list):
        return sum(tensor_bytes(part) for part in entry)
    return 0


def digest(prompt: torch.Tensor, *more) -> str:
    """What an entry is made of: the prompt's values (float32) and shape, and `more` (token ids, texts, the
    autocast state: a bf16 pass's outputs are not a float32 pass's)."""
    h = hashlib.sha256(prompt.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(repr((tuple(prompt.shape), *more)).encode())
    return h.hexdigest()


def autocast_state(device: torch.device) -> tuple:
    """Whether autocast is on for `device`, and at which dtype."""
    on = torch.is_autocast_enabled(device.type)
    return (on, str(torch.get_autocast_dtype(device.type)) if on else None)


def weights_state(model) -> tuple:
    """Changes when the weights a prompt runs through do: another base module, device or dtype, or any in-place
    update of a weight of the model outside its prompt bank (the base model's, or those of modules beside it, such
    as adapters, which run as hooks on it). The prompts themselves are part of each entry's key."""
    weight = model.base.get_input_embeddings().weight
    bank = {id(p) for p in model.bank.parameters()}
    return id(model.base), weight.device, weight.dtype, sum(p._version for p in model.parameters() if id(p) not in bank)
