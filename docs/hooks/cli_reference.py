"""MkDocs hook: the CLI reference page (cli.md) gets every command's `--help`, made by the command's own parser
(softprompt.cli.parser.build_parser) as the site builds, so the reference cannot drift from the options."""

import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MARKER = "<!-- the help of every command, generated -->"
WIDTH = "100"  # the help's line width, fixed so that the page does not depend on the terminal that builds it


def command_help() -> str:
    """Markdown: `softprompt --help`, then a section per command with its `softprompt COMMAND --help`."""
    sys.path.insert(0, str(SRC))  # this checkout's package, whatever else is installed
    from softprompt.cli.parser import COMMANDS, build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        parts = ["## softprompt", "", "```text", parser.format_help().rstrip(), "```", ""]
        subcommands = parser._subcommands_action.choices  # jsonargparse's parser of each command
        for name in COMMANDS:
            parts += [f"## softprompt {name}", "", "```text", subcommands[name].format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "cli.md":
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"cli.md: the marker {MARKER!r} where the generated help goes is missing")
    return markdown.replace(MARKER, command_help())
