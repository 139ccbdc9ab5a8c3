"""One frozen model, several tasks in one batch: each row scored with its task's prompt, template and labels equals
that task run alone."""

import torch

from softprompt.core.bank import PromptBank
from softprompt.options import DataOptions
from softprompt.tasks import make_task


def test_a_batch_mixing_tasks_equals_each_task_alone(tiny):
    tasks = {
        "sentiment": make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}, template="review {} it was")),
        "colour": make_task(DataOptions(verbalizers={"a": "red", "b": "blue", "c": "green"}, template="the {} is")),
    }
    prompts = {
        "sentiment": tiny.initial_prompt("random", 4, seed=1),
        "colour": tiny.initial_prompt("random", 2, seed=2),
    }
    items = [("sentiment", "great fun"), ("colour", "cat"), ("colour", "sun and moon"), ("sentiment", "bad")]
    tiny.bank = PromptBank(list(prompts.values()), list(prompts))
    texts = [tasks[name].render(tiny, [{"": text}])[0] for name, text in items]
    mixed = tiny.score_labels(
        texts, [tasks[name].label_texts for name, _ in items], [tiny.bank.index(name) for name, _ in items]
    )
    assert [len(scores) for scores in mixed] == [2, 3, 3, 2]
    for (name, text), scores in zip(items, mixed):
        tiny.bank = PromptBank(prompts[name])
        alone = tiny.class_scores([{"": text}], tasks[name].label_texts, template=tasks[name].template)[0]
        torch.testing.assert_close(scores, alone, rtol=1e-5, atol=1e-5)
        assert tasks[name].predict(tiny, [{"": text}]) == [tasks[name].label_values[int(scores.argmax())]]
