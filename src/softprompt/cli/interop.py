"""The commands that move prompts between softprompt and other tools: export and import."""

import sys
from pathlib import Path

from softprompt.options import DataOptions, ModelOptions


def export(prompt: str, output: str, to: str = "peft", family: str | None = None) -> Path:
    """Write a prompt file as a PEFT prompt-tuning adapter folder (adapter_config.json, adapter_model.safetensors)."""
    from softprompt.interop.peft import export_adapter

    for note in export_adapter(prompt, output, family):
        print(note, file=sys.stderr)
    print(f"saved: {output} (PEFT prompt tuning: adapter_config.json, adapter_model.safetensors)")
    return Path(output)


def import_(source: str, output: str, model: ModelOptions | None = None, data: DataOptions | None = None) -> Path:
    """Make a prompt file from a PEFT prompt-tuning adapter folder or an official prompt-tuning .npy file.

    With --data.task (and its options: --data.verbalizers, --data.template, ...) the file records that task, so that
    predict and serve can use it as they use a trained prompt."""
    from softprompt.interop import import_prompt
    from softprompt.tasks import make_task

    model = model or ModelOptions()
    task = (
        make_task(data).describe() if data is not None and data != DataOptions() else None
    )  # checked before any model loads
    path, note = import_prompt(source, output, model.name, model.family, model.dtype, task)
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"saved: {path}")
    return path
