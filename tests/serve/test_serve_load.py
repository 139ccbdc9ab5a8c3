"""bench/load.py, the load run recorded in docs/reliability.md, runs end to end: a short run of 4 clients on a tiny model;
it writes its section only when asked (`--write`)."""

import sys
from pathlib import Path

import pytest
from conftest import save_model, tiny_gpt2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import load  # noqa: E402  bench/load.py

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples


def test_a_short_load_run_serves_every_request_and_writes_its_section(tmp_path, capsys):
    model = save_model(tiny_gpt2(), tmp_path / "tiny-gpt2")
    output = tmp_path / "reliability.md"
    quiet = load.main(["--clients", "2", "--seconds", "1", "--tasks", "2", "--model", model, "--output", str(output)])
    assert not output.exists() and "## Load" in capsys.readouterr().out and quiet.errors == []  # printed, not written
    run = load.main(
        ["--clients", "4", "--seconds", "2", "--tasks", "3", "--model", model, "--output", str(output), "--write"]
    )
    assert run.errors == [] and run.requests == len(run.latencies) > 0 and run.rows >= run.requests
    assert len(run.rss) >= 2 and all(size > 0 for _, size in run.rss)
    text = output.read_text()
    assert text.startswith("# Reliability\n") and "\n## Load\n" in text
    assert f"`python bench/load.py --clients 4 --seconds 2 --tasks 3 --model {model}`" in text
    assert f"| 4 | 2 | {run.requests} | 0 | " in text
