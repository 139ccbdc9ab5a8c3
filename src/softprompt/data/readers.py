"""Reading data sets: local JSON lines (read line by line with the json module), CSV/TSV (pandas, every cell a string),
SQuAD v1.1 JSON, MRQA 2019 JSONL, `LABEL TEXT` lines (SST-5, TREC, MR as SentEval ships them), hub names through the
`datasets` library where reachable.

Files must be UTF-8. Errors name the file and, for a malformed line, the line; a field of the wrong type (a list where
a text goes, a string where an index goes) is an error too, never read as something else.
"""

import codecs
import csv
import gzip
import json
import os
import re
import zlib
from pathlib import Path

from softprompt.errors import UserError, first_line

TABULAR = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
DATA_FOLDER = "SOFTPROMPT_DATA"  # the folder holding the public evaluation sets (docs/data.md)
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")  # $NAME or ${NAME}


def expand_path(source: str) -> str:
    """A data path with `$NAME` / `${NAME}` replaced by the environment's values and `~` by the home folder, so that a
    recipe can name `$SOFTPROMPT_DATA/sst2/dev.tsv`. A variable that is not set is refused in one line (rather than
    read as a file named `$NAME/...`), unless the path exists as written."""
    if "$" not in source:
        return os.path.expanduser(source)
    expanded = os.path.expandvars(source)
    unset = [a or b for a, b in VARIABLE.findall(expanded) if (a or b) not in os.environ]
    if unset and not os.path.exists(os.path.expanduser(source)):
        name = unset[0]
        hint = (
            "export it to the folder holding the public data sets (docs/data.md)"
            if name == DATA_FOLDER
            else "export it, or write the path out"
        )
        raise UserError(f"{source}: ${name} is not set: {hint}")
    return os.path.expanduser(expanded if not unset else source)


def file_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in TABULAR:
        raise UserError(
            f"{path}: cannot tell the format from the extension {suffix!r}: set --data.format (jsonl, csv, tsv, squad)"
        )
    if suffix == ".json":
        return "squad" if _looks_like_squad(path) else "jsonl"
    return TABULAR[suffix]


def is_local(source: str) -> bool:
    """A data source is a local file when it exists, has a data extension, starts like a path or names an environment
    variable ($SOFTPROMPT_DATA/...); else a hub name."""
    return (
        source.startswith("$")
        or os.path.exists(expand_path(source))
        or Path(source).suffix.lower() in TABULAR
        or source.startswith(("/", "./", "../", "~"))
    )


def load_rows(source: str, fmt: str = "auto") -> tuple[list[dict], list[int] | None]:
    """Rows of a data set as dicts, and the 1-based line of the file where each row starts (None when not a text file)."""
    if not is_local(source):
        return _load_hub(source), None
    path = expand_path(source)
    if not os.path.exists(path):
        raise UserError(f"{source}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{source}: is a folder; give a data file")
    fmt = file_format(path, fmt)
    if fmt == "squad":
        return load_squad(path), None
    if fmt in ("jsonl", "json"):
        rows, lines = load_json_rows(path)
    else:
        rows = _load_tabular(path, fmt)
        lines = row_lines(path, fmt)
    if not rows:
        raise UserError(f"{source}: the data set is empty")
    return rows, lines if lines is not None and len(lines) == len(rows) else None  # on any doubt, rows are counted


def where(source: str, lines: list[int] | None, index: int) -> str:
    """Where row `index` is, for messages: FILE:LINE, or FILE row N (counted from 0) when lines are unknown."""
    return f"{source}:{lines[index]}" if lines is not None else f"{source} row {index}"


def row_lines(path: str, fmt: str) -> list[int] | None:
    """The line where each CSV/TSV data row starts, skipping what pandas skips; None if the file cannot be split."""
    try:
        return [n for n, _ in _records(path, fmt)][1:]  # the first record is the header
    except (OSError, csv.Error):
        return None


def read_text(path: str, opener=open) -> str:
    """A file's text, which must be UTF-8 (a leading byte order mark is dropped); else an error naming the line."""
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot read it ({first_line(e)})") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x})") from None


