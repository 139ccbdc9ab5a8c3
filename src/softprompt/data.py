"""Reading data sets: local JSONL/CSV/TSV through the `datasets` library, SQuAD v1.1 JSON, MRQA 2019 JSONL, `LABEL TEXT`
lines (SST-5, TREC, MR as SentEval ships them), hub names where reachable.

Errors name the file and, for a malformed line, the line.
"""

import csv
import gzip
import json
import logging
import os
from pathlib import Path

from softprompt.errors import UserError, first_line

TABULAR = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


def file_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in TABULAR:
        raise UserError(f"{path}: cannot tell the format from the extension {suffix!r}: set --data.format (jsonl, csv, tsv, squad)")
    if suffix == ".json":
        return "squad" if _looks_like_squad(path) else "jsonl"
    return TABULAR[suffix]


def is_local(source: str) -> bool:
    """A data source is a local file when it exists, has a data extension or starts like a path; else a hub name."""
    return os.path.exists(os.path.expanduser(source)) or Path(source).suffix.lower() in TABULAR or source.startswith(("/", "./", "../", "~"))


def load_rows(source: str, fmt: str = "auto") -> tuple[list[dict], list[int] | None]:
    """Rows of a data set as dicts, and the 1-based line of the file where each row starts (None when not a text file)."""
    if not is_local(source):
        return _load_hub(source), None
    path = os.path.expanduser(source)
    if not os.path.exists(path):
        raise UserError(f"{source}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{source}: is a folder; give a data file")
    fmt = file_format(path, fmt)
    if fmt == "squad":
        return load_squad(path), None
    rows = _load_tabular(path, fmt)
    if not rows:
        raise UserError(f"{source}: the data set is empty")
    lines = row_lines(path, fmt)
    return rows, lines if lines is not None and len(lines) == len(rows) else None  # on any doubt, rows are counted


def where(source: str, lines: list[int] | None, index: int) -> str:
    """Where row `index` is, for messages: FILE:LINE, or FILE row N (counted from 0) when lines are unknown."""
    return f"{source}:{lines[index]}" if lines is not None else f"{source} row {index}"


def row_lines(path: str, fmt: str) -> list[int] | None:
    """The line where each data row starts, skipping what the datasets library skips; None if the file cannot be split."""
    try:
        if fmt in ("jsonl", "json"):
            found = list(_json_lines(path))
            return None if found and found[0][1].lstrip().startswith("[") else [n for n, _ in found]  # "[": a JSON array
        return [n for n, _ in _records(path, fmt)][1:]  # the first record is the header
    except (OSError, csv.Error):
        return None


def _physical_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return list(f)


def _json_lines(path: str):
    """(line number, text) of each non-blank line: JSON lines skips blank lines."""
    for n, line in enumerate(_physical_lines(path), 1):
        if line.strip(" \t\r\n"):
            yield n, line


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
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)  # its own error lines would repeat ours
    try:
        if fmt in ("jsonl", "json"):
            ds = datasets.Dataset.from_json(path, keep_in_memory=True)
        elif fmt in ("csv", "tsv"):
            kwargs = {"sep": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
            ds = datasets.Dataset.from_csv(path, keep_in_memory=True, **kwargs)
        else:
            raise UserError(f"{path}: unknown data format {fmt!r} (jsonl, csv, tsv, squad)")
    except UserError:
        raise
    except Exception as e:  # datasets/arrow/pandas errors: find the line ourselves
        while e.__cause__ is not None:  # the datasets library wraps the reader's own error
            e = e.__cause__
        raise UserError(_diagnose(path, fmt) or f"{path}: cannot read it as {fmt} ({first_line(e)})") from None
    return ds.to_list()


def _diagnose(path: str, fmt: str) -> str | None:
    """The first malformed line of a file that the datasets library refused, as a message."""
    if not any(line.strip() for line in _physical_lines(path)):
        return f"{path}: the data set is empty"
    if fmt in ("jsonl", "json"):
        for n, line in _json_lines(path):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                return f"{path}:{n}: malformed JSON ({e.msg})"
            if not isinstance(row, dict):
                return f"{path}:{n}: expected a JSON object, got {type(row).__name__}"
        return None
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
    """SQuAD v1.1 JSON -> rows {id, question, context, answers}."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    rows = []
    try:
        for article in doc["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [a["text"] for a in qa.get("answers", [])]
                    rows.append({"id": qa["id"], "question": qa["question"], "context": paragraph["context"], "answers": answers})
    except (KeyError, TypeError) as e:
        raise UserError(f"{path}: not SQuAD v1.1 JSON (missing field {e})") from None
    if not rows:
        raise UserError(f"{path}: the data set is empty")
    return rows


def load_mrqa(path: str) -> tuple[list[dict], list[int]]:
    """MRQA 2019 JSONL (optionally gzipped; a first {"header": ...} line is skipped) -> rows {id, question, context,
    answers}, one per question, and the line of each row's context."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    opener = gzip.open if path.endswith(".gz") else open
    rows, lines = [], []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except (UnicodeDecodeError, OSError) as e:
        raise UserError(f"{path}: cannot read it as MRQA JSONL ({first_line(e)})") from None
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: malformed JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
        if "header" in record:
            continue
        try:
            for qa in record["qas"]:
                rows.append({"id": qa.get("qid", qa.get("id")), "question": qa["question"], "context": record["context"], "answers": list(qa["answers"])})
                lines.append(n)
        except (KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path}:{n}: not MRQA JSONL (missing field {e})") from None
    if not rows:
        raise UserError(f"{path}: the data set is empty")
    return rows, lines


def load_labelled_lines(path: str) -> tuple[list[dict], list[int]]:
    """`LABEL TEXT` lines (label, one space, text) -> rows {label, text} and their lines; blank lines are skipped.

    UTF-8, or Latin-1 when the file is not UTF-8 (MR, the TREC training set). Lines end at "\n" only: Latin-1 text
    holds U+0085, which Python's splitlines would also take for a line end."""
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
        raise UserError(f"{source}: missing column {missing[0]!r} (columns: {', '.join(rows[0])}); set --data.{{input,target,text,label}}_column")

