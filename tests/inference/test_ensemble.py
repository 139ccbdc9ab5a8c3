"""Prompt ensembles: members run together in one batched pass; mean probability for labels, majority vote for text."""

import json

import pytest
import torch
from conftest import BUILDERS, sentiment_rows, tiny_gpt2

from softprompt.cli import main
from softprompt.core.bank import PromptBank
from softprompt.core.families import ENCODER_ONLY
from softprompt.files.prompt_file import save_prompt
from softprompt.inference.ensemble import evaluate_ensemble
from softprompt.options import DataOptions
from softprompt.tasks import make_task

VERBALIZERS = {"0": "no", "1": "yes"}


def sentiment(model):
    task = make_task(DataOptions(verbalizers=VERBALIZERS))
    task.prepare(model)
    return task, task.examples(sentiment_rows(), "rows", None)


def test_k_copies_of_one_prompt_equal_that_prompt(tiny, family):
    task, examples = sentiment(tiny)
    prompt = tiny.initial_prompt("random", 3, seed=1)
    tiny.bank = PromptBank(prompt)
    alone = task.predict_all(tiny, [e.fields for e in examples], progress=False)
    tiny.bank = PromptBank([prompt] * 3, ["a", "b", "c"])
    members, together = task.predict_members(tiny, [e.fields for e in examples], [0, 1, 2])
    assert members == [alone] * 3 and together == alone
    if family != ENCODER_ONLY:  # generated text, combined by majority vote
        generative = make_task(DataOptions(task="text2text", max_target_length=3))
        members, together = generative.predict_members(tiny, [e.fields for e in examples], [0, 1, 2])
        tiny.bank = PromptBank(prompt)
        assert (
            members[0]
            == members[2]
            == together
            == generative.predict_all(tiny, [e.fields for e in examples], progress=False)
        )


def test_labels_combine_by_mean_probability_not_by_vote(monkeypatch):
    model = tiny_gpt2()
    task, examples = sentiment(model)
    # one input, three members: probabilities (0.9, 0.1), (0.4, 0.6), (0.4, 0.6): two members vote "1", the mean says "0"
    scores = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6]]).log()
    monkeypatch.setattr(model, "class_scores", lambda *args, **kwargs: scores)
    members, together = task.predict_members(model, [examples[0].fields], [0, 1, 2])
    assert members == [["0"], ["1"], ["1"]] and together == ["0"]


def test_text_combines_by_majority_vote_ties_to_the_earliest_member(monkeypatch):
    task = make_task(DataOptions(task="text2text"))
    answers = iter([["paris", "rome", "rome", "red", "blue"]])
    monkeypatch.setattr(task, "predict", lambda model, inputs, ids: next(answers))
    members, together = task.predict_members(None, [{"": "x"}], [0, 1, 2, 3, 4])
    assert together == ["rome"] and members == [["paris"], ["rome"], ["rome"], ["red"], ["blue"]]
    answers = iter([["paris", "rome"]])
    assert task.predict_members(None, [{"": "x"}], [0, 1])[1] == ["paris"]


def test_members_run_in_one_batched_pass():
    model = tiny_gpt2()
    task, examples = sentiment(model)
    model.bank = PromptBank([model.initial_prompt("random", n, seed=n) for n in (2, 3, 4)], ["a", "b", "c"])
    calls = []
    model.base.register_forward_hook(lambda module, args, out: calls.append(1))
    report = evaluate_ensemble(model, task, examples, batch_size=64, progress=False)
    assert len(calls) == 1  # 10 inputs x 3 prompts in one forward pass (labels scored by rank classification)
    assert set(report.members) == {"a", "b", "c"} and report.best in report.members
    assert report.mean["accuracy"] == pytest.approx(sum(m["accuracy"] for m in report.members.values()) / 3)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["decoder-only"])
def test_ensemble_command(tmp_path, model_folder, capsys):
    model = BUILDERS["decoder-only"]()
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    meta = {
        **model.identity(),
        "base_model": model_folder,
        "task": {"type": "classification", "template": "{}", "verbalizers": VERBALIZERS},
    }
    paths = [
        str(save_prompt(tmp_path / f"p{i}.safetensors", model.initial_prompt("random", 2 + i, seed=i), meta))
        for i in range(3)
    ]
    assert main(["ensemble", "--prompts", *paths, "--data.validation", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["members"]) == {"p0", "p1", "p2"} and set(report["ensemble"]) == {"accuracy", "macro_f1"}
    assert main(["ensemble", "--prompts", *paths, "--data.validation", str(data)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["prompt", "accuracy", "macro_f1"] and table[-1].startswith("ensemble")
    other = save_prompt(
        tmp_path / "other.safetensors",
        model.initial_prompt("random", 2),
        {**meta, "task": {**meta["task"], "verbalizers": {"0": "bad", "1": "good"}}},
    )
    assert main(["ensemble", "--prompts", paths[0], str(other), "--data.validation", str(data)]) == 1
    assert "its task differs" in capsys.readouterr().err
    assert main(["ensemble", "--prompts", paths[0], "--data.validation", str(data)]) == 1
    assert "at least two prompt files" in capsys.readouterr().err
