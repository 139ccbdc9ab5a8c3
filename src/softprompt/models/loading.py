"""Loading a frozen model by hub name or local folder with the Auto classes: where it lives (an embedded model's
folder, a local folder, a hub id), its family, the dtype its weights are stored in, and its weights from safetensors
only unless a pickle is trusted (pickles.py)."""

import os

import torch
from torch import nn

from softprompt.core.families import DECODER_ONLY, ENCODER_DECODER, ENCODER_ONLY, FAMILIES
from softprompt.errors import UserError, first_line
from softprompt.models import embedded
from softprompt.models.pickles import hub_pickle_message, refuse_pickled_folder
from softprompt.models.sharding import loading_in


def checkpoint_dtype(config) -> torch.dtype:
    """The dtype a model's weights are stored in, by its config (float32 when it does not say); transformers 4.56 and
    later name it `dtype` (reading `torch_dtype` logs a deprecation)."""
    dtype = getattr(config, "dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def pick_device(device: str) -> str:
    """--device as torch names it: auto is CUDA when available, else the CPU (checks.check_device checked it)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_model_path(name: str) -> str:
    """What to load for a model name: an embedded model's folder (offline, see embedded.py), a local folder as an
    absolute path, or else a hub id.

    The hub name of an embedded model (all-MiniLM-L6-v2, SmolLM2-135M-Instruct) means its embedded copy unless a local
    folder has that name. A name is a local folder when it exists, starts like a path (/ ./ ../ ~) or has more than one
    '/'; a missing folder fails at once instead of after the hub's retries."""
    if name in embedded.MODELS and not os.path.isdir(name):
        return embedded.materialise(name)
    path = os.path.expanduser(name)
    if os.path.exists(path) or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        if not os.path.isdir(path):
            raise UserError(f"model folder {name}: " + ("not a folder" if os.path.exists(path) else "no such folder"))
        return os.path.abspath(path)
    return name


def detect_family(config) -> str:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        return ENCODER_DECODER
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return DECODER_ONLY
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return ENCODER_ONLY
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return DECODER_ONLY
    raise UserError(
        f"cannot tell the family of model type {config.model_type!r}: set --model.family to one of {', '.join(FAMILIES)}"
    )


def load_pretrained(name: str, family: str | None, dtype: str, trust_pickle: bool) -> tuple:
    """(base model in eval mode, tokenizer, family, the name a prompt file records: a local folder's absolute path)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    path = resolve_model_path(name)
    local = os.path.isdir(path)
    if local and not trust_pickle:
        refuse_pickled_folder(path, name)
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=local)
        family = family or detect_family(config)
        auto = {
            ENCODER_DECODER: transformers.AutoModelForSeq2SeqLM,
            DECODER_ONLY: transformers.AutoModelForCausalLM,
            ENCODER_ONLY: transformers.AutoModel,
        }[family]
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        with loading_in(checkpoint_dtype(config) if dtype == "auto" else torch_dtype):  # under ZeRO-3
            base = auto.from_pretrained(
                path, dtype=torch_dtype, local_files_only=local, use_safetensors=None if trust_pickle else True
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as e:
        reason = first_line(e)
        if not local and not trust_pickle and "use_safetensors" in reason:
            raise UserError(hub_pickle_message(name)) from None
        if local:
            raise UserError(f"model folder {name}: cannot load it ({reason})") from None
        raise UserError(f"model {name!r}: cannot load it ({reason}); offline, give a local folder") from None
    # prompt files record a local folder as an absolute path, so that they work from any directory
    recorded = path if local and name not in embedded.MODELS else name
    return base.eval(), tokenizer, family, recorded


def max_positions(base: nn.Module) -> int | None:
    """How many positions the model can attend over; None for relative positions (T5: no hard limit)."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(base.config, key, None)
        if isinstance(value, int) and value > 0:
            table = getattr(getattr(base, "embeddings", None), "position_embeddings", None)
            if isinstance(table, nn.Embedding) and table.padding_idx is not None:
                return value - table.padding_idx - 1  # RoBERTa-style: positions are counted from padding_idx + 1
            return value
    return None
