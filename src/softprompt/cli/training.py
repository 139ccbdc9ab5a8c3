"""The commands that train and score: train, eval, transfer, sweep and quickstart."""

import os
from pathlib import Path

from softprompt import checks
from softprompt.errors import UserError
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, TrainOptions
from softprompt.training import option_checks


def train(
    model: ModelOptions,
    prompt: PromptOptions,
    data: DataOptions,
    train: TrainOptions,
    method: MethodOptions | None = None,
    allow_other_model: bool = False,
) -> dict:
    """Train a soft prompt (or, with --method NAME, a comparison method) on a task, the model frozen.

    The prompt is saved as TRAIN.OUTPUT_DIR/prompt.safetensors (another method's result beside it), and every run
    appends its report to TRAIN.OUTPUT_DIR/results.jsonl."""
    from softprompt.training.recipe import prepare
    from softprompt.training.run_output import RESULTS_FILE
    from softprompt.training.run_report import run_summary

    recipe = prepare(model, prompt, data, train, method, allow_other_model)
    frozen, chosen, train_examples, validation = recipe.model, recipe.method, recipe.train_examples, recipe.validation
    report = os.environ.get("RANK", "0") == "0"  # one report under torchrun / accelerate launch
    model_bytes = frozen.base_bytes()
    if report:
        state = "trainable" if chosen.name == "model" else "frozen"
        print(f"model: {frozen.name} ({frozen.family}, {frozen.base_parameters():,} {state} parameters)")
        print(
            f"data: {len(train_examples):,} training rows"
            + (f", {len(validation):,} validation rows" if validation else "")
        )
        if chosen.name != "prompt":
            print(f"method: {chosen.name}")
    result = recipe.run()
    if not report:
        return {}
    if result.metrics:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in result.metrics.items())
        print(f"best at step {result.best_step}: {shown}" if chosen.trains else shown)
    print(run_summary(result.report, model_bytes))
    print(f"saved: {result.prompt_path}")
    print(f"report: {Path(train.output_dir) / RESULTS_FILE}")
    if chosen.name == "prompt":
        print(f'predict with: softprompt predict {result.prompt_path} "some text"')
    return result.report


def evaluate(
    prompt_file: str | None,
    model: ModelOptions,
    data: DataOptions,
    train: TrainOptions,
    prompt: PromptOptions | None = None,
    allow_other_model: bool = False,
    device: str = "auto",
) -> dict:
    """Score PROMPT_FILE on DATA.VALIDATION; without it, score the frozen model alone (prompt design).

    Takes the same recipe as train; only its model and data sections and train.eval_batch_size are used."""
    option_checks.check_eval(data, train)
    checks.check_model(model)
    checks.check_device(device)
    if not (data.validation or data.train):
        raise UserError("--data.validation: give the data to evaluate on")
    from softprompt.inference.loading import load_with_prompts, task_options
    from softprompt.models.loading import pick_device
    from softprompt.models.model import SoftPromptModel
    from softprompt.tasks import make_task

    if prompt_file:
        frozen, files = load_with_prompts([prompt_file], model, allow_other_model, device)
        data = task_options(files[0], data)
    else:
        frozen = SoftPromptModel.load(model).to(pick_device(device))
    source = data.validation or data.train
    task = make_task(data)
    examples = task.load(source, data.limit_validation)
    task.prepare(frozen)
    scores = task.evaluate(frozen, examples, train.eval_batch_size)
    for key, value in scores.items():
        print(f"{key}: {value:.2f}")
    return scores


def transfer(
    model: ModelOptions,
    prompt: PromptOptions,
    data: DataOptions,
    train: TrainOptions,
    method: MethodOptions | None = None,
    methods: list[str] | None = None,
    targets: list | None = None,
    device: str = "auto",
) -> dict:
    """Train with each of --methods on one task and score each result on other tasks (the paper's domain shift).

    Prompt and model tuning by default; each result is scored on --targets without training, beside the in-domain
    row and the delta (TRAIN.OUTPUT_DIR/transfer.md, .csv and .json)."""
    option_checks.check_training_command(prompt, data, train)
    checks.check_model(model)
    checks.check_device(device)
    if not targets:
        raise UserError("--targets: give one or more evaluation sets (TASK=FILE, or a data section)")
    from softprompt.experiments.transfer import MARKDOWN_FILE, markdown, method_cells, run_transfer, targets_from

    output = Path(train.output_dir)
    cells = method_cells(model, prompt, data, train, method or MethodOptions(), methods or ["prompt", "model"], output)
    chosen = targets_from(targets, data)
    result = run_transfer(cells, chosen, output, train.eval_batch_size, device=device)
    print(markdown(result["rows"], [c.id for c in cells]))
    print(f"wrote: {output / MARKDOWN_FILE} (and .csv, .json)")
    return result


def sweep(
    file: str, output: str | None = None, dry_run: bool = False, shard: str | None = None, only: str | None = None
) -> dict:
    """Run a sweep file: a training run for each cell of a grid of options, with tables and plots of the results.

    The grid's axes are options (method, prompt length, initialiser, model, task, seed, ...); each cell runs in
    OUTPUT/cells/<cell>/ and finished cells are not run again. Writes OUTPUT/results.csv, results.md and PNG plots. With --shard K/N, N processes share the output folder: each writes the tables of the cells
    finished so far, and the last to end writes them all; --only runs the cells of chosen axis values."""
    from softprompt.experiments.grid import load_sweep
    from softprompt.experiments.sweep import parse_only, parse_shard, run_sweep, shard_cells, write_results
    from softprompt.experiments.table import MARKDOWN_FILE

    part = parse_shard(shard)
    plan = load_sweep(file, output)  # every cell checked before any model loads
    chosen = parse_only(only, plan)
    mine, todo = shard_cells(plan, part, chosen)
    scope = ", ".join(([f"only {only}"] if chosen else []) + ([f"shard {shard}"] if part else []))
    scope = f" ({scope}: {len(mine)} of {len(plan.cells)} cells)" if scope else ""
    print(f"sweep: {len(mine)} cells{scope}, {len(mine) - len(todo)} finished, {len(todo)} to run -> {plan.output}")
    if dry_run:
        to_run = {cell.id for cell in todo}
        for cell in mine:
            print(f"  {'to run' if cell.id in to_run else 'done  '}  {cell.id}")
        return {"cells": [c.id for c in mine], "to_run": [c.id for c in todo]}
    rows = run_sweep(plan, shard=part, only=chosen)
    written = write_results(plan, rows)
    print((plan.output / MARKDOWN_FILE).read_text(encoding="utf-8"))
    print("wrote: " + ", ".join(str(p) for p in written))
    return {"rows": rows, "written": [str(p) for p in written]}


def quickstart(output: str = "runs/quickstart", steps: int = 150, seed: int = 42) -> dict:
    """Offline demo on the embedded all-MiniLM-L6-v2: prompt design vs prompt tuning on a shipped sentiment set."""
    checks.check_quickstart(output, steps, seed)
    from softprompt.experiments.quickstart import run

    return run(output, steps, seed)
