"""softprompt: prompt tuning (Lester, Al-Rfou & Constant 2021) for any frozen Hugging Face model.

    result = softprompt.tune(model=..., data={...}, prompt={...}, train={...}, output_dir="prompts/task")
    predictor = softprompt.load("prompts/task")
    predictor.predict(["some text"])

docs/python-api.md describes these; the Options classes are the command line's sections. Each name is imported on
first use, so that `import softprompt` loads no model library until one is needed."""

import importlib

__version__ = "0.1.0"
WHERE = {  # each public name and the module it lives in
    "tune": "softprompt.api",
    "load": "softprompt.api",
    "Predictor": "softprompt.api",
    "TrainResult": "softprompt.training.run_report",
    "DataOptions": "softprompt.options",
    "MethodOptions": "softprompt.options",
    "ModelOptions": "softprompt.options",
    "PromptOptions": "softprompt.options",
    "ServeOptions": "softprompt.options",
    "TrainOptions": "softprompt.options",
    "UserError": "softprompt.errors",
    "PromptBank": "softprompt.core.bank",
    "SoftPromptModel": "softprompt.models.model",
    "PromptFile": "softprompt.files.prompt_file",
    "load_prompt": "softprompt.files.prompt_file",
    "save_prompt": "softprompt.files.prompt_file",
    "Engine": "softprompt.serve.engine",
    "Client": "softprompt.serve.client",
}
__all__ = sorted(WHERE)


def __getattr__(name: str):
    if name in WHERE:
        return getattr(importlib.import_module(WHERE[name]), name)
    raise AttributeError(f"module 'softprompt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *WHERE})
