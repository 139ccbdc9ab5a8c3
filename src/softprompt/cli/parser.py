"""The command line's grammar: one jsonargparse subcommand per command, its options from the dataclasses of
options.py (a YAML recipe via --config, then `--section.option=value` overrides), and the spellings jsonargparse does
not read rewritten as it reads them."""

import inspect
import sys
from argparse import SUPPRESS
from typing import Literal

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from softprompt import __version__
from softprompt.cli.inference import ensemble, predict, serve
from softprompt.cli.inspection import info, models, neighbors, similar, tasks
from softprompt.cli.interop import export, import_
from softprompt.cli.training import evaluate, quickstart, sweep, train, transfer
from softprompt.options import (
    DataOptions,
    Family,
    MethodOptions,
    ModelOptions,
    PromptOptions,
    ServeOptions,
    TrainOptions,
)

COMMANDS = {  # each command's name and function; its docstring is the command's help
    "train": train,
    "eval": evaluate,
    "predict": predict,
    "info": info,
    "quickstart": quickstart,
    "models": models,
    "tasks": tasks,
    "ensemble": ensemble,
    "neighbors": neighbors,
    "similar": similar,
    "export": export,
    "import": import_,
    "serve": serve,
    "sweep": sweep,
    "transfer": transfer,
}
SECTION_FILES = (".yaml", ".yml", ".json")
SECTIONS: dict[str, list[str]] = {}  # each command's option sections, filled by build_parser
SECTION_FILE_HELP = {  # --SECTION: its metavar and help, where the command line also takes a name there
    "method": (
        "NAME",
        "A method (prompt, model, prompt-design, prefix, lora, adapter), or a YAML file of its options.",
    ),
}


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
    if argv[start : start + 1] != [command]:
        return argv
    out, rest = argv[: start + 1], iter(argv[start + 1 :])
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
    return _rewrite_option(
        argv, "eval", "--prompt", lambda value: None if value.lower().endswith(SECTION_FILES) else value
    )


def _method_name_option(argv: list[str]) -> list[str]:
    """`train --method NAME` (or --method=NAME; transfer too) names the method: --method.name=NAME. A recipe file or a
    JSON object given to --method stays the method section, as jsonargparse has it."""
    for command in ("train", "transfer"):
        argv = _rewrite_option(
            argv, command, "--method", lambda value: None if _is_section(value) else f"--method.name={value}"
        )
    return argv


def _serve_model_name(argv: list[str]) -> list[str]:
    """`serve --model.name M`, as the other commands spell it, is serve's --model M."""
    return _rewrite_option(argv, "serve", "--model.name", lambda value: f"--model={value}")


