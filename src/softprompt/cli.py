"""The `softprompt` command: train, eval, predict, info and quickstart, each a plain function.

Options come from dataclasses (options.py): a YAML recipe via --config, then `--section.option=value` overrides.
"""

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Literal

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, set_parsing_settings

from softprompt import __version__, checks
from softprompt.errors import UserError
from softprompt.files import human_size
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, TrainOptions


def train(model: ModelOptions, prompt: PromptOptions, data: DataOptions, train: TrainOptions, method: MethodOptions | None = None, allow_other_model: bool = False) -> dict:
    """Adapt a frozen model to a task: a soft prompt (TRAIN.OUTPUT_DIR/prompt.safetensors) or, with --method NAME,
    one of the paper's comparison methods; every run appends its report to TRAIN.OUTPUT_DIR/results.jsonl."""
    checks.check_training_command(prompt, data, train)
    checks.check_model(model)
    from softprompt.methods import make_method
    from softprompt.model import EMBEDDED_MODEL, SoftPromptModel
    from softprompt.tasks import make_task
    from softprompt.train import RESULTS_FILE, run_summary
    from softprompt.train import train as train_with

    chosen = make_method(method or MethodOptions(), prompt, allow_other_model)
    report = os.environ.get("RANK", "0") == "0"  # one report under torchrun / accelerate launch
    task = make_task(data)
    train_examples = task.load(data.train, data.limit_train)
    validation = task.load(data.validation, data.limit_validation) if data.validation else None
    frozen = SoftPromptModel.load(model.name or EMBEDDED_MODEL, model.family, model.dtype, model.readout_scale, model.trust_pickle)
    model_bytes = sum(p.numel() * p.element_size() for p in frozen.base.parameters())
    if report:
        state = "trainable" if chosen.name == "model" else "frozen"
        print(f"model: {frozen.name} ({frozen.family}, {frozen.base_parameters():,} {state} parameters)")
        print(f"data: {len(train_examples):,} training rows" + (f", {len(validation):,} validation rows" if validation else ""))
        if chosen.name != "prompt":
            print(f"method: {chosen.name}")
    result = train_with(frozen, chosen, task, train_examples, validation, train, train.output_dir)
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


def evaluate(prompt_file: str | None, model: ModelOptions, data: DataOptions, train: TrainOptions, prompt: PromptOptions | None = None, allow_other_model: bool = False) -> dict:
    """Score PROMPT_FILE on DATA.VALIDATION; without it, score the frozen model alone (prompt design).

    Takes the same recipe as train; only its model and data sections and train.eval_batch_size are used."""
    checks.check_eval(data, train)
    checks.check_model(model)
    if not (data.validation or data.train):
        raise UserError("--data.validation: give the data to evaluate on")
    from softprompt.loading import load_with_prompts, task_options
    from softprompt.model import EMBEDDED_MODEL, SoftPromptModel
    from softprompt.tasks import make_task

    if prompt_file:
        frozen, files = load_with_prompts([prompt_file], model.name, model.family, allow_other_model, model.dtype, model.readout_scale, model.trust_pickle)
        data = task_options(files[0], data)
    else:
        frozen = SoftPromptModel.load(model.name or EMBEDDED_MODEL, model.family, model.dtype, model.readout_scale, model.trust_pickle)
    source = data.validation or data.train
    task = make_task(data)
    examples = task.load(source, data.limit_validation)
    task.prepare(frozen)
    scores = task.evaluate(frozen, examples, train.eval_batch_size)
    for key, value in scores.items():
        print(f"{key}: {value:.2f}")
    return scores


def predict(prompt: str, texts: list[str], file: str | None = None, batch_size: int = 64, model: ModelOptions | None = None, allow_other_model: bool = False) -> list[str]:
    """Predict with a prompt file for TEXTS, or each line of --file, or each line of standard input."""
    checks.check_predict(batch_size)
    model = model or ModelOptions()
    checks.check_model(model)
    if not texts:
        texts = [t for t in _input_text(file).splitlines() if t.strip()]
    if not texts:
        raise UserError("no texts to predict: give them as arguments, with --file, or on standard input")
    from softprompt.loading import load_with_prompts, task_options
    from softprompt.tasks import make_task

    frozen, files = load_with_prompts([prompt], model.name, model.family, allow_other_model, model.dtype, model.readout_scale, model.trust_pickle)
    task = make_task(task_options(files[0], where=prompt))
    task.prepare(frozen)
    out = task.predict_all(frozen, task.fields_from_texts(texts), batch_size, progress=False)
    for prediction in out:
        print(prediction)
    return out


