"""YAML files a user gives (recipes, option sections, sweep files), read safely: a file missing, a folder, not UTF-8
or malformed is one line naming the file and, where there is one, the line."""

from datetime import date, datetime
from pathlib import Path

import yaml

from softprompt.data.readers import read_text
from softprompt.errors import UserError, first_line

KINDS = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "true or false",
    int: "a number",
    float: "a number",
    type(None): "nothing",
    date: "a date",
    datetime: "a date and time",
    bytes: "binary data",
    set: "a set",
}


def describe(value) -> str:
    """What a YAML value is, for messages: "a list", "a number", ..."""
    return KINDS.get(type(value), type(value).__name__)


def read_yaml(path: str | Path):
    """The values a YAML (or JSON) file holds."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a YAML file")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    return parse_yaml(read_text(str(path)), str(path))


def parse_yaml(text: str, where: str, lines: bool = True):
    """The values of YAML `text`; an error names `where` (a file, with the line when `lines`, or an option)."""

    def at(line: int) -> str:
        return f"{where}:{line}" if lines else where

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise UserError(
            f"{at(mark.line + 1) if mark else where}: malformed YAML ({e.problem or e.context or 'unreadable'})"
        ) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise UserError(
            f"{at(text.count(chr(10), 0, e.position) + 1)}: malformed YAML (character U+{code:04X} is not allowed)"
        ) from None
    except yaml.YAMLError as e:
        raise UserError(f"{where}: malformed YAML ({first_line(e)})") from None
    except RecursionError:
        raise UserError(f"{where}: YAML nested too deeply") from None


def mapping(value, where: str) -> dict:
    """`value`, which must be a mapping (name: value) or nothing (an empty entry: {}); else an error naming `where`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping (name: value), found {describe(value)}")
    return value


def plain(value, where: str, place: str = ""):
    """`value`, which must hold only what JSON holds (no date, binary or set, which YAML can write); else an error
    naming `where` (the file) and the place in it of the first other value."""
    if isinstance(value, dict):
        for key, item in value.items():
            plain(key, where, f"{place} key" if place else "a key")
            plain(item, where, f"{place}.{key}" if place else str(key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            plain(item, where, f"{place}[{n}]")
    elif not isinstance(value, (str, int, float, type(None))):
        raise UserError(
            f"{where}: {place + ': ' if place else ''}{str(value)[:40]!r} is {describe(value)}; quote it to give a text"
        )
    return value
