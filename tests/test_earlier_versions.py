"""Files an earlier softprompt wrote still load: tests/fixtures/written-by-0.1.0 holds a run of the tiny GPT-2 below
(2 steps of 4 rows, a 4-vector vocab prompt, a checkpoint at each step) as version 0.1.0 wrote it before the package
was laid out in folders, with no output-folder marker and a checkpoint that records fewer fields, and the class
scores its prompt gave; and a sweep folder of two cells that version wrote (sweep.yaml, sweep/)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import save_model, sentiment_rows, tiny_bert, tiny_gpt2

from softprompt.core.bank import PromptBank
from softprompt.files.prompt_file import check_compatible, load_prompt
from softprompt.inference.loading import recorded_task
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training.train import train_prompt

WRITTEN = Path(__file__).parent / "fixtures" / "written-by-0.1.0"
OPTIONS = dict(batch_size=4, micro_batch_size=2, eval_every=2, save_every=1, keep_checkpoints=1, lr=0.3, seed=0)


def test_its_prompt_file_loads_and_scores_as_it_did():
    model = tiny_gpt2()
    file = load_prompt(WRITTEN / "run" / "prompt.safetensors")
    check_compatible(file, model.hidden, model.fingerprint(), "the earlier prompt file")
    task = recorded_task(file, "the earlier prompt file")
    model.bank = PromptBank(file.prompt)
    expected = json.loads((WRITTEN / "expected.json").read_text())
    scores = model.class_scores(task.fields_from_texts(expected["texts"]), task.label_texts, template=task.template)
    torch.testing.assert_close(scores, torch.tensor(expected["scores"]), rtol=1e-5, atol=1e-5)


def test_its_run_resumes_and_its_results_rows_read_like_todays(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(WRITTEN / "run", run)
    model = tiny_gpt2()
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    examples = task.examples(sentiment_rows(), "rows", None)
    prompt = PromptOptions(length=4, init="vocab", vocab_first_n=40)
    result = train_prompt(
        model, task, examples, examples, prompt, TrainOptions(max_steps=3, resume=True, **OPTIONS), run, progress=False
    )
    assert result.steps == 3 and load_prompt(run / "prompt.safetensors").metadata["step"] == 3
    earlier, today = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert (earlier["steps"], today["steps"]) == (2, 3)
    assert set(earlier) == set(today) and set(earlier["config"]) == set(today["config"])


def test_its_sweep_folder_is_taken_as_finished_and_its_tables_are_written_again(tmp_path, monkeypatch):
    """written-by-0.1.0/sweep: two cells (prompt.length 1, 2) of sweep.yaml, which names the tiny BERT and the data
    relative to the folder it ran in (its plot left out of the fixture); today's code reruns none of them."""
    from softprompt.experiments import sweep as sweep_module
    from softprompt.experiments.grid import load_sweep
    from softprompt.experiments.sweep import run_sweep, write_results

    shutil.copy(WRITTEN / "sweep.yaml", tmp_path / "sweep.yaml")
    shutil.copytree(WRITTEN / "sweep", tmp_path / "sweep")
    monkeypatch.chdir(tmp_path)
    save_model(tiny_bert(), "tiny-bert")
    Path("train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    monkeypatch.setattr(sweep_module, "train", lambda *a, **k: pytest.fail("a finished cell ran again"))

    sweep = load_sweep(Path("sweep.yaml"))
    assert [c.id for c in sweep.cells] == ["length-1", "length-2"]
    rows = run_sweep(sweep, progress=False)
    assert [(r["cell"], r["value"]) for r in rows] == [("length-1", 60.0), ("length-2", 80.0)]
    before = (WRITTEN / "sweep" / "results.md").read_text()
    write_results(sweep, rows)
    assert Path("sweep/results.md").read_text() == before and Path("sweep/length.png").is_file()