def _input_text(file: str | None) -> str:
    """The text of --file, or of standard input without it; refuses anything that is not UTF-8 text."""
    if file and Path(file).is_dir():
        raise UserError(f"{file}: is a folder; give a text file")
    if file and not Path(file).is_file():
        raise UserError(f"{file}: no such file")
    try:
        text = Path(file).read_text(encoding="utf-8") if file else sys.stdin.read()
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:  # undecodable, or binary
        raise UserError(f"{file or 'standard input'}: not a UTF-8 text file")
    return text


def info(prompt: str, json_output: bool = False) -> dict:
    """Show a prompt file's metadata."""
    from softprompt.prompt import load_prompt

    file = load_prompt(prompt)
    size = Path(prompt).stat().st_size
    if json_output:
        print(json.dumps({**file.metadata, "length": file.length, "hidden": file.hidden, "size": size}, indent=2, sort_keys=True))
    else:
        offset = f" and {file.offset.shape[0]} x {file.hidden} input offset (DePT)" if file.offset is not None else ""
        print(f"{prompt}: {file.length} x {file.hidden} prompt{offset}, {human_size(size)}")
        print(json.dumps(file.metadata, indent=2, sort_keys=True))
    return file.metadata


def ensemble(prompts: list[str], model: ModelOptions, data: DataOptions, batch_size: int = 64, json_output: bool = False, allow_other_model: bool = False) -> dict:
    """Score prompts of one task alone and as an ensemble, run together in one batched pass (paper section 7)."""
    checks.check_data(data)
    checks.check_data_files(data)
    checks.check_predict(batch_size)
    checks.check_model(model)
    if len(prompts) < 2:
        raise UserError("--prompts: an ensemble needs at least two prompt files")
    if not (data.validation or data.train):
        raise UserError("--data.validation: give the data to evaluate on")
    from softprompt.ensemble import evaluate_ensemble
    from softprompt.loading import load_with_prompts, same_task, task_options
    from softprompt.tasks import make_task

    frozen, files = load_with_prompts(prompts, model.name, model.family, allow_other_model, model.dtype, model.readout_scale, model.trust_pickle)
    same_task(prompts, files)
    data = task_options(files[0], data)
    task = make_task(data)
    examples = task.load(data.validation or data.train, data.limit_validation)
    task.prepare(frozen)
    report = evaluate_ensemble(frozen, task, examples, batch_size, progress=not json_output)
    print(json.dumps(report.as_dict(), indent=2) if json_output else report.table())
    return report.as_dict()


def quickstart(output: str = "runs/quickstart", steps: int = 150, seed: int = 42) -> dict:
    """Offline demo on the embedded all-MiniLM-L6-v2: prompt design vs prompt tuning on a shipped sentiment set."""
    checks.check_quickstart(output, steps, seed)
    from softprompt.quickstart import run

    return run(output, steps, seed)


def models(json_output: bool = False) -> list[dict]:
    """List the embedded models (no model hub needed): source, pinned sha256 hashes, licence and cache state."""
    from softprompt import embedded

    root = embedded.cache_root()
    rows = [embedded.describe(model, root) for model in embedded.MODELS.values()]
    print(json.dumps(rows, indent=2) if json_output else embedded.listing(rows, root))


def tasks() -> list[dict]:
    """List the tasks that --data.task names: the data each reads, its input template, targets and metric."""
    from softprompt.tasks import TASKS

    rows = [t.summary() for t in TASKS.values()]
    width = max(len(r["task"]) for r in rows) + 2
    for r in rows:
        print(f"{r['task']:<{width}}{r['data']}; metric: {r['metric']}")
        print(f"{'':<{width}}{r['template']}  ->  {r['targets']}")
    return rows


