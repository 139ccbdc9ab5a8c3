"""A sweep's plots in the paper's style (its figures 1 and 3), as PNG files; only those the grid's axes allow:

- metric vs prompt length, a line per initialiser (when prompt.length has two or more values);
- metric vs model parameters, log x, a line per method (when model.name has two or more values).

Each point is the mean over seeds with the standard deviation as its error bar; one file per panel (task, model).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from softprompt.experiments.grid import SEED_AXIS, TASK_AXIS, slug
from softprompt.experiments.table import group, mean_std
from softprompt.files.atomic import atomic_path

LENGTH, INIT, MODEL, METHOD = "prompt.length", "prompt.init", "model.name", "method.name"
STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Figure:
    """What one kind of plot shows: metric vs the axis `x`, a line per value of the axis `lines`."""

    stem: str  # file names start with it
    x: str
    lines: str
    xlabel: str
    x_of: Callable[[list[dict]], float]  # a point's x from its rows
    panels: tuple[str, ...] | None = None  # the axes that split the plot into files (None: every other axis)


LENGTH_FIGURE = Figure("length", LENGTH, INIT, "prompt length (tokens)", lambda rs: rs[0][LENGTH])
SCALE_FIGURE = Figure("scale", MODEL, METHOD, "model parameters", lambda rs: rs[0]["base_parameters"], (TASK_AXIS,))


def write_plots(folder: Path, rows: list[dict], axes: dict[str, list]) -> list[Path]:
    """The plots the axes allow, written into `folder`; returns their paths."""
    written = []
    if len(axes.get(LENGTH, [])) > 1:
        prompt_rows = [r for r in rows if r.get(LENGTH) not in (None, "")]
        prompt_axes = {a: v for a, v in axes.items() if a != METHOD}  # these rows are all prompt tuning
        written += line_plot(folder, prompt_rows, prompt_axes, LENGTH_FIGURE)
    if len(axes.get(MODEL, [])) > 1:
        written += line_plot(folder, rows, axes, SCALE_FIGURE)
    return written


def line_plot(folder: Path, rows: list[dict], axes: dict[str, list], figure: Figure) -> list[Path]:
    """One PNG per panel: metric vs `figure.x` (log scale), a line per value of `figure.lines` and of any other axis,
    points averaged over seeds. Panels: every axis but x, the lines' and the seed (or the figure's)."""
    stem, x, lines, xlabel, x_of, panels = (
        figure.stem,
        figure.x,
        figure.lines,
        figure.xlabel,
        figure.x_of,
        figure.panels,
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panel_axes = [a for a in (panels if panels is not None else axes) if a in axes and a not in (x, lines, SEED_AXIS)]
    line_axes = [a for a in axes if a not in (x, SEED_AXIS, *panel_axes)]
    paths = []
    for panel, members in group(rows, panel_axes, over=None):
        figure, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
        xs_all = set()
        lines_here = group(members, line_axes, over=None)
        for n, (line, points) in enumerate(lines_here):
            series = sorted(
                ((x_of(p), mean_std([r["value"] for r in p])) for _, p in group(points, [x], over=None)),
                key=lambda s: s[0],
            )
            xs = [s[0] for s in series]
            xs_all.update(xs)
            label = ", ".join(f"{_name(a)} {v}" for a, v in line.items() if v not in ("", None)) or "prompt tuning"
            ax.errorbar(
                xs,
                [m for _, (m, _) in series],
                yerr=[s or 0 for _, (_, s) in series],
                marker="o",
                capsize=3,
                label=label,
                linestyle=STYLES[n // 10 % len(STYLES)],
            )  # colours repeat after 10
        ax.set_xscale("log")
        if x == LENGTH:
            ax.set_xticks(sorted(xs_all), [str(v) for v in sorted(xs_all)])
        metric = members[0]["metric"]
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        where = ", ".join(f"{_name(a)} {_short(v)}" for a, v in panel.items() if v not in ("", None))
        ax.set_title(f"{metric} vs {xlabel.split(' (')[0]}" + (f"\n{where}" if where else ""), fontsize=10)
        ax.grid(True, alpha=0.3)
        if len(lines_here) > 6:  # beside the axes, not over the points
            figure.set_size_inches(9, 4.2)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        else:
            ax.legend(fontsize=8)
        figure.tight_layout()
        path = folder / (stem + "".join(f"-{slug(v)}" for v in panel.values()) + ".png")
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
        plt.close(figure)
        paths.append(path)
    return paths


def _name(axis: str) -> str:
    return {TASK_AXIS: "task", MODEL: "model", METHOD: "method"}.get(axis, axis.rsplit(".", 1)[-1])


def _short(value) -> str:
    return str(value).rstrip("/").rsplit("/", 1)[-1]
