"""Prompt ensembles (the paper's section 7): K prompts of one task on one frozen model, run as one batch.

Every input is repeated once per prompt, so one forward pass serves all members; labels are combined by the mean of
the members' label probabilities, generated answers by majority vote.
"""

from dataclasses import dataclass

from tqdm.auto import tqdm

from softprompt.models.model import SoftPromptModel
from softprompt.tasks import Example, Task


@dataclass
class EnsembleReport:
    metric: str  # the task's metric, by which the best member is named
    members: dict[str, dict[str, float]]  # prompt name -> its scores alone
    ensemble: dict[str, float]

    @property
    def mean(self) -> dict[str, float]:
        """The members' scores, averaged."""
        keys = next(iter(self.members.values()))
        return {k: sum(m[k] for m in self.members.values()) / len(self.members) for k in keys}

    @property
    def best(self) -> str:
        return max(self.members, key=lambda name: self.members[name][self.metric])

    def table(self) -> str:
        keys = list(self.ensemble)
        rows = [(name, scores) for name, scores in self.members.items()]
        rows += [
            ("mean of the members", self.mean),
            (f"best member ({self.best})", self.members[self.best]),
            ("ensemble", self.ensemble),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'prompt':<{width}}  " + "  ".join(f"{k:>11}" for k in keys)]
        lines += [f"{name:<{width}}  " + "  ".join(f"{scores[k]:>11.2f}" for k in keys) for name, scores in rows]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "members": self.members,
            "mean": self.mean,
            "best": self.best,
            "ensemble": self.ensemble,
        }


def evaluate_ensemble(
    model: SoftPromptModel, task: Task, examples: list[Example], batch_size: int = 64, progress: bool = True
) -> EnsembleReport:
    """Score every prompt of the model's bank alone and as an ensemble, in batches of `batch_size` rows
    (each input counts once per prompt)."""
    ids = list(range(len(model.bank)))
    per_pass = max(1, batch_size // len(ids))  # inputs per forward pass
    members: list[list[str]] = [[] for _ in ids]
    combined: list[str] = []
    model.eval()
    for i in tqdm(range(0, len(examples), per_pass), desc="ensemble", leave=False, disable=not progress):
        chunk = [e.fields for e in examples[i : i + per_pass]]
        each, together = task.predict_members(model, chunk, ids)
        for k, predictions in enumerate(each):
            members[k] += predictions
        combined += together
    scores = {name: task.score(predictions, examples) for name, predictions in zip(model.bank.names, members)}
    return EnsembleReport(task.metric, scores, task.score(combined, examples))