def neighbors(prompt: str, k: int = 5, json_output: bool = False, model: ModelOptions | None = None, allow_other_model: bool = False) -> dict:
    """List each prompt position's nearest vocabulary tokens (cosine similarity) and the label words among them."""
    if k < 1:
        raise UserError(f"-k must be at least 1 (got {k})")
    model = model or ModelOptions()
    checks.check_model(model)
    from softprompt.interpret import label_hits, nearest_tokens, report, table
    from softprompt.loading import load_with_prompts

    frozen, files = load_with_prompts([prompt], model.name, model.family, allow_other_model, model.dtype, model.readout_scale, model.trust_pickle)
    nearest = nearest_tokens(frozen, files[0].prompt, k)
    words = list(dict.fromkeys(files[0].metadata.get("task", {}).get("verbalizers", {}).values()))
    hits = label_hits(frozen, nearest, words) if words else None
    result = {"prompt": prompt, "model": frozen.name, **report(nearest, hits)}
    if json_output:
        print(json.dumps(result, indent=2))
    else:
        print(f"{prompt}: {files[0].length} positions, nearest of {frozen.name}'s {len(frozen.tokenizer):,} tokens")
        print(table(nearest, hits))
    return result


def similar(prompt: str, bank: str, k: int = 10, json_output: bool = False) -> dict:
    """Rank the prompt files under BANK by cosine similarity of their mean vectors to PROMPT's (SPoT's retrieval of a
    source prompt: the best one can initialise training with --prompt.init FILE)."""
    if k < 1:
        raise UserError(f"-k must be at least 1 (got {k})")
    from softprompt.prompt import load_prompt
    from softprompt.similar import rank, table

    target = load_prompt(prompt)
    ranking = rank(target, prompt, bank, k)
    result = {"prompt": prompt, "bank": bank, "hidden": target.hidden, **ranking.as_dict()}
    if json_output:
        print(json.dumps(result, indent=2))
    else:
        shown = f"the {len(ranking.matches)} most similar" if len(ranking.matches) < ranking.compared else f"all {ranking.compared}"
        print(f"{prompt}: {shown} of {ranking.compared} prompts under {bank}, by cosine similarity of mean prompt vectors")
        print(table(ranking))
    return result


def export(prompt: str, output: str, to: str = "peft", family: str | None = None) -> Path:
    """Write a prompt file as a PEFT prompt-tuning adapter folder (adapter_config.json, adapter_model.safetensors)."""
    from softprompt.interop.peft import export_adapter

    for note in export_adapter(prompt, output, family):
        print(note, file=sys.stderr)
    print(f"saved: {output} (PEFT prompt tuning: adapter_config.json, adapter_model.safetensors)")
    return Path(output)


def import_(source: str, output: str, model: ModelOptions | None = None, data: DataOptions | None = None) -> Path:
    """Make a prompt file from a PEFT prompt-tuning adapter folder or an official prompt-tuning .npy file. With
    --data.task (and its options: --data.verbalizers, --data.template, ...) the file records that task, so that
    predict and serve can use it as they use a trained prompt."""
    from softprompt.interop import import_prompt
    from softprompt.tasks import make_task

    model = model or ModelOptions()
    task = make_task(data).describe() if data is not None and data != DataOptions() else None  # checked before any model loads
    path, note = import_prompt(source, output, model.name, model.family, model.dtype, task)
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"saved: {path}")
    return path


def serve(prompts: str, model: str | None = None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_inputs: int = 64, max_input_chars: int = 20_000, max_body_bytes: int = 1_000_000, rescan_seconds: float = 0.0, device: str = "auto", dtype: str = "auto", allow_other_model: bool = False, no_kv_reuse: bool = False) -> None:
    """Serve every prompt of a folder over HTTP from one frozen model: rows of all tasks run in shared batches."""
    from softprompt.serve.server import run

    run(prompts, model, host, port, token, max_batch_size, max_wait_ms, max_inputs, max_input_chars, max_body_bytes, rescan_seconds, device, dtype, allow_other_model, kv_reuse=not no_kv_reuse)


