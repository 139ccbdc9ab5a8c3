"""Files an earlier softprompt wrote still load: tests/fixtures/written-by-0.1.0 holds a run of the tiny GPT-2 below
(2 steps of 4 rows, a 4-vector vocab prompt, a checkpoint at each step) as version 0.1.0 wrote it before the package
was laid out in folders, with no output-folder marker and a checkpoint that records fewer fields, and the class
scores its prompt gave."""

import json
import shutil
from pathlib import Path

import torch
from conftest import sentiment_rows, tiny_gpt2

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
