"""softprompt: prompt tuning (Lester, Al-Rfou & Constant 2021) for any frozen Hugging Face model.

    result = softprompt.tune(model=..., data={...}, prompt={...}, train={...}, output_dir="prompts/task")
    predictor = softprompt.load("prompts/task")
    predictor.predict(["some text"])

docs/python-api.md describes these; the Options classes are the command line's sections."""

import importlib

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.prompt_file import PromptFile, load_prompt, save_prompt
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, ServeOptions, TrainOptions

__all__ = [
    "Client",
    "DataOptions",
    "Engine",
    "MethodOptions",
    "ModelOptions",
    "Predictor",
    "PromptBank",
    "PromptFile",
    "PromptOptions",
    "ServeOptions",
    "SoftPromptModel",
    "TrainOptions",
    "TrainResult",
    "UserError",
    "load",
    "load_prompt",
    "save_prompt",
    "tune",
]
__version__ = "0.1.0"
LAZY = {"tune": "softprompt.api", "load": "softprompt.api", "Predictor": "softprompt.api"}
LAZY["TrainResult"] = "softprompt.training.run_report"
LAZY["Engine"] = "softprompt.serve.engine"
LAZY["Client"] = "softprompt.serve.client"


def __getattr__(name: str):
    """The training and prediction API, imported on first use: `import softprompt` (and the command line's --help)
    stays as quick as the model classes allow."""
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'softprompt' has no attribute {name!r}")
