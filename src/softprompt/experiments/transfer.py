"""Transfer, as the paper's domain-shift tables: each method (prompt and model tuning, say) trains once on the source
task, and its result is scored on other tasks' validation data without training, side by side with the delta.

Each method's run is a sweep cell (OUTPUT/cells/<method>/), so a finished run is reused when the command runs again.
"""

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from softprompt import checks
from softprompt.errors import UserError
from softprompt.experiments.grid import CELLS, Cell, Sweep, check_cell, check_data_files, parse_recipe, recipe_parser
from softprompt.experiments.sweep import run_sweep
from softprompt.experiments.table import write_csv
from softprompt.files.atomic import write_text_atomic
from softprompt.methods import make_method
from softprompt.models.loading import pick_device
from softprompt.models.model import SoftPromptModel
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training import option_checks

JSON_FILE, CSV_FILE, MARKDOWN_FILE = "transfer.json", "transfer.csv", "transfer.md"
IN_DOMAIN = "in-domain"


@dataclass
class Target:
    name: str  # the table's row
    data: DataOptions


def targets_from(specs: list, source: DataOptions) -> list[Target]:
    """The source's own validation data first, then each target: `TASK=FILE` or a data section (a mapping; `name`
    names its row). Options a target leaves unset are the source's (verbalizers, lengths, limit_validation)."""
    if not source.validation:
        raise UserError("--data.validation: give the source task's validation data (the in-domain row)")
    parser = recipe_parser()
    out = [Target(f"{source.task} ({IN_DOMAIN})", source)]
    for n, spec in enumerate(specs, 1):
        where = f"--targets {n}: "
        if isinstance(spec, str):
            task, eq, file = spec.partition("=")
            if not (eq and task and file):
                raise UserError(f"{where}{spec!r}: give TASK=FILE or a data section")
            spec = {"task": task, "validation": file}
        spec = dict(spec)
        name = str(spec.pop("name", None) or spec.get("task") or source.task)
        section = {**asdict(source), "train": None, "limit_train": None, **spec}
        data = parser.instantiate(parse_recipe(parser, {"data": section}, where)).data
        if not data.validation:
            raise UserError(f"{where}data.validation: give the data to evaluate on")
        try:
            checks.not_null("data", data)
            option_checks.check_data(data)
            make_task(data)
            check_data_files(data)
        except UserError as e:
            raise UserError(where + str(e)) from None
        names = {t.name for t in out}
        out.append(Target(name if name not in names else f"{name} {n}", data))
    return out


def method_cells(
    model: ModelOptions,
    prompt: PromptOptions,
    data: DataOptions,
    train: TrainOptions,
    method: MethodOptions,
    methods: list[str],
    output: Path,
) -> list[Cell]:
    """One sweep cell per method, all on the source task; checked as the train command checks its options."""
    if not methods or len(set(methods)) < len(methods):
        raise UserError(f"--methods: give one or more different methods (got {methods})")
    cells = []
    for name in methods:
        cell = Cell(
            name,
            {"method.name": name},
            model,
            prompt,
            data,
            replace(train, output_dir=str(output / CELLS / name)),
            replace(method, name=name),
            task=data.task,
        )
        check_cell(cell, f"--methods {name}: ")
        cells.append(cell)
    return cells


def run_transfer(
    cells: list[Cell], targets: list[Target], output: Path, batch_size: int, progress: bool = True, device: str = "cpu"
) -> dict:
    """Train each cell not yet finished, then score each on every target on `device` (auto: CUDA when available);
    writes transfer.json, .csv and .md."""
    examples = {
        t.name: make_task(t.data).load(t.data.validation, t.data.limit_validation) for t in targets
    }  # before any model loads
    run_sweep(Sweep(output, output, {"method.name": [c.id for c in cells]}, cells), progress)
    scores: dict[str, dict[str, dict]] = {t.name: {} for t in targets}
    for cell in cells:
        method = make_method(cell.method, cell.prompt)
        model = SoftPromptModel.load(cell.model)
        model = method.load(model, output / CELLS / cell.id).to(pick_device(device))
        for target in targets:
            task = make_task(target.data)
            task.prepare(model)
            scores[target.name][cell.id] = method.evaluate(model, task, examples[target.name], batch_size, progress)
    rows = transfer_rows(targets, [c.id for c in cells], scores)
    write_text_atomic(output / JSON_FILE, json.dumps({"rows": rows, "scores": scores}, indent=2) + "\n")
    write_csv(output / CSV_FILE, rows)
    write_text_atomic(output / MARKDOWN_FILE, markdown(rows, [c.id for c in cells]))
    return {"rows": rows, "scores": scores}


def transfer_rows(targets: list[Target], methods: list[str], scores: dict) -> list[dict]:
    """A row per target: each method's value of the target task's metric, and the first method's minus the second's."""
    rows = []
    for target in targets:
        metric = make_task(target.data).metric
        row = {
            "target": target.name,
            "task": target.data.task,
            "metric": metric,
            **{m: scores[target.name][m][metric] for m in methods},
        }
        if len(methods) > 1:
            row["delta"] = row[methods[0]] - row[methods[1]]
        rows.append(row)
    return rows


def markdown(rows: list[dict], methods: list[str]) -> str:
    delta = [f"delta ({methods[0]} - {methods[1]})"] if len(methods) > 1 else []
    head = ["target", "metric", *methods, *delta]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        values = [f"{row[m]:.2f}" for m in methods] + ([f"{row['delta']:+.2f}"] if delta else [])
        lines.append("| " + " | ".join([row["target"], row["metric"], *values]) + " |")
    return "\n".join(lines) + "\n"
