"""PEFT prompt-tuning adapters: a folder with adapter_config.json and adapter_model.safetensors.

As PEFT 0.21 writes them (peft/tuners/prompt_tuning, peft/utils/save_and_load.py): one tensor `prompt_embeddings` of
shape (S * P, H), where S is `num_transformer_submodules`, 2 for encoder-decoder models (SEQ_2_SEQ_LM) and 1
otherwise. PEFT prepends only the first P rows, before the encoder input or the decoder-only input; the second P
rows of an encoder-decoder adapter are never used. Exported adapters hold the prompt in both halves; imports read the
first.

Placements: PEFT puts the prompt before the whole input. For encoder-decoder models that is where softprompt puts it;
for decoder-only models too, as long as a row has no left padding and the tokenizer adds no leading BOS; for
encoder-only models PEFT puts it before [CLS], softprompt after it, so their outputs differ.
"""

import contextlib
import json
import os
from importlib import metadata
from pathlib import Path

import torch
from packaging.version import Version
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from softprompt.core.families import DECODER_ONLY, ENCODER_DECODER, ENCODER_ONLY
from softprompt.errors import UserError
from softprompt.files.atomic import atomic_folder
from softprompt.files.integrity import sha256_of
from softprompt.files.prompt_file import load_prompt
from softprompt.interop import Imported

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
TENSOR_NAME = "prompt_embeddings"
ADAPTER_FILES = {CONFIG_FILE, WEIGHTS_FILE, PICKLE_FILE, "README.md"}  # what an export may replace

TASK_TYPES = {ENCODER_DECODER: "SEQ_2_SEQ_LM", DECODER_ONLY: "CAUSAL_LM", ENCODER_ONLY: "FEATURE_EXTRACTION"}
FAMILIES = {task: family for family, task in TASK_TYPES.items()}

PLACEMENT_NOTES = {  # where PEFT's placement differs from softprompt's, as export reports it
    ENCODER_ONLY: "warning: PEFT puts the prompt before [CLS], softprompt after it, so PEFT's outputs with this prompt differ from softprompt's",
    DECODER_ONLY: "note: PEFT puts the prompt before the whole input, as softprompt does only for rows without left padding "
    "and tokenizers that add no leading BOS (GPT-2); with left padding or a leading BOS (Llama) their outputs differ",
}

# Where PEFT's generate() with an exported prompt is known to differ from a greedy loop that recomputes
# [prompt; text] at every step (softprompt's output): family, newest PEFT release and oldest transformers release
# seen affected, and what goes wrong. PEFT's logits for the same batch still equal softprompt's.
GENERATION_FAULTS = [
    (
        DECODER_ONLY,
        "0.21.2",
        "5.24.0",
        "PEFT's generate ignores the position ids that transformers passes it, so its greedy text differs from softprompt's (its logits agree)",
    ),
]


def peft_generation_fault(family: str, versions: dict[str, str] | None = None) -> str | None:
    """Why PEFT's generation with an exported prompt of `family` is known to be wrong under `versions` (the installed
    peft and transformers by default); None when no known fault applies or PEFT is not installed."""
    if versions is None:
        try:
            versions = {name: metadata.version(name) for name in ("peft", "transformers")}
        except metadata.PackageNotFoundError:
            return None
    peft, transformers = Version(versions["peft"]), Version(versions["transformers"])
    for affected, newest_peft, oldest_transformers, why in GENERATION_FAULTS:
        if family == affected and peft <= Version(newest_peft) and transformers >= Version(oldest_transformers):
            return f"PEFT {peft} with transformers {transformers}: {why}"
    return None


def submodules(task_type: str | None) -> int:
    """PEFT's default num_transformer_submodules for a task type."""
    return 2 if task_type == "SEQ_2_SEQ_LM" else 1


# ----- export -------------------------------------------------------------------------------------------------
def adapter_config(base_model: str | None, family: str, length: int, hidden: int) -> dict:
    """adapter_config.json for a prompt of P = `length` vectors; PEFT fills num_layers and num_attention_heads in
    from the base model when it loads the adapter (they play no part in prompt tuning)."""
    task_type = TASK_TYPES[family]
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": task_type,
        "num_virtual_tokens": length,
        "token_dim": hidden,
        "num_transformer_submodules": submodules(task_type),
        "num_attention_heads": None,
        "num_layers": None,
        "base_model_name_or_path": base_model,
        "inference_mode": True,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "revision": None,
        "auto_mapping": None,
        "modules_to_save": None,
    }


