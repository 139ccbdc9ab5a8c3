"""The paper's comparison methods behind one interface (base.Method), trained by one loop (train.py).

| name          | what trains                                   | default optimiser          | saved (per task)              |
|---------------|-----------------------------------------------|----------------------------|-------------------------------|
| prompt        | the soft prompt (P x H)                       | Adafactor, the paper's     | prompt.safetensors            |
|               | or its reparameterisation (softprompt.reparam)|                            | (folded to a plain prompt)    |
| model         | every weight of the model                     | AdamW 5e-5                 | model/ (save_pretrained)      |
| prompt-design | nothing: instruction and in-context examples  | -                          | design.json                   |
| prefix        | keys and values of a prefix in every layer    | AdamW 1e-2 (peft)          | prefix/ (peft save_pretrained)|
| lora          | low-rank updates of attention projections     | AdamW 5e-4 (peft)          | lora/ (peft save_pretrained)  |
| adapter       | bottleneck adapters after attention and FFN   | AdamW 1e-3                 | adapters.safetensors          |
"""

from softprompt.checks import at_least, positive, valid_size
from softprompt.errors import UserError
from softprompt.methods.adapter import Adapters
from softprompt.methods.base import Method
from softprompt.methods.lora import LoRA
from softprompt.methods.model_tuning import ModelTuning
from softprompt.methods.prefix import PrefixTuning
from softprompt.methods.prompt import PromptTuning
from softprompt.methods.prompt_design import PromptDesign
from softprompt.options import MethodOptions, PromptOptions

METHODS: dict[str, type[Method]] = {
    m.name: m for m in (PromptTuning, ModelTuning, PromptDesign, PrefixTuning, LoRA, Adapters)
}


def check_method(o: MethodOptions) -> None:
    """Refuse bad method options before anything loads."""
    if o.name not in METHODS:
        raise UserError(f"--method: unknown method {o.name!r} ({', '.join(METHODS)})")
    at_least("--method.shots", o.shots, 0)
    for name in ("lora_rank", "prefix_length", "adapter_size"):
        valid_size(f"--method.{name}", getattr(o, name))
    positive("--method.lora_alpha", o.lora_alpha)


def make_method(
    options: MethodOptions | None = None, prompt: PromptOptions | None = None, allow_other_model: bool = False
) -> Method:
    """The method that `options.name` names, holding its options (and, for prompt tuning, the prompt's)."""
    options = options or MethodOptions()
    check_method(options)
    if prompt is not None and prompt.reparam != "none" and options.name != PromptTuning.name:
        raise UserError(
            f"--prompt.reparam: {prompt.reparam} reparameterises a soft prompt; --method {options.name} trains none"
        )
    return METHODS[options.name](options, prompt, allow_other_model)


__all__ = ["METHODS", "Method", "check_method", "make_method"]
