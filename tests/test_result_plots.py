"""bench/plot_results.py draws its plots from the tables of docs/results.md: it finds them, reads every row, and writes
into docs/ only when asked (`--write`)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import plot_results  # noqa: E402  bench/plot_results.py


def test_the_plots_read_every_row_of_their_tables():
    text = plot_results.RESULTS.read_text(encoding="utf-8")
    six = plot_results.table_after(text, "## Six methods at one budget")
    assert [row[0] for row in six[1:]][-1] == "model tuning" and len(six) == 7
    assert plot_results.mean_std(six[2][1]) == (78.9, 1.4)
    rates = plot_results.table_after(text, "### Sensitivity to the learning rate")
    assert len(rates) == 6 and rates[1][0] == "vanilla"
    assert len(plot_results.table_after(text, "### Sensitivity to the initialisation")) == 6
    assert [row[0] for row in plot_results.table_after(text, "## Domain shift")][1:] == [
        "SST-2 dev (in domain)",
        "MR",
        "SST-5 test as binary",
    ]


def test_the_benchmark_plot_reads_the_training_and_server_tables():
    text = plot_results.BENCHMARKS.read_text(encoding="utf-8")
    training = plot_results.table_after(text, "## Training")
    assert [row[0] for row in training[1:] if row[1] == "no"] == ["minilm", "smollm2", "t5"]
    server = plot_results.table_after(text, "### Server (HTTP on loopback, mixed tasks)")
    assert [row[1] for row in server[1:]] == ["1", "8", "64"] * 2


def test_without_write_the_plots_go_elsewhere(capsys, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "docs").glob("*.png")}
    paths = plot_results.main(["--output", str(tmp_path)])
    assert len(paths) == 5 and all(p.stat().st_size > 0 and p.parent == tmp_path for p in paths)
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "docs").glob("*.png")} == before
