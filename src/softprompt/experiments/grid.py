"""A sweep file: a base recipe in train's sections plus `grid:` axes, expanded into cells, each checked before any
model loads.

```yaml
output: runs/sweeps/length-init          # where cells/, results.csv, results.md and the plots go
model: {name: sentence-transformers/all-MiniLM-L6-v2}
prompt: {length: 20, init: labels}
data: {...}                              # train's data section (or `tasks:` below)
train: {max_steps: 200, ...}
method: {name: prompt}
tasks:                                   # optional: named data sections, a `task` axis over them
  sst2: {task: sst2, train: ..., validation: ...}
variants:                                # optional: named sets of options, a `variant` axis over them
  vanilla: {}
  ulpt-16: {prompt.reparam: ulpt, prompt.rank: 16}
grid:                                    # dotted option names -> values; cells are their cartesian product
  prompt.length: [1, 5, 20, 100, 150]
  train.seed: [1, 2, 3]
```

An axis that does not matter to a cell's method (prompt.* beside method.name=lora, say) is left out of that cell,
so the cells that differ only there collapse into one.
"""

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from softprompt import checks
from softprompt.errors import UserError
from softprompt.files.yaml_file import describe, mapping, plain, read_yaml
from softprompt.methods import METHODS, make_method
from softprompt.models.embedded import MODELS
from softprompt.models.loading import resolve_model_path
from softprompt.options import DataOptions, MethodOptions, ModelOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training import option_checks

SECTIONS = {
    "model": ModelOptions,
    "prompt": PromptOptions,
    "data": DataOptions,
    "train": TrainOptions,
    "method": MethodOptions,
}
TASK_AXIS = "task"  # the axis over the sweep's `tasks:`
VARIANT_AXIS = "variant"  # the axis over the sweep's `variants:`
SEED_AXIS = "train.seed"  # the axis tables and plots average over
CELLS = "cells"  # OUTPUT/cells/<cell id>/: one training run each


@dataclass
class Cell:
    id: str  # stable: made from the axes' values; the cell's folder name
    axes: dict[str, Any]  # axis -> value, for the axes that matter to this cell
    model: ModelOptions
    prompt: PromptOptions
    data: DataOptions
    train: TrainOptions
    method: MethodOptions
    task: str = ""  # the `tasks:` name, else data.task

    def config(self) -> dict:
        """Every option but the output folder, as JSON holds them: what a finished cell is checked against when the
        sweep resumes (a sweep's folder may move)."""
        config = json.loads(json.dumps({s: asdict(getattr(self, s)) for s in SECTIONS}))
        del config["train"]["output_dir"]
        return config


@dataclass
class Sweep:
    path: Path
    output: Path
    axes: dict[str, list] = field(default_factory=dict)  # in the file's order, the task axis first
    cells: list[Cell] = field(default_factory=list)


def load_sweep(path: str | Path, output: str | None = None) -> Sweep:
    """Read and check a sweep file; every cell's options are checked here, before any model loads."""
    path = Path(path)
    where = str(path)
    spec = plain(mapping(read_yaml(path), where), where)
    unknown = [k for k in spec if k not in {"output", "grid", "tasks", "variants", *SECTIONS}]
    if unknown:
        raise UserError(
            f"{where}: {unknown[0]!r} is not a section (output, grid, tasks, variants, {', '.join(SECTIONS)})"
        )
    base = {s: mapping(spec.get(s), f"{where}: {s}") for s in SECTIONS}
    parser = recipe_parser()
    parse_recipe(parser, base, f"{where}: ")
    tasks = mapping(spec.get("tasks"), f"{where}: tasks")
    for name, section in tasks.items():
        parse_recipe(
            parser,
            {**base, "data": {**base["data"], **mapping(section, f"{where}: tasks.{name}")}},
            f"{where}: tasks.{name}: ",
        )
    variants = read_variants(spec.get("variants"), base, parser, f"{where}: variants")
    axes = {TASK_AXIS: list(tasks)} if tasks else {}
    if variants:
        axes[VARIANT_AXIS] = list(variants)
    for axis, values in mapping(spec.get("grid"), f"{where}: grid").items():
        axes[_check_axis(axis, f"{where}: grid")] = _check_values(values, f"{where}: grid.{axis}")
        for value in values:
            parse_recipe(parser, with_option(base, axis, value), f"{where}: grid.{axis}: {value!r}: ")
    if spec.get("output") is not None and not isinstance(spec["output"], str):
        raise UserError(f"{where}: output: expected a folder name, found {describe(spec['output'])}")
    sweep = Sweep(path, Path(output or spec.get("output") or Path("runs/sweeps") / path.stem), axes)
    checks.output_folder("--output", str(sweep.output))
    sweep.cells = expand(base, tasks, axes, parser, sweep.output, where, variants)
    return sweep