def parse_json(text: str, path: str, line: int | None = None):
    """JSON text as Python values; malformed or too deeply nested JSON is an error naming the file and line (`line`,
    or where the JSON breaks in `text`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{line or e.lineno}: malformed JSON ({e.msg})") from None
    except RecursionError:
        raise UserError(f"{path}{f':{line}' if line else ''}: JSON nested too deeply") from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise UserError(f"{path}{f':{line}' if line else ''}: malformed JSON ({first_line(e)})") from None


def load_json_rows(path: str) -> tuple[list[dict], list[int] | None]:
    """JSON lines (one object a line, blank lines skipped), or a JSON array of objects, as rows that all have every
    column (None where a row lacks one, as the datasets library fills them), and the line of each (None for an array)."""
    text = read_text(path)
    found = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip(" \t\r")]
    if found and found[0][1].lstrip().startswith("[") and (len(found) == 1 or not _complete_json(found[0][1])):
        array = parse_json(text, path)
        if not isinstance(array, list):
            raise UserError(f"{path}: expected JSON lines or a JSON array of objects")
        for i, row in enumerate(array):
            if not isinstance(row, dict):
                where = f"{path}:{found[0][0]}" if len(found) == 1 else f"{path} row {i}"
                raise UserError(f"{where}: expected a JSON object, got {json_type(row)}")
        return _every_column(array), None
    rows = []
    for n, line in found:
        row = parse_json(line, path, n)
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: expected a JSON object, got {json_type(row)}")
        rows.append(row)
    return _every_column(rows), [n for n, _ in found]


def _complete_json(line: str) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def json_type(value) -> str:
    """What a JSON value is, for messages: "an array", "null", ..."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _every_column(rows: list[dict]) -> list[dict]:
    columns = dict.fromkeys(key for row in rows for key in row)
    return rows if all(len(row) == len(columns) for row in rows) else [{c: row.get(c) for c in columns} for row in rows]


def _physical_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return list(f)


def _records(path: str, fmt: str):
    """(first line, fields) of each CSV/TSV record; like pandas, skip lines holding only spaces or tabs (but no delimiter)."""
    delimiter = "\t" if fmt == "tsv" else ","
    blank = " \t\r\n".replace(delimiter, "")
    physical = _physical_lines(path)
    reader = csv.reader(physical, delimiter=delimiter, quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL)
    start = 1
    for fields in reader:
        if not (reader.line_num == start and not physical[start - 1].strip(blank)):
            yield start, fields
        start = reader.line_num + 1


