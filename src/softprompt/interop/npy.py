"""The official prompt-tuning prompts (google-research/prompt-tuning): a .npy file holding one float32 (P, H) array,
such as the released (100, 768) prompts for T5 1.1 LM-adapted base. Read with allow_pickle=False: no pickle is loaded.
"""

from pathlib import Path

import numpy as np
import torch

from softprompt.errors import UserError, first_line
from softprompt.files.integrity import sha256_of
from softprompt.interop import Imported

MAGIC = b"\x93NUMPY"


def read_npy(path: Path) -> Imported:
    """The (P, H) prompt in a .npy file; refuses pickled (object) arrays, other files and arrays not of two dimensions."""
    array = _load(path)
    if array.dtype.kind != "f":
        raise UserError(f"{path}: holds {array.dtype} values, expected floats (a float32 length x hidden array)")
    if array.ndim != 2 or 0 in array.shape:
        raise UserError(f"{path}: the array has shape {array.shape}, expected (length, hidden)")
    prompt = torch.from_numpy(array.astype(np.float32))  # (P, H)
    if not torch.isfinite(prompt).all():
        raise UserError(f"{path}: the prompt holds NaN or infinite values")
    source = {"path": str(path.resolve()), "format": "npy", "sha256": sha256_of(path), "dtype": str(array.dtype)}
    return Imported(prompt, source)


def _load(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:  # numpy.load would take such a file for a pickle, or an .npz archive
            raise UserError(f"{path}: not a .npy file (no NumPy header)")
        f.seek(0)
        try:
            return np.lib.format.read_array(f, allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise UserError(f"{path}: holds Python objects (a pickle), which softprompt never loads") from None
            raise UserError(f"{path}: not a readable .npy file ({first_line(e)})") from None
        except (OSError, EOFError) as e:
            raise UserError(f"{path}: not a readable .npy file ({first_line(e)})") from None
