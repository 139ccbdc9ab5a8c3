"""The `softprompt` command: each command a plain function (training.py, inference.py, inspection.py, interop.py),
the grammar that reads their options (parser.py), and main, which runs one and turns a bad argument or a UserError
into a one-line message and an exit code (bad_arguments.py words the refusals).
"""

import dataclasses
import os
import sys

from jsonargparse import ArgumentError

from softprompt import checks
from softprompt.cli.bad_arguments import check_recipe_files, parse_error
from softprompt.cli.parser import COMMANDS, build_parser, rewritten
from softprompt.errors import UserError


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
        print(
            f"error: {parse_error(str(e))} (softprompt {command}{' ' if command else ''}--help lists the options)",
            file=sys.stderr,
        )
        return 2
    except UserError as e:  # a recipe file that cannot be read, or a null where an option takes none
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    kwargs = {k: v for k, v in vars(args).items() if k not in ("config", "__path__")}
    if sys.stdout is None:  # started with standard output closed (>&-): nowhere to write the results
        print("error: standard output is closed; give the command somewhere to write", file=sys.stderr)
        return 1
    try:
        _quiet_libraries()
        COMMANDS[name](**kwargs)
        _flush_stdout()  # a closed pipe or a full disk shows here, not at exit
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (
        BrokenPipeError
    ):  # the reader went away (softprompt predict ... | head): as the Python docs advise for SIGPIPE
        _stdout_to_devnull()
        return 1
    except OSError as e:  # the system refused a read or write the checks could not foresee (a full disk, /proc)
        if debug:
            raise
        print(f"error: {f'{e.filename}: ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:  # stdout on /dev/full
        _stdout_to_devnull()
        raise OSError(e.errno, e.strerror, "standard output") from None


def _stdout_to_devnull() -> None:
    """Point standard output at /dev/null, so that the flush at exit fails no more."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
