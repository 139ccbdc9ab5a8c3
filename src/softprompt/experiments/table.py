"""A sweep's results: results.csv (one row per cell) and a Markdown table grouped over seeds (mean +- std, n)."""

import csv
import io
import statistics
from pathlib import Path

from softprompt.experiments.grid import SEED_AXIS
from softprompt.files.atomic import human_size, write_text_atomic

CSV_FILE = "results.csv"
MARKDOWN_FILE = "results.md"


def columns(rows: list[dict]) -> list[str]:
    """Every key of every row, in the order they first appear."""
    return list(dict.fromkeys(k for row in rows for k in row))


def write_csv(path: Path, rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: cell_text(v) for k, v in row.items()} for row in rows)
    write_text_atomic(path, out.getvalue())


def cell_text(value) -> str:
    """A CSV cell: empty for None; floats to 10 significant digits (80.8, not 80.80000000000001)."""
    if value is None:
        return ""
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def group(rows: list[dict], axes: list[str], over: str = SEED_AXIS) -> list[tuple[dict, list[dict]]]:
    """Rows grouped by every axis but `over`, in the order groups first appear: (the axes' values, the rows)."""
    groups: dict[tuple, tuple[dict, list[dict]]] = {}
    for row in rows:
        key = {a: row.get(a, "") for a in axes if a != over}
        groups.setdefault(tuple(map(str, key.values())), (key, []))[1].append(row)
    return list(groups.values())


def markdown(rows: list[dict], axes: list[str]) -> str:
    """One line per group of cells that differ only in their seed: its axes, the metric's mean +- std over the seeds
    and n, and what a task costs (trainable parameters, bytes stored) and takes (training seconds, mean)."""
    shown = [a for a in axes if a != SEED_AXIS]
    head = [*shown, "metric", "mean ± std", "n", "trainable parameters", "stored per task", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, members in group(rows, axes):
        values = [r["value"] for r in members if r.get("value") is not None]
        mean, std = mean_std(values) if values else (None, None)
        score = "-" if mean is None else f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}")
        first = members[0]
        seconds = statistics.fmean(r["train_seconds"] for r in members)
        cells = [
            *(_shown(key[a]) for a in shown),
            first["metric"],
            score,
            str(len(values)),
            f"{first['trainable_parameters']:,}",
            human_size(first["bytes_per_task"]),
            f"{seconds:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(folder: Path, rows: list[dict], axes: list[str], title: str) -> list[Path]:
    """results.csv and results.md in `folder`."""
    write_csv(folder / CSV_FILE, rows)
    note = (
        f"mean ± sample standard deviation over {SEED_AXIS} (n runs)"
        if SEED_AXIS in axes
        else "one run each (no seed axis)"
    )
    write_text_atomic(
        folder / MARKDOWN_FILE, f"# {title}\n\n{markdown(rows, axes)}\n{note}; every row of {CSV_FILE} is one run.\n"
    )
    return [folder / CSV_FILE, folder / MARKDOWN_FILE]


def _shown(value) -> str:
    return "-" if value in ("", None) else str(value)
