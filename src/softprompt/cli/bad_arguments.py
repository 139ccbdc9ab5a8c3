"""Bad arguments reported in one line: recipe files read before the parser reads them, and jsonargparse's
reports of refused values."""

import re
from pathlib import Path

from softprompt.cli.parser import SECTION_FILES, SECTIONS
from softprompt.errors import UserError


def check_recipe_files(argv: list[str]) -> None:
    """Read the recipes of `--config` and `--SECTION` (a file, or written out) as jsonargparse will, refusing in one line
    naming the file (and line) or the option one that is missing, a folder, not UTF-8 or malformed YAML, or not a
    mapping of options."""
    from softprompt.files.yaml_file import describe, mapping, parse_yaml, read_yaml

    command = next((a for a in argv if not a.startswith("-")), None)
    sections = SECTIONS.get(command, [])
    rest = iter(argv[argv.index(command) + 1 :] if command else [])
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
            raise UserError(
                f"--{name} {value}: --{name} takes a YAML or JSON file of {name} options; give one option as --{name}.OPTION VALUE{hint}"
            )
        else:
            continue  # a method's name, or what jsonargparse reports
        if recipe is None:
            raise UserError(f"{where}: the file is empty; expected a mapping of options")
        mapping(recipe, where)
        for section in sections if name == "config" else []:
            if recipe.get(section) is not None and not isinstance(recipe[section], dict):
                raise UserError(
                    f"{where}: {section!r} is {describe(recipe[section])}, expected a mapping of its options ({section}: {{option: value}})"
                )


TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "NoneType": "null"}


def parse_error(message: str) -> str:
    """jsonargparse's report of a value it refused (usage, then several lines per type tried) in one line: the
    option, the value given and what it takes."""
    key = re.search(r'Parser key "([^"]+)"', message)
    given = re.search(r"(?:Given|Got) value: ?(.*)", message)
    if not (key and given):
        return " ".join(message.split()) + underscores(message) + positionals_after_options(message)
    expected = re.findall(r"Expected an? (<class '(\w+)'>|typing\.Literal\[(.*?)\])", message)
    kinds = [TYPE_NAMES.get(name, name) if name else f"one of {literal}" for _, name, literal in expected]
    takes = f": it takes {' or '.join(dict.fromkeys(kinds))}" if kinds else ""
    return f"--{key[1]}: {given[1].strip()!r} is not a valid value{takes}"


def underscores(message: str) -> str:
    """For unknown options spelled with hyphens (--dry-run), a hint at their spelling with underscores (--dry_run)."""
    unknown = re.search(r"nrecognized arguments: (.*)", message)
    hyphened = [a.split("=")[0] for a in unknown[1].split() if a.startswith("--") and "-" in a[2:]] if unknown else []
    if not hyphened:
        return ""
    return f"; options are spelled with underscores: {', '.join('--' + a[2:].replace('-', '_') for a in hyphened)}"


def positionals_after_options(message: str) -> str:
    """For words left over after the options (`predict P --batch_size 8 text`), a hint that they go before them."""
    unknown = re.search(r"nrecognized arguments: (.*)", message)
    if not unknown or any(a.startswith("-") for a in unknown[1].split()):
        return ""
    return "; texts, files and other arguments without a name go before the options"
