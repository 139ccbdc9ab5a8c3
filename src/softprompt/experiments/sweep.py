"""Running a sweep's cells, each one training run (train.train) in OUTPUT/cells/<cell id>/.

A cell is finished when its completion marker, done.json, exists: it is written atomically, last, and holds the
cell's row of results.csv and every option it ran with. A sweep run again skips finished cells; a cell folder
without the marker (a run killed mid-cell) is wiped and run again.
"""

import dataclasses
import gc
import json
import shutil
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from softprompt.errors import UserError
from softprompt.experiments.grid import CELLS, Cell, Sweep
from softprompt.experiments.plots import write_plots
from softprompt.experiments.table import write_tables
from softprompt.files.atomic import clear_temporaries, write_text_atomic
from softprompt.methods import make_method
from softprompt.models.model import SoftPromptModel
from softprompt.tasks import make_task
from softprompt.training.checkpoint import CHECKPOINTS
from softprompt.training.train import train

DONE_FILE = "done.json"
REPORTED = (  # the columns of results.csv taken from a run's report (run_report.run_report)
    "trainable_parameters",
    "base_parameters",
    "trainable_percent",
    "bytes_per_task",
    "train_seconds",
    "eval_seconds",
    "peak_memory_bytes",
    "best_step",
    "steps",
)


def finished(folder: Path) -> dict | None:
    """A finished cell's done.json; None for a cell not run or not finished."""
    path = folder / DONE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_finished(sweep: Sweep) -> list[Cell]:
    """Refuse finished cells that ran with other options than the sweep now gives them; returns the cells to run."""
    todo = []
    for cell in sweep.cells:
        done = finished(sweep.output / CELLS / cell.id)
        if done is None:
            todo.append(cell)
        elif with_new_defaults(done["config"], cell) != cell.config():
            changed = _first_difference(with_new_defaults(done["config"], cell), cell.config())
            raise UserError(
                f"{sweep.output / CELLS / cell.id}: finished with other options ({changed}): use another output folder, or remove that cell's folder to run it again"
            )
    return todo


def with_new_defaults(config: dict, cell: Cell) -> dict:
    """A finished cell's options, with those that a later softprompt added filled in at their defaults: an option
    added since does not make a finished cell differ unless the sweep sets it."""
    filled, now = json.loads(json.dumps(config)), cell.config()
    for section, options in filled.items():
        if isinstance(options, dict) and isinstance(now.get(section), dict):
            default = json.loads(json.dumps(dataclasses.asdict(type(getattr(cell, section))())))
            filled[section] = {**{k: default[k] for k in now[section] if k not in options and k in default}, **options}
    return filled


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' (1 <= K <= N) as (K, N); None for None."""
    if text is None:
        return None
    k, _, n = str(text).partition("/")
    if not (k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n)):
        raise UserError(f"--shard: give K/N with 1 <= K <= N, e.g. 1/4 (got {text!r})")
    return int(k), int(n)