def _load_tabular(path: str, fmt: str) -> list[dict]:
    """CSV/TSV rows through pandas, every cell a string (so "NA" or "007" stay as written); empty cells are None."""
    import pandas

    if fmt not in ("csv", "tsv"):
        raise UserError(f"{path}: unknown data format {fmt!r} (jsonl, csv, tsv, squad)")
    read_text(path)  # UTF-8, or an error naming the line
    kwargs = {"sep": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    try:
        frame = pandas.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8", **kwargs)
    except pandas.errors.EmptyDataError:
        return []
    except Exception as e:  # pandas' parser errors: find the line ourselves
        raise UserError(_diagnose(path, fmt) or f"{path}: cannot read it as {fmt} ({first_line(e)})") from None
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")


def _diagnose(path: str, fmt: str) -> str | None:
    """The first malformed line of a CSV/TSV file that pandas refused, as a message."""
    width = None
    try:
        for n, fields in _records(path, fmt):
            if width is None:
                width = len(fields)
            elif len(fields) > width:  # pandas fills short rows and refuses long ones
                return f"{path}:{n}: expected {width} fields, found {len(fields)}"
    except csv.Error as e:
        return f"{path}: cannot read it as {fmt} ({e})"
    return None


def _looks_like_squad(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(4096)
    return head.lstrip().startswith("{") and '"data"' in head and "\n{" not in head.strip()


def load_squad(path: str) -> list[dict]:
    """SQuAD v1.1 JSON -> rows {id, question, context, answers}. A field of the wrong type is an error naming the file
    and where in the JSON it is (data[0].paragraphs[2].qas[1])."""
    doc = parse_json(read_text(path), path)
    rows = []
    for a, article in enumerate(field(doc, "data", list, path)):
        for p, paragraph in enumerate(field(article, "paragraphs", list, f"{path} data[{a}]")):
            where = f"{path} data[{a}].paragraphs[{p}]"
            context = field(paragraph, "context", str, where)
            for q, qa in enumerate(field(paragraph, "qas", list, where)):
                here = f"{where}.qas[{q}]"
                answers = field(qa, "answers", list, here, required=False) or []
                texts = [field(answer, "text", str, f"{here}.answers[{n}]") for n, answer in enumerate(answers)]
                rows.append(
                    {
                        "id": str(field(qa, "id", (str, int), here)),
                        "question": field(qa, "question", str, here),
                        "context": context,
                        "answers": texts,
                    }
                )
    if not rows:
        raise UserError(f"{path}: the data set is empty")
    return rows


KINDS = {str: "a string", list: "an array", dict: "an object", int: "an integer", float: "a number", bool: "a boolean"}


def field(record, key: str, kind: type | tuple[type, ...], where: str, required: bool = True, name: str | None = None):
    """`record[key]`, which must be of `kind` (a type or a tuple of types); else an error naming `where` (FILE:LINE,
    or FILE and a place in it) and the field as `name` (default: `key`). A missing or null field is None when not
    `required`."""
    name = name or key
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object holding {name!r}, found {json_type(record)}")
    value = record.get(key)
    if value is None:
        if required:
            raise UserError(f"{where}: missing field {name!r}")
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise UserError(
            f"{where}: field {name!r} is {json_type(value)}, expected {' or '.join(KINDS[k] for k in kinds)}"
        )
    return value


def load_mrqa(path: str) -> tuple[list[dict], list[int]]:
    """MRQA 2019 JSONL (optionally gzipped; a first {"header": ...} line is skipped) -> rows {id, question, context,
    answers}, one per question, and the line of each row's context."""
    path = expand_path(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    text = read_text(path, gzip.open if path.endswith(".gz") else open)
    rows, lines = [], []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        record = parse_json(line, path, n)
        where = f"{path}:{n}"
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got {json_type(record)}")
        if "header" in record:
            continue
        context = field(record, "context", str, where)
        for qa in field(record, "qas", list, where):
            answers = field(qa, "answers", list, where)
            if not all(isinstance(a, str) for a in answers):
                raise UserError(
                    f"{where}: field 'answers' holds {json_type(next(a for a in answers if not isinstance(a, str)))}, expected strings"
                )
            rows.append(
                {
                    "id": qa.get("qid", qa.get("id")),
                    "question": field(qa, "question", str, where),
                    "context": context,
                    "answers": answers,
                }
            )
            lines.append(n)
    if not rows:
        raise UserError(f"{path}: the data set is empty")
    return rows, lines


def load_labelled_lines(path: str) -> tuple[list[dict], list[int]]:
    """`LABEL TEXT` lines (label, one space, text) -> rows {label, text} and their lines; blank lines are skipped.

    UTF-8, or Latin-1 when the file is not UTF-8 (MR, the TREC training set). Lines end at "\n" only: Latin-1 text
    holds U+0085, which Python's splitlines would also take for a line end."""
    path = expand_path(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    rows, lines = [], []
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        label, _, sentence = line.partition(" ")
        if not label or not sentence.strip():
            raise UserError(f"{path}:{n}: expected a label, a space and a text")
        rows.append({"label": label, "text": sentence.strip()})
        lines.append(n)
    if not rows:
        raise UserError(f"{path}: the data set is empty")
    return rows, lines


def _load_hub(name: str) -> list[dict]:
    """A data set from the hub: `name`, `name:config`, either with `@split` (default `@train`)."""
    import datasets

    name_config, _, split = name.partition("@")
    path, _, config = name_config.partition(":")
    split = split or "train"
    try:
        ds = datasets.load_dataset(path, config or None, split=split)
    except Exception as e:
        raise UserError(f"{name}: no such file, and the hub data set cannot be loaded ({first_line(e)})") from None
    return ds.to_list()


def require_columns(rows: list[dict], columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        shown = ", ".join(c if c.isprintable() else repr(c) for c in rows[0])
        raise UserError(
            f"{source}: missing column {missing[0]!r} (columns: {shown}); set --data.{{input,target,text,label}}_column"
        )
