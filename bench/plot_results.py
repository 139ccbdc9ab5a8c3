"""Plots of tables in docs/results.md and docs/benchmarks.md, drawn from the tables themselves (the numbers each table
records, not typed again here): the six methods at one budget (accuracy against trainable parameters), the
successors' sensitivity to the learning rate and to the initialisation, the domain-shift table, and the benchmarks'
ratios (training step time against PEFT and full fine-tuning, the server's micro-batching against one row at a time).

    python bench/plot_results.py           # draws them into a temporary folder and prints where
    python bench/plot_results.py --write   # draws them into docs/ (six-methods.png, lr-sensitivity.png,
                                           # init-sensitivity.png, transfer.png, benchmark-ratios.png)
"""

import argparse
import re
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"


def table_after(text: str, heading: str) -> list[list[str]]:
    """The first Markdown table under `heading`: its rows (header first), each a list of cells."""
    lines = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not set(line) <= set("|-: "):  # the line under the header
            rows.append([cell.strip().strip("*") for cell in line.strip("|").split("|")])
    return rows


def saved(fig, path: Path) -> Path:
    """Write a figure to `path` and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def mean_std(cell: str) -> tuple[float, float]:
    """`78.9 ± 1.4` -> (78.9, 1.4); `61.0` -> (61.0, 0.0)."""
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", cell.replace(",", ""))]
    return numbers[0], numbers[1] if "±" in cell else 0.0


def six_methods(text: str, folder: Path) -> Path:
    rows = table_after(text, "## Six methods at one budget")
    header, body = rows[0], rows[1:]
    acc, params = (
        header.index(next(h for h in header if h.startswith("accuracy"))),
        header.index("trainable parameters"),
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in body:
        count = max(float(row[params].replace(",", "")), 1.0)  # prompt design trains nothing: drawn at 1
        mean, std = mean_std(row[acc])
        ax.errorbar(count, mean, yerr=std, fmt="o", capsize=3)
        below = row[0].startswith("LoRA")  # beside prefix tuning's point: its label goes to the left
        ax.annotate(
            row[0],
            (count, mean),
            textcoords="offset points",
            xytext=(-6 if below else 6, -3),
            fontsize=8,
            ha="right" if below else "left",
        )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale; prompt design at 1)")
    ax.set_ylabel("SST-2 dev accuracy (first 500), mean ± std")
    ax.set_title("Six methods, 150 steps of 32, all-MiniLM-L6-v2")
    return saved(fig, folder / "six-methods.png")


def lr_sensitivity(text: str, folder: Path) -> Path:
    rows = table_after(text, "### Sensitivity to the learning rate")
    header, body = rows[0], rows[1:]
    rates = [(i, float(re.search(r"[\d.]+", h)[0])) for i, h in enumerate(header) if re.search(r"^(lr )?0\.\d+$", h)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in body:
        points = [(rate, *mean_std(row[i])) for i, rate in rates]
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[p[2] for p in points],
            marker="o",
            capsize=3,
            label=row[0],
        )
    ax.set_xscale("log")
    ax.set_xlabel("prompt learning rate (log scale)")
    ax.set_ylabel("SST-2 dev accuracy (first 500), mean ± std")
    ax.set_title("Prompt tuning and its successors, 150 steps of 32")
    ax.legend(fontsize=8)
    return saved(fig, folder / "lr-sensitivity.png")


def grouped_bars(rows: list[list[str]], columns: list[int], ylabel: str, title: str, path: Path) -> Path:
    """A group of bars per table row, a bar per column (mean, with the standard deviation where the cell has one)."""
    header, body = rows[0], rows[1:]
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, column in enumerate(columns):
        values = [mean_std(row[column]) for row in body]
        ax.bar(
            [i + (k - (len(columns) - 1) / 2) * width for i in range(len(body))],
            [v[0] for v in values],
            width,
            yerr=[v[1] for v in values],
            capsize=2,
            label=header[column],
        )
    low = min(mean_std(row[c])[0] - mean_std(row[c])[1] for row in body for c in columns)
    ax.set_ylim(max(0, low - 5), None)
    ax.set_xticks(range(len(body)), [row[0] for row in body], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return saved(fig, path)


def init_sensitivity(text: str, folder: Path) -> Path:
    rows = table_after(text, "### Sensitivity to the initialisation")
    columns = [rows[0].index(name) for name in ("random", "vocabulary", "class labels")]
    return grouped_bars(
        rows,
        columns,
        "SST-2 dev accuracy (first 500), mean ± std",
        "Initialisers, 150 steps of 32, all-MiniLM-L6-v2",
        folder / "init-sensitivity.png",
    )


def transfer(text: str, folder: Path) -> Path:
    rows = table_after(text, "## Domain shift")
    columns = [rows[0].index(name) for name in ("prompt tuning", "model tuning")]
    return grouped_bars(
        rows,
        columns,
        "accuracy (first 500 rows)",
        "Trained on SST-2, scored without training elsewhere",
        folder / "transfer.png",
    )


def benchmark_ratios(text: str, folder: Path) -> Path:
    """Two panels: step-time ratios of the CPU training table, and the server's batched / one-row requests per second."""
    training = [r for r in table_after(text, "## Training")[1:] if r[1] == "no"]  # without checkpointing
    server = table_after(text, "### Server (HTTP on loopback, mixed tasks)")
    ratio = server[0].index("batched / one row (requests/s)")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r[0] for r in training]
    for k, (column, label) in enumerate(((2, "softprompt / PEFT"), (3, "softprompt / full fine-tuning"))):
        values = [mean_std(r[column])[0] for r in training]
        left.bar([i + 0.4 * k for i in range(len(names))], values, width=0.4, label=label)
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_xticks([i + 0.2 for i in range(len(names))], names)
    left.set_ylabel("step time ratio (lower is faster)")
    left.set_title("Training step, CPU (median of rounds)")
    left.set_ylim(0, 1.35)  # room for the legend above the bars
    left.legend(fontsize=8, ncol=2, loc="upper left")
    for model in dict.fromkeys(r[0] for r in server[1:]):
        rows = [r for r in server[1:] if r[0] == model]
        right.plot([int(r[1]) for r in rows], [mean_std(r[ratio])[0] for r in rows], "o-", label=model.split("/")[-1])
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_xscale("log")
    right.set_xlabel("concurrent clients")
    right.set_ylabel("requests/s, micro-batching / one row")
    right.set_title("Server, CPU")
    right.legend(fontsize=8)
    return saved(fig, folder / "benchmark-ratios.png")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="draw into docs/ (replacing the plots there)")
    parser.add_argument("--output", type=Path, help="draw into this folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    folder = ROOT / "docs" if args.write else args.output or Path(tempfile.mkdtemp(prefix="plots-"))
    folder.mkdir(parents=True, exist_ok=True)
    text = RESULTS.read_text(encoding="utf-8")
    paths = [
        six_methods(text, folder),
        lr_sensitivity(text, folder),
        init_sensitivity(text, folder),
        transfer(text, folder),
        benchmark_ratios(BENCHMARKS.read_text(encoding="utf-8"), folder),
    ]
    for path in paths:
        print(f"written: {path}")
    return paths


if __name__ == "__main__":
    main()