def in_shard(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """The cells a shard K/N runs: the K-th, (K+N)-th, ... of the grid's order; all cells for no shard."""
    if shard is None:
        return cells
    k, n = shard
    return cells[k - 1 :: n]


def parse_only(text: str | None, sweep: Sweep) -> dict[str, list] | None:
    """'AXIS=V[,V...] [AXIS=V...]' as {axis: [values]}: a cell is selected when, on every axis named, its value is one
    of those listed (an axis named twice lists the values of both). Each value must be one of the sweep's for that
    axis. None for None."""
    if text is None:
        return None
    usage = "give AXIS=VALUE[,VALUE...], space-separated, e.g. 'task=sst2 train.seed=1,2'"
    if not text.split():
        raise UserError(f"--only: {usage} (got nothing)")
    only: dict[str, list] = {}
    for condition in text.split():
        axis, sign, listed = condition.partition("=")
        if not (axis and sign and listed):
            raise UserError(f"--only: {usage} (got {condition!r})")
        if axis not in sweep.axes:
            raise UserError(f"--only: {axis} is not an axis of {sweep.path} (its axes: {', '.join(sweep.axes)})")
        spellings = listed.split(",")
        if "" in spellings:
            raise UserError(
                f"--only: an empty value in {condition!r}: list values with commas and no spaces, e.g. train.seed=1,2"
            )
        chosen = only.setdefault(axis, [])
        for spelled in spellings:
            value = _axis_value(axis, spelled, sweep)
            if value not in chosen:
                chosen.append(value)
    return only


def _axis_value(axis: str, text: str, sweep: Sweep):
    """The value of `axis` that `text` spells: as the sweep file writes it, as YAML reads it, or the same number."""
    try:
        read = yaml.safe_load(text)
    except yaml.YAMLError:
        read = text
    for value in sweep.axes[axis]:
        if text == str(value) or read == value or _same_number(text, value):
            return value
    raise UserError(
        f"--only: {axis} has no value {text!r} in {sweep.path} (its values: {', '.join(map(str, sweep.axes[axis]))})"
    )


def _same_number(text: str, value) -> bool:
    """Whether `text` is the number `value` (YAML reads 5e-4 as a string, Python as 0.0005)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return float(text) == value
    except ValueError:
        return False


def selected(cells: list[Cell], only: dict[str, list] | None) -> list[Cell]:
    """The cells whose value on each axis of `only` is one of its values; a cell the axis does not matter to (a
    model-tuning cell on prompt.length) is kept."""
    if not only:
        return cells
    return [c for c in cells if all(axis not in c.axes or c.axes[axis] in values for axis, values in only.items())]


def shard_cells(
    sweep: Sweep, shard: tuple[int, int] | None, only: dict[str, list] | None = None
) -> tuple[list[Cell], list[Cell]]:
    """A shard's cells (`in_shard`) among those selected (`selected`) and those of them not finished yet, both in the
    grid's order."""
    mine = in_shard(selected(sweep.cells, only), shard)
    unfinished = {cell.id for cell in check_finished(sweep)}
    return mine, [cell for cell in mine if cell.id in unfinished]


def run_sweep(
    sweep: Sweep, progress: bool = True, shard: tuple[int, int] | None = None, only: dict[str, list] | None = None
) -> list[dict]:
    """Run every unfinished cell (of one shard: `in_shard`; of the selected ones: `selected`), in the grid's order;
    returns the rows of every finished cell, in the grid's order."""
    mine, todo = shard_cells(sweep, shard, only)
    if shard is None and not only:
        clear_temporaries(
            sweep.output
        )  # of results and plots whose writes a kill cut short (other processes may be writing)
    data: dict[str, tuple] = {}  # each data section's examples, loaded once
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc="sweep",
        unit="cell",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for cell in todo:
            bar.set_postfix_str(cell.id)
            row = run_cell(cell, sweep.output / CELLS / cell.id, data)
            gc.collect()  # the cell's model and optimiser state, before the next cell loads its own
            bar.update(1)
            if progress:
                tqdm.write(f"{cell.id}: {row['metric']} {row['value']:.2f}")
    finally:
        bar.close()
    done = (finished(sweep.output / CELLS / cell.id) for cell in sweep.cells)
    return [d["row"] for d in done if d is not None]  # other shards' cells, once they have finished


def run_cell(cell: Cell, folder: Path, data: dict | None = None) -> dict:
    """Train one cell into `folder` (wiped first) and write its completion marker last; returns its row."""
    if folder.exists():
        shutil.rmtree(folder)  # a half-done cell: nothing of it is kept
    task = make_task(cell.data)
    train_examples, validation = examples(cell, task, {} if data is None else data)
    model = SoftPromptModel.load(cell.model)
    method = make_method(cell.method, cell.prompt)
    result = train(model, method, task, train_examples, validation, cell.train, folder, progress=False)
    row = cell_row(cell, task.metric, result.report)
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)  # a finished cell is never resumed: its checkpoints go
    write_text_atomic(
        folder / DONE_FILE,
        json.dumps({"cell": cell.id, "axes": cell.axes, "config": cell.config(), "row": row}, indent=2) + "\n",
    )
    return row


def examples(cell: Cell, task, cache: dict) -> tuple[list, list | None]:
    """The cell's training and validation examples, read once per data section."""
    key = json.dumps(cell.config()["data"], sort_keys=True)
    if key not in cache:
        d = cell.data
        cache[key] = (
            task.load(d.train, d.limit_train),
            task.load(d.validation, d.limit_validation) if d.validation else None,
        )
    return cache[key]


def write_results(sweep: Sweep, rows: list[dict]) -> list[Path]:
    """results.csv, results.md and the plots the grid allows, in the sweep's output folder."""
    missing = len(sweep.cells) - len(rows)
    title = f"{sweep.path.name}: {len(rows)} runs" + (
        f" ({missing} of {len(sweep.cells)} cells not finished yet)" if missing else ""
    )
    return write_tables(sweep.output, rows, list(sweep.axes), title) + write_plots(sweep.output, rows, sweep.axes)


def cell_row(cell: Cell, metric: str, report: dict) -> dict:
    """A cell's row of results.csv: its id, its axes, the metric that picks the best result and its value, every
    metric, and what the run cost."""
    metrics = report["metrics"]
    return {
        "cell": cell.id,
        **cell.axes,
        "method": report["method"],
        "model": report["model"],
        "task": cell.task,
        "metric": metric,
        "value": metrics.get(metric),
        **{f"metrics.{k}": v for k, v in metrics.items()},
        **{k: report[k] for k in REPORTED},
    }


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                return _first_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            return f"{prefix}{key}: {a!r} there, {b!r} now"
    return "none"