def sweep(file: str, output: str | None = None, dry_run: bool = False, shard: str | None = None) -> dict:
    """Run a sweep file: training runs over a grid of options (method, prompt length, initialiser, model, task, seed,
    ...), each in OUTPUT/cells/<cell>/; finished cells are not run again. Writes OUTPUT/results.csv, results.md and
    PNG plots. With --shard K/N, N processes share the output folder: each writes the tables of the cells
    finished so far, and the last to end writes them all."""
    from softprompt.experiments.grid import load_sweep
    from softprompt.experiments.sweep import parse_shard, run_sweep, shard_cells, write_results
    from softprompt.experiments.table import MARKDOWN_FILE

    part = parse_shard(shard)
    plan = load_sweep(file, output)  # every cell checked before any model loads
    mine, todo = shard_cells(plan, part)
    scope = f" (shard {shard}: {len(mine)} of {len(plan.cells)} cells)" if part else ""
    print(f"sweep: {len(mine)} cells{scope}, {len(mine) - len(todo)} finished, {len(todo)} to run -> {plan.output}")
    if dry_run:
        to_run = {cell.id for cell in todo}
        for cell in mine:
            print(f"  {'to run' if cell.id in to_run else 'done  '}  {cell.id}")
        return {"cells": [c.id for c in mine], "to_run": [c.id for c in todo]}
    rows = run_sweep(plan, shard=part)
    written = write_results(plan, rows)
    print((plan.output / MARKDOWN_FILE).read_text(encoding="utf-8"))
    print("wrote: " + ", ".join(str(p) for p in written))
    return {"rows": rows, "written": [str(p) for p in written]}


def transfer(model: ModelOptions, prompt: PromptOptions, data: DataOptions, train: TrainOptions, method: MethodOptions | None = None, methods: list[str] | None = None, targets: list | None = None) -> dict:
    """Train on one task with each of --methods (prompt and model tuning by default), then score each result on
    --targets without training: the paper's domain-shift table, with the in-domain row and the delta
    (TRAIN.OUTPUT_DIR/transfer.md, .csv and .json)."""
    checks.check_training_command(prompt, data, train)
    checks.check_model(model)
    if not targets:
        raise UserError("--targets: give one or more evaluation sets (TASK=FILE, or a data section)")
    from softprompt.experiments.transfer import MARKDOWN_FILE, markdown, method_cells, run_transfer, targets_from

    output = Path(train.output_dir)
    cells = method_cells(model, prompt, data, train, method or MethodOptions(), methods or ["prompt", "model"], output)
    chosen = targets_from(targets, data)
    result = run_transfer(cells, chosen, output, train.eval_batch_size)
    print(markdown(result["rows"], [c.id for c in cells]))
    print(f"wrote: {output / MARKDOWN_FILE} (and .csv, .json)")
    return result


SECTION_FILES = (".yaml", ".yml", ".json")
SECTIONS: dict[str, list[str]] = {}  # each command's option sections, filled by build_parser


class Parser(ArgumentParser):
    """The top-level parser: `eval --prompt P` (or --prompt=P) names the prompt file, the positional argument, unless
    P ends in .yaml, .yml or .json: then, as jsonargparse has it, P holds the prompt section of a recipe."""

    def parse_args(self, args=None, *rest, **kwargs):
        return super().parse_args(rewritten(list(sys.argv[1:] if args is None else args)), *rest, **kwargs)


def rewritten(argv: list[str]) -> list[str]:
    """The arguments with the spellings jsonargparse does not read put as it reads them (each rewrite is idempotent)."""
    return _serve_model_name(_method_name_option(_prompt_file_as_positional(argv)))


def _rewrite_option(argv: list[str], command: str, option: str, rewrite) -> list[str]:
    """In `command`'s arguments, replace `option VALUE` / `option=VALUE` by `rewrite(VALUE)`; None keeps it as given."""
    start = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    if argv[start:start + 1] != [command]:
        return argv
    out, rest = argv[:start + 1], iter(argv[start + 1:])
    for a in rest:
        if a == option:
            a = f"{option}={next(rest, '')}"
        given, _, value = a.partition("=")
        replaced = rewrite(value) if given == option and value else None
        out.append(a if replaced is None else replaced)
    return out


