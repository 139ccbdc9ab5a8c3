"""bench/load.py, the load run recorded in RELIABILITY.md, runs end to end: a short run of 4 clients on a tiny model."""

import sys
from pathlib import Path

import pytest
from conftest import save_model, tiny_gpt2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import load  # noqa: E402  bench/load.py

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples


def test_a_short_load_run_serves_every_request_and_writes_its_section(tmp_path):
    model = save_model(tiny_gpt2(), tmp_path / "tiny-gpt2")
    output = tmp_path / "RELIABILITY.md"
    run = load.main(["--clients", "4", "--seconds", "2", "--tasks", "3", "--model", model, "--output", str(output)])
    assert run.errors == [] and run.requests == len(run.latencies) > 0 and run.rows >= run.requests
    assert len(run.rss) >= 2 and all(size > 0 for _, size in run.rss)
    text = output.read_text()
    assert text.startswith("# Reliability\n") and "\n## Load\n" in text
    assert f"`python bench/load.py --clients 4 --seconds 2 --tasks 3 --model {model}`" in text
    assert f"| 4 | 2 | {run.requests} | 0 | " in text