def read_variants(spec, base: dict, parser, where: str) -> dict[str, dict]:
    """`variants:` checked: name -> {section.option: value}, each set valid on the base recipe."""
    variants = {}
    for name, options in mapping(spec, where).items():
        options = mapping(options, f"{where}.{name}")
        recipe = base
        for axis, value in options.items():
            recipe = with_option(recipe, _check_axis(axis, f"{where}.{name}", "an option"), value)
        parse_recipe(parser, recipe, f"{where}.{name}: ")
        variants[str(name)] = options
    return variants


MAX_NAME_BYTES = 255  # the longest file or folder name most file systems take


def expand(
    base: dict,
    tasks: dict,
    axes: dict[str, list],
    parser,
    output: Path,
    where: str,
    variants: dict[str, dict] | None = None,
) -> list[Cell]:
    """The cartesian product of the axes, axes that do not matter to a cell's method left out and repeats dropped.
    A variant's options apply before the grid's, so a grid axis overrides them."""
    variants = variants or {}
    seen, chosen, options = set(), [], []
    for values in itertools.product(*axes.values()):
        assignment = dict(zip(axes, values))
        variant = variants.get(assignment.get(VARIANT_AXIS), {})
        method = assignment.get(
            "method.name", variant.get("method.name", base["method"].get("name", MethodOptions.name))
        )
        shots = assignment.get(
            "method.shots", variant.get("method.shots", base["method"].get("shots", MethodOptions.shots))
        )
        kept = {a: v for a, v in assignment.items() if matters(a, method, shots)}
        key = json.dumps(kept, sort_keys=True)
        if key not in seen:
            seen.add(key)
            chosen.append(kept)
            options.append(
                {
                    a: v
                    for a, v in {**variant, **kept}.items()
                    if a not in (TASK_AXIS, VARIANT_AXIS) and matters(a, method, shots)
                }
            )
    ids = cell_ids(chosen)
    cells = []
    for cell_id, kept, cell_options in zip(ids, chosen, options):
        if len(cell_id.encode("utf-8")) > MAX_NAME_BYTES:
            raise UserError(
                f"{where}: cell {cell_id[:60]}...: its folder name would be {len(cell_id.encode('utf-8'))} bytes, over the {MAX_NAME_BYTES} a file system allows; use shorter grid values or name them as variants"
            )
        recipe = {**base, "data": {**base["data"], **(tasks.get(kept.get(TASK_AXIS)) or {})}}
        for axis, value in cell_options.items():
            recipe = with_option(recipe, axis, value)
        recipe = with_option(recipe, "train.output_dir", str(output / CELLS / cell_id))
        options = parser.instantiate(parse_recipe(parser, recipe, f"{where}: cell {cell_id}: "))
        cell = Cell(cell_id, kept, *(getattr(options, s) for s in SECTIONS))
        cell.task = kept.get(TASK_AXIS) or cell.data.task
        check_cell(cell, f"{where}: cell {cell_id}: ")
        cells.append(cell)
    return cells