def _is_section(value: str) -> bool:
    """A recipe file or a JSON object: what jsonargparse reads as an option section."""
    return value.lower().endswith(SECTION_FILES) or value.lstrip().startswith("{")


def _prompt_file_as_positional(argv: list[str]) -> list[str]:
    return _rewrite_option(argv, "eval", "--prompt", lambda value: None if value.lower().endswith(SECTION_FILES) else value)


def _method_name_option(argv: list[str]) -> list[str]:
    """`train --method NAME` (or --method=NAME) names the method: --method.name=NAME. A recipe file or a JSON object
    given to --method stays the method section, as jsonargparse has it."""
    return _rewrite_option(argv, "train", "--method", lambda value: None if _is_section(value) else f"--method.name={value}")


def _serve_model_name(argv: list[str]) -> list[str]:
    """`serve --model.name M`, as the other commands spell it, is serve's --model M."""
    return _rewrite_option(argv, "serve", "--model.name", lambda value: f"--model={value}")


def build_parser() -> ArgumentParser:
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = Parser(prog="softprompt", description="Prompt tuning for frozen Hugging Face models. Add --debug anywhere for tracebacks.", exit_on_error=False)
    parser.add_argument("--version", action="version", version=f"softprompt {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks on errors.")
    commands = parser.add_subcommands(dest="command")

    def command(name: str, fn, *sections, arguments=()):
        SECTIONS[name] = [section for section, _ in sections]
        p = ArgumentParser(description=fn.__doc__, exit_on_error=False)  # main() reports a bad value in one line
        p.add_argument("--config", action=ActionConfigFile, help="A YAML recipe; later options override it.")
        for section, cls in sections:
            p.add_class_arguments(cls, section)
        for args, kwargs in arguments:
            p.add_argument(*args, **kwargs)
        commands.add_subcommand(name, p, help=fn.__doc__.splitlines()[0])

    recipe = (("model", ModelOptions), ("prompt", PromptOptions), ("data", DataOptions), ("train", TrainOptions))
    allow = (("--allow_other_model",), dict(action="store_true", help="Use a prompt file whose model fingerprint differs from the model's."))
    command("train", train, *recipe, ("method", MethodOptions), arguments=[allow])
    command(
        "eval", evaluate, *recipe,
        arguments=[
            (("prompt_file",), dict(nargs="?", type=str | None, default=None, help="Prompt file, also given as --prompt P; without it the frozen model is scored alone.")),
            allow,
        ],
    )
    command(
        "predict", predict, ("model", ModelOptions),
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file.")),
            (("texts",), dict(nargs="*", type=str, help="Texts to predict; else --file, else standard input.")),
            (("--file",), dict(type=str | None, default=None, help="A UTF-8 text file with one text per line.")),
            (("--batch_size",), dict(type=int, default=64, help="Rows per forward pass.")),
            allow,
        ],
    )
    command(
        "info", info,
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file.")),
            (("--json",), dict(dest="json_output", action="store_true", help="Print only JSON: the metadata with length, hidden and size (bytes).")),
        ],
    )
    command(
        "quickstart", quickstart,
        arguments=[
            (("--output",), dict(type=str, default="runs/quickstart", help="Folder for the trained prompt.")),
            (("--steps",), dict(type=int, default=150, help="Training steps of 32 rows.")),
            (("--seed",), dict(type=int, default=42, help="Random seed.")),
        ],
    )
    command(
        "models", models,
        arguments=[(("--json",), dict(dest="json_output", action="store_true", help="Print only JSON: one object per embedded model."))],
    )
    command("tasks", tasks)
    command(
        "ensemble", ensemble, ("model", ModelOptions), ("data", DataOptions),
        arguments=[
            (("--prompts",), dict(nargs="+", type=str, required=True, help="Two or more prompt files of one task.")),
            (("--batch_size",), dict(type=int, default=64, help="Rows per forward pass (each input counts once per prompt).")),
            (("--json",), dict(dest="json_output", action="store_true", help="Print only JSON.")),
            allow,
        ],
    )
    command(
        "neighbors", neighbors, ("model", ModelOptions),
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file.")),
            (("-k", "--k"), dict(type=int, default=5, help="Nearest tokens to list per prompt position.")),
            (("--json",), dict(dest="json_output", action="store_true", help="Print only JSON: each position's tokens, ids and similarities, and the label-word counts.")),
            allow,
        ],
    )
    command(
        "similar", similar,
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file to find neighbours of.")),
            (("--bank",), dict(type=str, required=True, help="Folder searched for prompt files (.safetensors, at any depth).")),
            (("-k", "--k"), dict(type=int, default=10, help="How many of the most similar to list.")),
            (("--json",), dict(dest="json_output", action="store_true", help="Print only JSON: the ranked files with similarities, and the skipped files with why.")),
        ],
    )
    command(
        "export", export,
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file.")),
            (("--to",), dict(type=Literal["peft"], default="peft", help="Format: peft (a PEFT prompt-tuning adapter folder).")),
            (("--output",), dict(type=str, required=True, help="Folder to write (new, empty, or an earlier adapter, which is replaced).")),
            (("--family",), dict(type=Literal["encoder-decoder", "decoder-only", "encoder-only"] | None, default=None, help="Model family, when the prompt file does not record it.")),
        ],
    )
    command(
        "import", import_, ("model", ModelOptions), ("data", DataOptions),
        arguments=[
            (("source",), dict(type=str, help="A PEFT prompt-tuning adapter folder, or a .npy file of shape (length, hidden).")),
            (("--output",), dict(type=str, required=True, help="Prompt file to write.")),
        ],
    )
    command(
        "serve", serve,
        arguments=[
            (("--prompts",), dict(type=str, required=True, help="Folder of prompt files: NAME.safetensors or NAME/prompt.safetensors serves task NAME; rescanned on POST /v1/tasks.")),
            (("--model",), dict(type=str | None, default=None, help="Hub name or local folder of the model; default: the model the prompt files name (they must agree).")),
            (("--host",), dict(type=str, default="127.0.0.1", help="Address to listen on (loopback by default).")),
            (("--port",), dict(type=int, default=8000, help="Port to listen on.")),
            (("--token",), dict(type=str | None, default=None, help="Bearer token every endpoint but /healthz requires; default: $SOFTPROMPT_TOKEN, else none.")),
            (("--max_batch_size",), dict(type=int, default=32, help="Rows per model pass.")),
            (("--max_wait_ms",), dict(type=float, default=5.0, help="How long a batch waits for more requests to fill it (0: run at once).")),
            (("--max_inputs",), dict(type=int, default=64, help="Inputs a request may hold (413 beyond).")),
            (("--max_input_chars",), dict(type=int, default=20_000, help="Characters an input may hold, all its fields together (413 beyond).")),
            (("--max_body_bytes",), dict(type=int, default=1_000_000, help="Bytes a request body may hold (413 beyond), checked before parsing.")),
            (("--rescan_seconds",), dict(type=float, default=0.0, help="Rescan the prompt folder this often (0: only on POST /v1/tasks).")),
            (("--device",), dict(type=str, default="auto", help="auto (CUDA when available), cpu, or cuda[:N].")),
            (("--dtype",), dict(type=Literal["auto", "float32", "bfloat16", "float16"], default="auto", help="Dtype of the frozen weights.")),
            (("--no_kv_reuse",), dict(action="store_true", help="Decoder-only: recompute each prompt's keys and values in every pass instead of reusing them (the outputs are the same).")),
            allow,
        ],
    )
    command(
        "sweep", sweep,
        arguments=[
            (("file",), dict(type=str, help="The sweep file (YAML): a base recipe in train's sections, `grid:` axes and optional `tasks:`.")),
            (("--output",), dict(type=str | None, default=None, help="Output folder; default: the file's `output:`, else runs/sweeps/<file name>.")),
            (("--dry_run",), dict(action="store_true", help="Check the file and list the cells, finished or to run; train nothing.")),
            (("--shard",), dict(type=str | None, default=None, help="K/N: run only the K-th of every N cells, for N processes (one per GPU or machine) sharing one output folder.")),
        ],
    )
    command(
        "transfer", transfer, *recipe, ("method", MethodOptions),
        arguments=[
            (("--methods",), dict(type=list[str], default=["prompt", "model"], help="Methods to train on the source task and compare (the delta is the first minus the second).")),
            (("--targets",), dict(type=list[str | dict], default=[], help="Evaluation sets: TASK=FILE, or a data section (name: its row); unset options are the source's.")),
        ],
    )
    return parser


