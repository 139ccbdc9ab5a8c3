"""adapter: Houlsby bottleneck adapters (Houlsby et al. 2019), which peft 0.21 does not offer.

After the output projection of each layer's attention (self and cross) and of its feed-forward block, before the
residual sum, an adapter adds up(gelu(down(h))) to the projection's output h. Every weight starts near zero
(truncated normal, std 0.01), so the model starts almost as it was. The adapters run as forward hooks on the frozen
projections: the base model's modules and weights stay as they are."""

import json

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from softprompt.errors import UserError
from softprompt.files.atomic import atomic_path
from softprompt.methods.base import Method

FORMAT = "softprompt-adapters"

# How the output projections of attention and feed-forward blocks end their module names, by architecture:
# BERT and MiniLM, GPT-2, T5, Llama/Qwen/Mistral, BART/OPT, DistilBERT.
ATTENTION_OUTPUTS = (
    "attention.output.dense",
    "attn.c_proj",
    "SelfAttention.o",
    "EncDecAttention.o",
    "self_attn.o_proj",
    "self_attn.out_proj",
    "encoder_attn.out_proj",
    "attention.out_lin",
)
FEED_FORWARD_OUTPUTS = (".output.dense", "mlp.c_proj", "DenseReluDense.wo", "mlp.down_proj", ".fc2", "ffn.lin2")


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        for layer in (self.down, self.up):
            nn.init.trunc_normal_(layer.weight, std=0.01, a=-0.02, b=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T, H)
        return h + self.up(F.gelu(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)


def adapter_sites(base: nn.Module) -> dict[str, int]:
    """Module name -> output width of each attention and feed-forward output projection, in model order."""
    sites = {}
    for name, module in base.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)) and name.endswith(ATTENTION_OUTPUTS + FEED_FORWARD_OUTPUTS):
            sites[name] = module.out_features if isinstance(module, nn.Linear) else module.nf
    return sites


class Adapters(Method):
    name = "adapter"
    own_options = ("method.adapter_size",)
    lr = 1e-3
    result = "adapters"
    output = "adapters.safetensors"

    def prepare(self, model, task, train_examples, seed):
        super().prepare(model, task, train_examples, seed)
        self.insert(model, self.options.adapter_size)

    def insert(self, model, size: int) -> None:
        """Add an adapter after each output projection of `model.base`, held in `model.adapters`."""
        sites = adapter_sites(model.base)
        kinds = {s.endswith(ATTENTION_OUTPUTS) for s in sites}
        if kinds != {True, False}:
            raise UserError(
                f"--method adapter: cannot find the attention and feed-forward output projections of a {model.base.config.model_type} model ({model.family})"
            )
        model.adapters = nn.ModuleDict({key(s): Bottleneck(width, size) for s, width in sites.items()}).to(model.device)
        for site in sites:
            adapter = model.adapters[key(site)]
            model.base.get_submodule(site).register_forward_hook(
                lambda module, args, output, adapter=adapter: adapter(output)
            )

    def parameters(self, model):
        return list(model.adapters.parameters())

    def save(self, model, folder, metadata):
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.adapters.state_dict().items()}
        meta = {**metadata, "adapter_size": self.options.adapter_size}
        with atomic_path(self.path(folder)) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "metadata": json.dumps(meta)})
        return self.path(folder)

    def load(self, model, folder):
        path = self.path(folder)
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # copies, not views of the mapped file
        except (SafetensorError, OSError) as e:
            raise UserError(f"{path}: not a readable safetensors file ({e})") from None
        if header.get("format") != FORMAT:
            raise UserError(f"{path}: not a softprompt adapter file")
        self.insert(model, json.loads(header["metadata"])["adapter_size"])
        try:
            model.adapters.load_state_dict(tensors)
        except RuntimeError:
            raise UserError(f"{path}: its adapters do not fit {model.name}") from None
        model.eval()
        return model


def key(site: str) -> str:
    """A module name as a ModuleDict key (which cannot hold dots)."""
    return site.replace(".", ":")