def matters(axis: str, method: str, shots: int = 0) -> bool:
    """Whether the option `axis` changes anything for `method`: an option a method owns (Method.own_options) matters
    to it alone; any other, as the method says (Method.reads)."""
    chosen = METHODS.get(method)
    if chosen is None:
        return True  # an unknown method (or a null) is refused by the cell's checks, naming the cell
    owners = [m for m in METHODS.values() if any(axis == o or axis.startswith(o + ".") for o in m.own_options)]
    if owners:
        return chosen in owners
    return chosen.reads(axis, MethodOptions(name=method, shots=shots))


def check_cell(cell: Cell, where: str) -> None:
    """The checks `softprompt train` makes, and that every local data file and model folder exists."""
    try:
        for section in SECTIONS:
            checks.not_null(section, getattr(cell, section))
        if cell.model.name and cell.model.name not in MODELS:
            resolve_model_path(cell.model.name)  # a local folder must exist; a hub name is left to the hub
        option_checks.check_training_command(cell.prompt, cell.data, cell.train)
        make_method(cell.method, cell.prompt)  # the method's own checks, and that the prompt options suit it
        make_task(cell.data)
        check_data_files(cell.data)
        if cell.method.name == "prompt-design" and not cell.data.validation:
            raise UserError("data.validation: prompt design trains nothing and is scored on validation data; give it")
    except UserError as e:
        raise UserError(where + str(e)) from None


def check_data_files(data: DataOptions) -> None:
    option_checks.check_data_files(data, "data.")


def cell_ids(assignments: list[dict]) -> list[str]:
    """Folder names from the axes' values (`length-20_init-labels_seed-1`); a short hash is added where two collide."""
    labels = {}
    for assignment in assignments:
        for axis in assignment:
            labels[axis] = {"task": "task", "model.name": "model", "method.name": "method"}.get(
                axis, axis.rsplit(".", 1)[-1]
            )
    if len(set(labels.values())) < len(labels):  # two axes with the same last part: their full names
        labels = {a: a.replace(".", "-") for a in labels}
    ids = ["_".join(f"{labels[a]}-{slug(v)}" for a, v in assignment.items()) or "base" for assignment in assignments]
    return [
        i if ids.count(i) == 1 else f"{i}-{hashlib.sha1(json.dumps(a, sort_keys=True).encode()).hexdigest()[:6]}"
        for i, a in zip(ids, assignments)
    ]


def with_option(recipe: dict, dotted: str, value) -> dict:
    """A copy of `recipe` with `section.option` set to `value`."""
    section, _, option = dotted.partition(".")
    return {**recipe, section: {**recipe.get(section, {}), option: value}}


def recipe_parser():
    """A parser of train's sections, which checks every option's name and type."""
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(exit_on_error=False)
    for section, cls in SECTIONS.items():
        parser.add_class_arguments(cls, section)
    return parser


def parse_recipe(parser, recipe: dict, where: str):
    """`recipe`'s options checked by `parser`; an error is one line starting with `where`."""
    try:
        return parser.parse_object(recipe)
    except Exception as e:  # jsonargparse's ArgumentError, over several lines: one
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise UserError(where + re.sub(r"^Parser key \"([\w.]+)\": ", r"\1: ", message)) from None


def _check_axis(axis: str, where: str, kind: str = "an axis") -> str:
    """`section.option`, the section one of train's; `where` names the place, e.g. `FILE: grid`."""
    section, _, option = str(axis).partition(".")
    if section not in SECTIONS:
        raise UserError(f"{where}.{axis}: {kind} is section.option, the section one of {', '.join(SECTIONS)}")
    names = [f.name for f in fields(SECTIONS[section])]
    if option not in names or option == "output_dir":
        raise UserError(
            f"{where}.{axis}: {option!r} is not an option of {section} ({', '.join(n for n in names if n != 'output_dir')})"
        )
    return axis


def _check_values(values, where: str) -> list:
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: give a list of one or more values")
    keys = [json.dumps(v, sort_keys=True) for v in values]
    if len(set(keys)) < len(keys):
        raise UserError(f"{where}: a value is repeated ({values})")
    return values


def slug(value) -> str:
    """A value as part of a file name; a path or hub name by its last part."""
    text = str(value).rstrip("/").rsplit("/", 1)[-1] if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"