def export_adapter(prompt_path: str, output: str, family: str | None = None) -> list[str]:
    """Write the prompt file `prompt_path` as a PEFT adapter folder `output`; returns notes on where PEFT's placement
    differs from softprompt's."""
    file = load_prompt(prompt_path)
    family = family or file.metadata.get("family")
    if family not in TASK_TYPES:
        raise UserError(
            f"{prompt_path}: the prompt file does not record its model family; pass --family ({', '.join(TASK_TYPES)})"
        )
    if file.offset is not None:
        raise UserError(f"{prompt_path}: a DePT prompt's input offset has no place in a PEFT prompt-tuning adapter")
    config = adapter_config(file.metadata.get("base_model"), family, file.length, file.hidden)
    weights = file.prompt.repeat(config["num_transformer_submodules"], 1).contiguous()  # (S * P, H)
    with staged_folder(output) as folder:
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file({TENSOR_NAME: weights}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    notes = [PLACEMENT_NOTES[family]] if family in PLACEMENT_NOTES else []
    if "{prompt}" in file.metadata.get("task", {}).get("template", ""):
        notes.append(
            "warning: the prompt was trained at the {prompt} slot of its template; PEFT puts it before the input, so its outputs differ"
        )
    fault = peft_generation_fault(family)
    if fault:
        notes.append(f"warning: {fault}")
    return notes


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike):
    """Yield a temporary folder beside `path`, put in its place only if the block succeeds.

    `path` may be missing, empty, or an earlier adapter (nothing but adapter files); anything else is refused."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {path}: exists and is not a folder")
    others = sorted(set(os.listdir(path)) - ADAPTER_FILES) if path.is_dir() else []
    if others:
        raise UserError(
            f"--output {path}: the folder holds other files ({', '.join(others[:3])}); give a new or empty folder"
        )
    with atomic_folder(path) as staging:
        yield staging


# ----- import -------------------------------------------------------------------------------------------------
def read_adapter(folder: Path) -> Imported:
    """The prompt of a PEFT prompt-tuning adapter folder: the first P rows of its prompt_embeddings."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"{folder}: not a PEFT adapter folder (no {CONFIG_FILE})")
    config = _read_config(config_path)
    length = config["num_virtual_tokens"]
    copies = config.get("num_transformer_submodules") or submodules(config.get("task_type"))
    weights_path = folder / WEIGHTS_FILE
    weights = _read_weights(weights_path, folder)
    hidden = config.get("token_dim") or weights.shape[-1]
    if weights.dim() != 2 or tuple(weights.shape) != (copies * length, hidden):
        raise UserError(
            f"{weights_path}: {TENSOR_NAME} has shape {tuple(weights.shape)}, expected ({copies * length}, {hidden}) "
            f"for {length} virtual tokens x {copies} submodules"
        )
    prompt = weights[:length].float().contiguous()  # (P, H): the rows PEFT prepends
    if not torch.isfinite(prompt).all():
        raise UserError(f"{weights_path}: the prompt holds NaN or infinite values")
    source = {
        "path": str(folder.resolve()),
        "format": "peft",
        "file": WEIGHTS_FILE,
        "sha256": sha256_of(weights_path),
        "task_type": config.get("task_type"),
    }
    return Imported(prompt, source, config.get("base_model_name_or_path"), FAMILIES.get(config.get("task_type")))


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a JSON object")
    if config.get("peft_type") != "PROMPT_TUNING":
        raise UserError(f"{path}: peft_type {config.get('peft_type')!r} is not prompt tuning (PROMPT_TUNING)")
    length = config.get("num_virtual_tokens")
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise UserError(f"{path}: num_virtual_tokens must be a positive integer (got {length!r})")
    return config


def _read_weights(path: Path, folder: Path) -> torch.Tensor:
    if not path.is_file():
        if (folder / PICKLE_FILE).is_file():
            raise UserError(
                f"{folder / PICKLE_FILE}: a pickle file, which softprompt never loads; save the adapter as safetensors"
            )
        raise UserError(f"{folder}: no {WEIGHTS_FILE}")
    try:
        with safe_open(str(path), framework="pt") as f:
            if TENSOR_NAME not in f.keys():
                raise UserError(f"{path}: no '{TENSOR_NAME}' tensor (not a prompt-tuning adapter)")
            return f.get_tensor(TENSOR_NAME).clone()  # a copy, not a view of the mapped file
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None
