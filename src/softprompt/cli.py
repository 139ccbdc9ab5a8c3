"""The `softprompt` command: train, eval, predict, info and quickstart, each a plain function.

Options come from dataclasses (options.py): a YAML recipe via --config, then `--section.option=value` overrides.
"""

import json
import os
import sys
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from softprompt import __version__, checks
from softprompt.errors import UserError
from softprompt.files import human_size
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, TrainOptions


def train(model: ModelOptions, prompt: PromptOptions, data: DataOptions, train: TrainOptions, method: MethodOptions | None = None, allow_other_model: bool = False) -> dict:
    """Adapt a frozen model to a task: a soft prompt (TRAIN.OUTPUT_DIR/prompt.safetensors) or, with --method NAME,
    one of the paper's comparison methods; every run appends its report to TRAIN.OUTPUT_DIR/results.jsonl."""
    checks.check_training_command(prompt, data, train)
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
    frozen = SoftPromptModel.load(model.name or EMBEDDED_MODEL, model.family, model.dtype, model.readout_scale)
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
    if not (data.validation or data.train):
        raise UserError("--data.validation: give the data to evaluate on")
    from softprompt.loading import load_with_prompts, task_options
    from softprompt.model import EMBEDDED_MODEL, SoftPromptModel
    from softprompt.tasks import make_task

    if prompt_file:
        frozen, files = load_with_prompts([prompt_file], model.name, model.family, allow_other_model, model.dtype, model.readout_scale)
        data = task_options(files[0], data)
    else:
        frozen = SoftPromptModel.load(model.name or EMBEDDED_MODEL, model.family, model.dtype, model.readout_scale)
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
    if not texts:
        texts = [t for t in _input_text(file).splitlines() if t.strip()]
    if not texts:
        raise UserError("no texts to predict: give them as arguments, with --file, or on standard input")
    from softprompt.loading import load_with_prompts, task_options
    from softprompt.tasks import make_task

    frozen, files = load_with_prompts([prompt], model.name, model.family, allow_other_model, model.dtype, model.readout_scale)
    task = make_task(task_options(files[0]))
    task.prepare(frozen)
    out = task.predict_all(frozen, task.fields_from_texts(texts), batch_size, progress=False)
    for prediction in out:
        print(prediction)
    return out


def _input_text(file: str | None) -> str:
    """The text of --file, or of standard input without it; refuses anything that is not UTF-8 text."""
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
        print(f"{prompt}: {file.length} x {file.hidden} prompt, {human_size(size)}")
        print(json.dumps(file.metadata, indent=2, sort_keys=True))
    return file.metadata


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
    return rows


SECTION_FILES = (".yaml", ".yml", ".json")


class Parser(ArgumentParser):
    """The top-level parser: `eval --prompt P` (or --prompt=P) names the prompt file, the positional argument, unless
    P ends in .yaml, .yml or .json: then, as jsonargparse has it, P holds the prompt section of a recipe."""

    def parse_args(self, args=None, *rest, **kwargs):
        argv = _method_name_option(_prompt_file_as_positional(list(sys.argv[1:] if args is None else args)))
        return super().parse_args(argv, *rest, **kwargs)


def _prompt_file_as_positional(argv: list[str]) -> list[str]:
    start = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    if argv[start:start + 1] != ["eval"]:
        return argv
    out, rest = argv[:start + 1], iter(argv[start + 1:])
    for a in rest:
        if a == "--prompt":
            a = f"--prompt={next(rest, '')}"
        option, _, value = a.partition("=")
        out.append(value if option == "--prompt" and value and not value.lower().endswith(SECTION_FILES) else a)
    return out


def _method_name_option(argv: list[str]) -> list[str]:
    """`train --method NAME` (or --method=NAME) names the method: --method.name=NAME. A recipe file or a JSON object
    given to --method stays the method section, as jsonargparse has it."""
    start = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    if argv[start:start + 1] != ["train"]:
        return argv
    out, rest = argv[:start + 1], iter(argv[start + 1:])
    for a in rest:
        if a == "--method":
            a = f"--method={next(rest, '')}"
        option, _, value = a.partition("=")
        section = value.lower().endswith(SECTION_FILES) or value.lstrip().startswith("{")
        out.append(f"--method.name={value}" if option == "--method" and value and not section else a)
    return out


def build_parser() -> ArgumentParser:
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = Parser(prog="softprompt", description="Prompt tuning for frozen Hugging Face models. Add --debug anywhere for tracebacks.")
    parser.add_argument("--version", action="version", version=f"softprompt {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks on errors.")
    commands = parser.add_subcommands(dest="command")

    def command(name: str, fn, *sections, arguments=()):
        p = ArgumentParser(description=fn.__doc__)
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
    return parser


COMMANDS = {"train": train, "eval": evaluate, "predict": predict, "info": info, "quickstart": quickstart, "models": models}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    cfg = parser.parse_args(argv)
    name = cfg.command
    args = parser.instantiate(cfg)[name]
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


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