def build_parser() -> ArgumentParser:
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = Parser(
        prog="softprompt",
        description="Prompt tuning for frozen Hugging Face models. Add --debug anywhere for tracebacks.",
        exit_on_error=False,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"softprompt {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks on errors.")
    commands = parser.add_subcommands(dest="command")

    def command(name: str, *sections, arguments=(), flat=None, skip=(), unread=None):
        """`sections` add --SECTION.FIELD options from (section, Options class) pairs, and --config for a recipe
        holding them; `flat` adds an Options class's fields as --FIELD, less those in `skip`; `unread` maps a
        section to the fields the command reads of it: the others are accepted (a recipe holds them) but not listed."""
        fn = COMMANDS[name]
        SECTIONS[name] = [section for section, _ in sections]
        doc = inspect.cleandoc(fn.__doc__)
        # main() reports a bad value in one line; an option must be spelled whole (no --data.label_col for _column)
        p = ArgumentParser(description=doc, exit_on_error=False, allow_abbrev=False)
        if sections:
            p.add_argument("--config", action=ActionConfigFile, help="A YAML recipe; later options override it.")
        for section, cls in sections:
            p.add_class_arguments(cls, section)
        for args, kwargs in arguments:
            p.add_argument(*args, **kwargs)
        if flat is not None:
            p.add_class_arguments(flat, None, skip=set(skip), as_group=False)
        for action in p._actions:  # jsonargparse's --SECTION takes a file of the section's options
            section, _, field = action.dest.partition(".")
            if action.option_strings == [f"--{section}"] and section in SECTIONS[name]:
                action.metavar, action.help = SECTION_FILE_HELP.get(
                    section, ("FILE", f"A YAML file of {section} options.")
                )
            if unread and section in unread and field not in unread[section]:
                action.help = SUPPRESS
        commands.add_subcommand(name, p, help=doc.split("\n\n")[0].replace("\n", " "))

    recipe = (("model", ModelOptions), ("prompt", PromptOptions), ("data", DataOptions), ("train", TrainOptions))
    allow = (
        ("--allow_other_model",),
        dict(action="store_true", help="Use a prompt file whose model fingerprint differs from the model's."),
    )

    device = (("--device",), dict(type=str, default="auto", help="auto (CUDA when available), cpu, or cuda[:N]."))

    def json_flag(text: str):  # every command's --json, its function's json_output
        return (("--json",), dict(dest="json_output", action="store_true", help=text))

    command("train", *recipe, ("method", MethodOptions), arguments=[allow])
    command(
        "eval",
        *recipe,
        unread={"prompt": (), "train": ("eval_batch_size",)},
        arguments=[
            (
                ("prompt_file",),
                dict(
                    nargs="?",
                    type=str | None,
                    default=None,
                    help="Prompt file, also given as --prompt P; without it the frozen model is scored alone.",
                ),
            ),
            allow,
            device,
        ],
    )
    command(
        "predict",
        ("model", ModelOptions),
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file.")),
            (("texts",), dict(nargs="*", type=str, help="Texts to predict; else --file, else standard input.")),
            (("--file",), dict(type=str | None, default=None, help="A UTF-8 text file with one text per line.")),
            (("--batch_size",), dict(type=int, default=64, help="Rows per forward pass.")),
            json_flag("Print JSON lines: each text with its prediction, exactly."),
            allow,
            device,
        ],
    )
    command(
        "info",
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file.")),
            json_flag("Print only JSON: the metadata with length, hidden and size (bytes)."),
        ],
    )
    command(
        "quickstart",
        arguments=[
            (("--output",), dict(type=str, default="runs/quickstart", help="Folder for the trained prompt.")),
            (("--steps",), dict(type=int, default=150, help="Training steps of 32 rows.")),
            (("--seed",), dict(type=int, default=42, help="Random seed.")),
        ],
    )
    command(
        "models",
        arguments=[json_flag("Print only JSON: one object per embedded model.")],
    )
    command("tasks")
    command(
        "ensemble",
        ("model", ModelOptions),
        ("data", DataOptions),
        arguments=[
            (("--prompts",), dict(nargs="+", type=str, required=True, help="Two or more prompt files of one task.")),
            (
                ("--batch_size",),
                dict(type=int, default=64, help="Rows per forward pass (each input counts once per prompt)."),
            ),
            json_flag("Print only JSON."),
            allow,
            device,
        ],
    )
    command(
        "neighbors",
        ("model", ModelOptions),
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file.")),
            (("-k", "--k"), dict(type=int, default=5, help="Nearest tokens to list per prompt position.")),
            json_flag(
                "Print only JSON: each position's token ids, tokens (as spelled and as text) and similarities, and the label-word counts."
            ),
            allow,
            device,
        ],
    )
    command(
        "similar",
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file to find neighbours of.")),
            (
                ("--bank",),
                dict(type=str, required=True, help="Folder searched for prompt files (.safetensors, at any depth)."),
            ),
            (("-k", "--k"), dict(type=int, default=10, help="How many of the most similar to list.")),
            json_flag("Print only JSON: the ranked files with similarities, and the skipped files with why."),
        ],
    )
    command(
        "export",
        arguments=[
            (("prompt",), dict(type=str, help="Prompt file.")),
            (
                ("--to",),
                dict(type=Literal["peft"], default="peft", help="Format: peft (a PEFT prompt-tuning adapter folder)."),
            ),
            (
                ("--output",),
                dict(
                    type=str,
                    required=True,
                    help="Folder to write (new, empty, or an earlier adapter, which is replaced).",
                ),
            ),
            (
                ("--family",),
                dict(
                    type=Family | None,
                    default=None,
                    help="Model family, when the prompt file does not record it.",
                ),
            ),
        ],
    )
    command(
        "import",
        ("model", ModelOptions),
        ("data", DataOptions),
        arguments=[
            (
                ("source",),
                dict(type=str, help="A PEFT prompt-tuning adapter folder, or a .npy file of shape (length, hidden)."),
            ),
            (("--output",), dict(type=str, required=True, help="Prompt file to write.")),
        ],
    )
    command(
        "serve",
        flat=ServeOptions,
        skip=("kv_reuse", "device"),
        arguments=[
            (
                ("--prompts",),
                dict(
                    type=str,
                    required=True,
                    help="Folder of prompt files: NAME.safetensors or NAME/prompt.safetensors serves task NAME; rescanned on POST /v1/tasks.",
                ),
            ),
            (
                ("--model",),
                dict(
                    type=str | None,
                    default=None,
                    help="Hub name or local folder of the model; default: the model the prompt files name (they must agree).",
                ),
            ),
            (
                ("--no_kv_reuse",),
                dict(
                    action="store_true",
                    help="Decoder-only: recompute each prompt's keys and values in every pass instead of reusing them (the outputs are the same).",
                ),
            ),
            allow,
            device,
        ],
    )
    command(
        "sweep",
        arguments=[
            (
                ("file",),
                dict(
                    type=str,
                    help="The sweep file (YAML): a base recipe in train's sections, `grid:` axes and optional `tasks:`.",
                ),
            ),
            (
                ("--output",),
                dict(
                    type=str | None,
                    default=None,
                    help="Output folder; default: the file's `output:`, else runs/sweeps/<file name>.",
                ),
            ),
            (
                ("--dry_run",),
                dict(action="store_true", help="Check the file and list the cells, finished or to run; train nothing."),
            ),
            (
                ("--shard",),
                dict(
                    type=str | None,
                    default=None,
                    help="K/N: run only the K-th of every N cells, for N processes (one per GPU or machine) sharing one output folder.",
                ),
            ),
            (
                ("--only",),
                dict(
                    type=str | None,
                    default=None,
                    help="'AXIS=VALUE[,VALUE...] ...': run only the cells with one of the listed values on every axis named (axes: the grid's keys, task and variant), e.g. 'task=sst2 train.seed=1,2'; with --shard, the shards split these cells. The tables still show every finished cell.",
                ),
            ),
        ],
    )
    command(
        "transfer",
        *recipe,
        ("method", MethodOptions),
        arguments=[
            (
                ("--methods",),
                dict(
                    type=list[str],
                    default=["prompt", "model"],
                    help="Methods to train on the source task and compare (the delta is the first minus the second).",
                ),
            ),
            (
                ("--targets",),
                dict(
                    type=list[str | dict],
                    default=[],
                    help="Evaluation sets: TASK=FILE, or a data section (name: its row); unset options are the source's.",
                ),
            ),
            device,
        ],
    )
    return parser