COMMANDS = {
    "train": train, "eval": evaluate, "predict": predict, "info": info, "quickstart": quickstart, "models": models,
    "tasks": tasks, "ensemble": ensemble, "neighbors": neighbors, "export": export, "import": import_, "serve": serve,
    "similar": similar,
    "sweep": sweep, "transfer": transfer,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    try:
        check_recipe_files(rewritten(argv))  # as the parser will read them: eval --prompt P is its prompt file
        cfg = parser.parse_args(argv)
        name = cfg.command
        args = parser.instantiate(cfg)[name]
        for section, options in vars(args).items():
            if dataclasses.is_dataclass(options):
                checks.not_null(section, options)
    except ArgumentError as e:
        if debug:
            raise
        command = next((a for a in argv if a in COMMANDS), "")
        print(f"error: {parse_error(str(e))} (softprompt {command}{' ' if command else ''}--help lists the options)", file=sys.stderr)
        return 2
    except UserError as e:  # a recipe file that cannot be read, or a null where an option takes none
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    kwargs = {k: v for k, v in vars(args).items() if k not in ("config", "__path__")}
    try:
        _quiet_libraries()
        COMMANDS[name](**kwargs)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (softprompt predict ... | head): as the Python docs advise for SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the flush at exit fails no more
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def check_recipe_files(argv: list[str]) -> None:
    """Read the recipes of `--config` and `--SECTION` (a file, or written out) as jsonargparse will, refusing in one line
    naming the file (and line) or the option one that is missing, a folder, not UTF-8 or malformed YAML, or not a
    mapping of options."""
    from softprompt.yaml_file import describe, mapping, parse_yaml, read_yaml

    command = next((a for a in argv if not a.startswith("-")), None)
    sections = SECTIONS.get(command, [])
    rest = iter(argv[argv.index(command) + 1:] if command else [])
    for a in rest:
        option, given, value = a.partition("=")
        name = option.removeprefix("--")
        if not option.startswith("--") or name not in ("config", *sections):
            continue
        value = value if given else next(rest, "")
        if value.lstrip().startswith("{"):
            where, recipe = option, parse_yaml(value, option, lines=False)
        elif name == "config" and (Path(value).exists() or value.lower().endswith(SECTION_FILES)):
            where, recipe = value, read_yaml(value)
        elif name != "config" and value.lower().endswith(SECTION_FILES):
            where, recipe = value, read_yaml(value)
        elif name != "config" and Path(value).is_file():
            hint = " (a data file goes in --data.train or --data.validation)" if name == "data" else ""
            raise UserError(f"--{name} {value}: --{name} takes a YAML or JSON file of {name} options; give one option as --{name}.OPTION VALUE{hint}")
        else:
            continue  # a method's name, or what jsonargparse reports
        if recipe is None:
            raise UserError(f"{where}: the file is empty; expected a mapping of options")
        mapping(recipe, where)
        for section in sections if name == "config" else []:
            if recipe.get(section) is not None and not isinstance(recipe[section], dict):
                raise UserError(f"{where}: {section!r} is {describe(recipe[section])}, expected a mapping of its options ({section}: {{option: value}})")


TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "NoneType": "null"}


def parse_error(message: str) -> str:
    """jsonargparse's report of a value it refused (usage, then several lines per type tried) in one line: the
    option, the value given and what it takes."""
    key = re.search(r'Parser key "([^"]+)"', message)
    given = re.search(r"(?:Given|Got) value: ?(.*)", message)
    if not (key and given):
        return " ".join(message.split())
    expected = re.findall(r"Expected an? (<class '(\w+)'>|typing\.Literal\[(.*?)\])", message)
    kinds = [TYPE_NAMES.get(name, name) if name else f"one of {literal}" for _, name, literal in expected]
    takes = f": it takes {' or '.join(dict.fromkeys(kinds))}" if kinds else ""
    return f"--{key[1]}: {given[1].strip()!r} is not a valid value{takes}"


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
