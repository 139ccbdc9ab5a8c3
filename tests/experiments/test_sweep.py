"""Sweeps: a grid file expanded into checked cells, a resumable run, results.csv, the Markdown table and the plots."""

import csv
import json
import os
import re
import shutil
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import save_model, sentiment_rows, tiny_bert

from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.experiments import sweep as sweep_module
from softprompt.experiments.grid import load_sweep
from softprompt.experiments.plots import write_plots
from softprompt.experiments.sweep import DONE_FILE, check_finished, parse_only, run_sweep, write_results
from softprompt.experiments.table import markdown

PNG = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
# the public data sets (docs/data.md): $SOFTPROMPT_DATA, else ../shared/data beside the checkout
DATA = Path(os.environ.get("SOFTPROMPT_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny encoder-only model folder and a training file, shared by the module's sweeps."""
    root = tmp_path_factory.mktemp("sweep")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    return {"root": root, "model": save_model(tiny_bert(), root / "tiny-bert"), "data": str(data)}


def sweep_file(folder, files, grid, **sections):
    spec = {
        "output": str(folder / "out"),
        "model": {"name": files["model"]},
        "prompt": {"length": 4, "init": "vocab", "vocab_first_n": 40},
        "data": {"train": files["data"], "validation": files["data"], "verbalizers": {"0": "no", "1": "yes"}},
        "train": {"max_steps": 3, "batch_size": 10, "eval_every": 3},
        "grid": grid,
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) and key != "grid" else value
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished_sweep(files):
    """A 2 x 2 sweep (prompt length x seed), run once; its output is copied by the tests that change it."""
    folder = files["root"] / "two-by-two"
    folder.mkdir()
    sweep = load_sweep(sweep_file(folder, files, {"prompt.length": [1, 2], "train.seed": [1, 2]}))
    rows = run_sweep(sweep, progress=False)
    return sweep, rows, write_results(sweep, rows)


def copied(finished_sweep, tmp_path):
    """The finished sweep's file loaded again, with its output copied to tmp_path."""
    sweep = finished_sweep[0]
    shutil.copytree(sweep.output, tmp_path / "out")
    return load_sweep(sweep.path, str(tmp_path / "out"))


# ----- the grid -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_grid_expands_collapses_what_a_method_ignores_and_names_cells(tmp_path, files):
    grid = {
        "method.name": ["prompt", "lora"],
        "prompt.length": [2, 5],
        "prompt.init": ["random", "labels"],
        "train.seed": [1, 2],
    }
    tasks = {"a": {"train": files["data"]}, "b": {"train": files["data"], "limit_train": 4}}
    sweep = load_sweep(sweep_file(tmp_path, files, grid, tasks=tasks))
    assert list(sweep.axes) == ["task", *grid]
    assert len(sweep.cells) == 2 * (2 * 2 * 2 + 2)  # tasks x (lengths x inits x seeds for prompt + seeds for lora)
    ids = [c.id for c in sweep.cells]
    assert len(set(ids)) == len(ids) and ids[0] == "task-a_method-prompt_length-2_init-random_seed-1"
    lora = [c for c in sweep.cells if c.method.name == "lora"]
    assert [c.id for c in lora] == [
        "task-a_method-lora_seed-1",
        "task-a_method-lora_seed-2",
        "task-b_method-lora_seed-1",
        "task-b_method-lora_seed-2",
    ]
    assert all("prompt.length" not in c.axes for c in lora)
    cell = next(c for c in sweep.cells if c.id == "task-b_method-prompt_length-5_init-labels_seed-2")
    assert (cell.prompt.length, cell.prompt.init, cell.train.seed, cell.data.limit_train, cell.task) == (
        5,
        "labels",
        2,
        4,
        "b",
    )
    assert cell.train.output_dir == str(tmp_path / "out" / "cells" / cell.id) and cell.train.max_steps == 3
    assert [c.id for c in load_sweep(tmp_path / "sweep.yaml").cells] == ids  # stable


def test_a_new_method_declares_the_options_it_reads_in_its_own_class(monkeypatch):
    """A method added under methods/ alone: the grid learns from its class which options are its own (they matter
    to it and to no method that does not name them) and which shared ones it reads."""
    from softprompt.experiments.grid import matters
    from softprompt.methods import METHODS
    from softprompt.methods.base import Method

    class Frozen(Method):
        name = "frozen-rank"
        trains = False
        own_options = ("method.lora_rank",)  # shared with lora, which also names it

        @classmethod
        def reads(cls, option, options):
            return not option.startswith("train.")

    monkeypatch.setitem(METHODS, Frozen.name, Frozen)
    assert matters("method.lora_rank", "frozen-rank") and matters("method.lora_rank", "lora")
    assert not matters("method.lora_rank", "prompt") and not matters("prompt.length", "frozen-rank")
    assert not matters("train.lr", "frozen-rank") and matters("data.limit_train", "frozen-rank")
    assert matters("train.lr", "lora") and not matters("train.lr", "prompt-design")
    assert matters("train.seed", "prompt-design", shots=2) and not matters("train.seed", "prompt-design", shots=0)


@pytest.mark.slow
def test_prompt_design_runs_once_per_seed_only_when_the_seed_draws_its_shots(tmp_path, files):
    grid = {"method.name": ["prompt-design", "prompt"], "train.max_steps": [3, 6], "train.seed": [1, 2]}
    ids = lambda **method: [c.id for c in load_sweep(sweep_file(tmp_path, files, grid, method=method)).cells]  # noqa: E731
    assert ids()[:1] == ["method-prompt-design"] and len(ids()) == 1 + 4
    assert (
        ids(shots=2)[:2] == ["method-prompt-design_seed-1", "method-prompt-design_seed-2"]
        and len(ids(shots=2)) == 2 + 4
    )


@pytest.mark.slow
def test_variants_are_named_option_sets_on_an_axis_of_their_own(tmp_path, files):
    variants = {
        "vanilla": None,
        "ulpt-2": {"prompt.reparam": "ulpt", "prompt.rank": 2},
        "lora": {"method.name": "lora"},
    }
    sweep = load_sweep(
        sweep_file(tmp_path, files, {"train.lr": [0.01, 0.1], "prompt.length": [2, 3]}, variants=variants)
    )
    assert list(sweep.axes) == ["variant", "train.lr", "prompt.length"]
    cells = {c.id: c for c in sweep.cells}
    assert len(cells) == 2 * 2 * 2 + 2  # prompt lengths matter to the two prompt variants, not to lora
    ulpt = cells["variant-ulpt-2_lr-0.1_length-3"]
    assert (ulpt.prompt.reparam, ulpt.prompt.rank, ulpt.train.lr, ulpt.prompt.length, ulpt.axes["variant"]) == (
        "ulpt",
        2,
        0.1,
        3,
        "ulpt-2",
    )
    vanilla = cells["variant-vanilla_lr-0.01_length-2"]
    assert (vanilla.prompt.reparam, vanilla.method.name) == ("none", "prompt")
    assert (
        cells["variant-lora_lr-0.01"].method.name == "lora"
        and "prompt.length" not in cells["variant-lora_lr-0.01"].axes
    )
    beside_lora = load_sweep(
        sweep_file(tmp_path, files, {"method.name": ["prompt", "lora"]}, variants={"u": {"prompt.reparam": "ulpt"}})
    )
    assert [(c.id, c.prompt.reparam) for c in beside_lora.cells] == [
        ("variant-u_method-prompt", "ulpt"),
        ("variant-u_method-lora", "none"),
    ]
    overridden = load_sweep(
        sweep_file(tmp_path, files, {"prompt.rank": [3]}, variants={"u": {"prompt.reparam": "ulpt", "prompt.rank": 2}})
    )
    assert overridden.cells[0].prompt.rank == 3  # the grid wins over a variant


def test_class_labels_at_length_one_are_a_cell_like_the_others(tmp_path, files):
    sweep = load_sweep(sweep_file(tmp_path, files, {"prompt.length": [1, 5], "prompt.init": ["vocab", "labels"]}))
    assert [c.id for c in sweep.cells] == [
        "length-1_init-vocab",
        "length-1_init-labels",
        "length-5_init-vocab",
        "length-5_init-labels",
    ]


BAD = [
    ({"grid": {"prompt.lenght": [1, 2]}}, "grid.prompt.lenght: 'lenght' is not an option of prompt (length, init,"),
    ({"grid": {"promt.length": [1]}}, "grid.promt.length: an axis is section.option"),
    (
        {"grid": {"prompt.length": ["x"]}},
        "grid.prompt.length: 'x': prompt.length: Expected a <class 'int'>. Got value: x",
    ),
    ({"grid": {"prompt.length": []}}, "grid.prompt.length: give a list of one or more values"),
    ({"grid": {"train.seed": [1, 1]}}, "grid.train.seed: a value is repeated"),
    ({"grid": {"method.name": ["prompt", "nope"]}}, "grid.method.name: 'nope': method.name: Expected a typing.Literal"),
    ({"grid": {"prompt.length": [0, 5]}}, "cell length-0: --prompt.length must be at least 1 (got 0)"),
    ({"train": {"batch_size": "many"}}, "train.batch_size: Expected a <class 'int'>"),
    ({"trian": {"seed": 1}}, "'trian' is not a section"),
    ({"grid": {"model.name": ["./nowhere"]}}, "cell model-nowhere: model folder ./nowhere: no such folder"),
    ({"tasks": {"x": {"train": "missing.jsonl"}}}, "cell task-x_seed-1: data.train: missing.jsonl: no such file"),
    ({"tasks": {"x": {"txt_column": "s"}}}, "tasks.x: Group 'data' does not accept option 'txt_column'"),
    (
        {"grid": {"method.name": ["prompt", "lora"]}, "prompt": {"reparam": "ulpt"}},
        "cell method-lora: --prompt.reparam: ulpt reparameterises a soft prompt",
    ),
    ({"variants": {"u": {"prompt.reparm": "ulpt"}}}, "variants.u.prompt.reparm: 'reparm' is not an option of prompt"),
    ({"variants": {"u": {"prompt.reparam": "nope"}}}, "variants.u: prompt.reparam: Expected a typing.Literal"),
    ({"variants": {"u": ["prompt.reparam"]}}, "variants.u: expected a mapping"),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_a_bad_sweep_file_is_refused_in_one_line_naming_the_field(tmp_path, files, change, message):
    change = dict(change)
    grid = change.pop("grid", {"train.seed": [1]})
    path = sweep_file(tmp_path, files, grid, **change)
    with pytest.raises(UserError) as error:
        load_sweep(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_the_command_refuses_a_bad_field_with_one_line_and_writes_nothing(tmp_path, files, capsys):
    path = sweep_file(tmp_path, files, {"prompt.length": [1, 2], "train.sed": [1, 2]})
    assert main(["sweep", str(path)]) == 1
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith(f"error: {path}: grid.train.sed: 'sed' is not an option of train")
        and "Traceback" not in err
    )
    assert not (tmp_path / "out").exists()
    path = sweep_file(tmp_path, files, {"prompt.length": [1, 2]})
    assert main(["sweep", str(path), "--dry_run"]) == 0
    assert "sweep: 2 cells, 0 finished, 2 to run" in capsys.readouterr().out and not (tmp_path / "out").exists()


# ----- running, resuming ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_writes_one_row_per_cell_the_table_over_seeds_and_the_plots(finished_sweep):
    sweep, rows, written = finished_sweep
    with (sweep.output / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["cell"] for r in table] == ["length-1_seed-1", "length-1_seed-2", "length-2_seed-1", "length-2_seed-2"]
    assert [(r["prompt.length"], r["train.seed"]) for r in table] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert all(r["metric"] == "accuracy" and r["value"] == r["metrics.accuracy"] for r in table)
    assert [int(r["trainable_parameters"]) for r in table] == [32, 32, 64, 64]  # length x width 32
    assert all(int(r["bytes_per_task"]) > 0 and float(r["train_seconds"]) > 0 and r["steps"] == "3" for r in table)
    md = (sweep.output / "results.md").read_text()
    for length in ("1", "2"):
        values = [float(r["value"]) for r in table if r["prompt.length"] == length]
        assert f"| {length} | accuracy | {statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} | 2 |" in md
    plots = sorted(sweep.output.glob("*.png"))
    assert plots == [sweep.output / "length.png"] and plots[0] in written
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 5000 for p in plots)


def test_the_table_computes_mean_and_sample_std_over_seeds():
    rows = [
        {
            "m": "a",
            "train.seed": s,
            "metric": "accuracy",
            "value": v,
            "trainable_parameters": 10,
            "bytes_per_task": 100,
            "train_seconds": 1.0,
        }
        for s, v in ((1, 70.0), (2, 80.0), (3, 90.0))
    ] + [
        {
            "m": "b",
            "train.seed": 1,
            "metric": "accuracy",
            "value": 50.0,
            "trainable_parameters": 10,
            "bytes_per_task": 100,
            "train_seconds": 1.0,
        }
    ]
    table = markdown(rows, ["m", "train.seed"])
    assert "| a | accuracy | 80.00 ± 10.00 | 3 |" in table and "| b | accuracy | 50.00 | 1 |" in table


@pytest.mark.slow
def test_plots_follow_the_axes_the_grid_has(tmp_path):
    rows = [
        {
            "model.name": m,
            "method.name": method,
            "prompt.length": length if method == "prompt" else "",
            "train.seed": s,
            "metric": "accuracy",
            "value": 50.0 + s + length,
            "base_parameters": size,
        }
        for m, size in (("org/small", 1e6), ("org/large", 1e8))
        for method in ("prompt", "model")
        for length in (1, 5)
        for s in (1, 2)
    ]
    axes = {
        "model.name": ["org/small", "org/large"],
        "method.name": ["prompt", "model"],
        "prompt.length": [1, 5],
        "train.seed": [1, 2],
    }
    written = write_plots(tmp_path, rows, axes)
    assert sorted(p.name for p in written) == ["length-large.png", "length-small.png", "scale.png"]
    assert all(p.read_bytes().startswith(PNG) for p in written)
    assert write_plots(tmp_path / "none", rows, {"train.seed": [1, 2]}) == []


@pytest.mark.slow
def test_a_second_run_reruns_nothing_and_a_half_done_cell_is_run_again(finished_sweep, tmp_path, monkeypatch):
    sweep = copied(finished_sweep, tmp_path)
    markers = {c.id: sweep.output / "cells" / c.id / DONE_FILE for c in sweep.cells}
    stamps = {i: p.stat().st_mtime_ns for i, p in markers.items()}
    real, calls = sweep_module.train, []

    def counted(*args, **kwargs):
        calls.append(str(args[-1]))  # the cell's folder
        return real(*args, **kwargs)

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "train", counted)
    assert run_sweep(sweep, progress=False) == finished_sweep[1] and calls == []

    # a cell killed after training, before its marker: its folder stays without one
    half = "length-2_seed-1"
    markers[half].unlink()
    monkeypatch.setattr(sweep_module, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, progress=False)
    assert (sweep.output / "cells" / half / "prompt.safetensors").is_file() and not markers[half].exists()
    (sweep.output / "cells" / half / "stray.txt").write_text("from the killed run")

    monkeypatch.setattr(sweep_module, "train", counted)
    rows = run_sweep(sweep, progress=False)
    assert calls == [str(sweep.output / "cells" / half)]
    assert markers[half].is_file() and not (sweep.output / "cells" / half / "stray.txt").exists()
    assert all(markers[i].stat().st_mtime_ns == stamps[i] for i in markers if i != half)
    assert [r["cell"] for r in rows] == [c.id for c in sweep.cells]


@pytest.mark.slow
def test_shards_split_the_cells_between_processes_sharing_one_output(finished_sweep, tmp_path, monkeypatch):
    sweep = copied(finished_sweep, tmp_path)
    ids = [c.id for c in sweep.cells]
    for cell in ids:
        (sweep.output / "cells" / cell / DONE_FILE).unlink()
    real, calls = sweep_module.train, []
    monkeypatch.setattr(
        sweep_module, "train", lambda *args, **kwargs: calls.append(Path(args[-1]).name) or real(*args, **kwargs)
    )

    first = run_sweep(sweep, progress=False, shard=(1, 2))
    assert calls == ids[0::2] and [r["cell"] for r in first] == ids[0::2]  # only its own cells; the others not finished
    assert "(2 of 4 cells not finished yet)" in write_results(sweep, first)[1].read_text()
    second = run_sweep(sweep, progress=False, shard=(2, 2))
    assert calls == ids[0::2] + ids[1::2] and [r["cell"] for r in second] == ids  # the last shard to end sees them all
    assert run_sweep(sweep, progress=False, shard=(1, 2)) == second and len(calls) == 4


@pytest.mark.parametrize("shard", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_refused_in_one_line_before_anything_runs(finished_sweep, tmp_path, capsys, monkeypatch, shard):
    monkeypatch.setattr(sweep_module, "train", lambda *args, **kwargs: pytest.fail("a cell ran"))
    assert main(["sweep", str(finished_sweep[0].path), "--output", str(tmp_path / "none"), "--shard", shard]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: --shard: give K/N with 1 <= K <= N, e.g. 1/4 (got '{shard}')"
    )
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_only_runs_the_cells_of_the_chosen_axis_values(finished_sweep, tmp_path, monkeypatch, capsys):
    sweep = copied(finished_sweep, tmp_path)
    ids = [c.id for c in sweep.cells]  # length-1_seed-1, length-1_seed-2, length-2_seed-1, length-2_seed-2
    for cell in ids:
        (sweep.output / "cells" / cell / DONE_FILE).unlink()
    real, calls = sweep_module.train, []
    monkeypatch.setattr(
        sweep_module, "train", lambda *args, **kwargs: calls.append(Path(args[-1]).name) or real(*args, **kwargs)
    )

    only = parse_only("prompt.length=2", sweep)
    assert only == {"prompt.length": [2]}  # the value as the grid holds it, not the text
    assert parse_only("train.seed=2 prompt.length=2.0 train.seed=1,2", sweep) == {
        "train.seed": [2, 1],
        "prompt.length": [2],
    }
    assert [r["cell"] for r in run_sweep(sweep, progress=False, only=only)] == ids[2:] and calls == ids[2:]
    assert (
        main(
            [
                "sweep",
                str(sweep.path),
                "--output",
                str(sweep.output),
                "--only",
                "prompt.length=1,2 train.seed=2",
                "--dry_run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("sweep: 2 cells (only prompt.length=1,2 train.seed=2: 2 of 4 cells), 1 finished, 1 to run")
    assert f"to run  {ids[1]}" in out and f"done    {ids[3]}" in out and ids[0] not in out


@pytest.mark.parametrize(
    "only, message",
    [
        ("seed=1", "--only: seed is not an axis of {path} (its axes: prompt.length, train.seed)"),
        ("train.seed=3", "--only: train.seed has no value '3' in {path} (its values: 1, 2)"),
        ("train.seed=[", "--only: train.seed has no value '[' in {path} (its values: 1, 2)"),
        (
            "train.seed=1, prompt.length=2",
            "--only: an empty value in 'train.seed=1,': list values with commas and no spaces, e.g. train.seed=1,2",
        ),
        ("=1", "--only: give AXIS=VALUE[,VALUE...], space-separated, e.g. 'task=sst2 train.seed=1,2' (got '=1')"),
        ("  ", "--only: give AXIS=VALUE[,VALUE...], space-separated, e.g. 'task=sst2 train.seed=1,2' (got nothing)"),
        (
            "train.seed",
            "--only: give AXIS=VALUE[,VALUE...], space-separated, e.g. 'task=sst2 train.seed=1,2' (got 'train.seed')",
        ),
    ],
)
def test_a_bad_only_is_refused_in_one_line_before_anything_runs(
    finished_sweep, tmp_path, capsys, monkeypatch, only, message
):
    monkeypatch.setattr(sweep_module, "train", lambda *args, **kwargs: pytest.fail("a cell ran"))
    path = finished_sweep[0].path
    assert main(["sweep", str(path), "--output", str(tmp_path / "none"), "--only", only]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err == "error: " + message.format(path=path) + "\n"
    assert not (tmp_path / "none").exists()


def test_finished_cells_run_with_other_options_are_refused(finished_sweep, tmp_path, files):
    copied(finished_sweep, tmp_path)
    path = sweep_file(tmp_path, files, {"prompt.length": [1, 2], "train.seed": [1, 2]}, train={"max_steps": 4})
    sweep = load_sweep(path)
    with pytest.raises(
        UserError, match=r"cells/length-1_seed-1: finished with other options \(train.max_steps: 3 there, 4 now\)"
    ):
        check_finished(sweep)


def test_a_finished_cell_keeps_its_result_but_no_checkpoints(finished_sweep):
    for cell in finished_sweep[0].cells:
        folder = Path(cell.train.output_dir)
        assert (folder / "done.json").is_file() and (folder / "prompt.safetensors").is_file()
        assert not (folder / "checkpoints").exists()


def test_csv_cells_hold_floats_to_ten_significant_digits():
    from softprompt.experiments.table import cell_text

    assert [cell_text(v) for v in (80.80000000000001, 77.39556953162821, 3, None, "x", 1e-12)] == [
        "80.8",
        "77.39556953",
        "3",
        "",
        "x",
        "1e-12",
    ]


def test_an_option_added_since_a_cell_finished_counts_only_when_set(finished_sweep, tmp_path, files):
    sweep = copied(finished_sweep, tmp_path)
    for cell in sweep.cells:  # as a softprompt without model.trust_pickle wrote them
        marker = sweep.output / "cells" / cell.id / DONE_FILE
        done = json.loads(marker.read_text())
        del done["config"]["model"]["trust_pickle"]
        marker.write_text(json.dumps(done))
    assert check_finished(sweep) == []
    path = sweep_file(tmp_path, files, {"prompt.length": [1, 2], "train.seed": [1, 2]}, model={"trust_pickle": True})
    with pytest.raises(UserError, match=r"finished with other options \(model.trust_pickle: False there, True now\)"):
        check_finished(load_sweep(path, str(sweep.output)))


@pytest.mark.skipif(not DATA.is_dir(), reason="the shipped sweep files read $SOFTPROMPT_DATA")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_each_shipped_sweep_file_passes_its_checks_with_the_runs_its_header_counts(path, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SOFTPROMPT_DATA", str(DATA))  # the files name $SOFTPROMPT_DATA/sst2/train.tsv and the like
    header = "".join(
        line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.startswith("#")
    )
    stated = re.search(r"[=:] (\d+)(?: training)? runs", header)
    assert stated, f"{path.name}: its header should say how many runs it makes"
    plan = load_sweep(path, str(tmp_path / "out"))
    assert len(plan.cells) == int(stated[1])
    assert len({cell.id for cell in plan.cells}) == len(plan.cells)


def test_a_cell_whose_folder_name_is_too_long_is_refused_by_the_dry_run(tmp_path, files, capsys):
    path = sweep_file(tmp_path, files, {"prompt.text": ["great " * 60, "bad"]}, prompt={"init": "text"})
    assert main(["sweep", str(path), "--dry_run"]) == 1
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "over the 255 a file system allows" in err and err.startswith(f"error: {path}: cell ")
    ), err
    assert not (tmp_path / "out").exists()
