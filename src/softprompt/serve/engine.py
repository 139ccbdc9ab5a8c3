"""One frozen model serving many tasks: a bank of task prompts, one per prompt file of a folder (registry.py).

Rows of every task run together: classification rows of all tasks in one scoring pass (each with its own prompt and
labels), generation rows together with a prompt per row. A rescan builds a new bank and swaps it in whole; requests
hold the snapshot they were checked against, so a swap never changes a request in flight.
"""

import os
import threading
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from softprompt.checks import MAX_TARGET_LENGTH
from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.models.model import SoftPromptModel
from softprompt.serve.registry import Registry, ScanReport, ServedTask, Watcher
from softprompt.tasks import Task
from softprompt.tasks.base import check_text, parse_json_input


class UnknownTask(UserError):
    """A request names a task that is not served."""


@dataclass(frozen=True)
class Snapshot:
    """The tasks served at one moment and the bank holding their prompts; never changed once made."""

    bank: PromptBank
    tasks: dict[str, ServedTask]

    def task(self, name: str) -> ServedTask:
        if name not in self.tasks:
            served = ", ".join(self.tasks) or "none"
            raise UnknownTask(f"unknown task {name!r} (served: {served})")
        return self.tasks[name]


@dataclass(frozen=True)
class Row:
    """One input of a request, checked against `snapshot`."""

    snapshot: Snapshot
    task: ServedTask
    fields: dict[str, str]


class Engine:
    """A frozen model and the task prompts of `folder`; `rescan()` picks up new, changed and deleted files."""

    def __init__(self, model: SoftPromptModel, folder: str | os.PathLike, allow_other_model: bool = False):
        self.model = model
        self.folder = Path(folder)
        self.registry = Registry(model, folder, allow_other_model)
        self._snapshot = Snapshot(self._new_bank([]), {})
        self._lock = threading.Lock()  # guards the current snapshot
        self._scan_lock = threading.Lock()  # one rescan at a time
        self._run_lock = threading.Lock()  # one model pass at a time
        self.max_new_tokens: int | None = None  # the longest generated answer, whatever a prompt file records
        self.max_seconds: float | None = None  # a generation stops after this long
        self.rescan()

    # ----- the served tasks ------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def tasks(self) -> list[dict]:
        return [t.describe() for t in self.snapshot().tasks.values()]

    def refused(self) -> list[dict]:
        """The prompt files not served, each with why (as of the last rescan)."""
        return self.registry.last_refused

    def rescan(self, watching: bool = False) -> ScanReport:
        """Rescan the folder (registry.py: new, changed, deleted and refused files, each loaded once settled) and
        swap in the new bank at once when what is served changed."""
        with self._scan_lock:
            report, served = self.registry.scan(watching)
            if report.added or report.changed or report.dropped:
                self._swap(served)
            return report

    def _new_bank(self, entries: list[ServedTask]) -> PromptBank:
        if not entries:
            return PromptBank.empty(self.model.hidden).to(self.model.device)
        return PromptBank(
            [e.prompt.prompt for e in entries], [e.name for e in entries], [e.prompt.offset for e in entries]
        ).to(self.model.device)

    def _swap(self, served: dict[Path, ServedTask]) -> None:
        entries = sorted(served.values(), key=lambda e: e.name)
        tasks = {e.name: replace(e, prompt_id=i) for i, e in enumerate(entries)}
        snapshot = Snapshot(self._new_bank(entries), tasks)
        cache = self.model.prefix_cache
        cache.capacity = max(cache.capacity, 2 * len(entries))  # every served prompt's keys/values, across a swap
        with self._lock:
            self._snapshot = snapshot

    # ----- prediction ----------------------------------------------------------------------------------
    def prepare(self, items: list[tuple[str, str | dict]], snapshot: Snapshot | None = None) -> list[Row]:
        """Check (task, input) pairs against the served tasks: UnknownTask or UserError for the first bad one.
        An input is a text for a one-field template, else an object (or its JSON text) holding every field."""
        snapshot = snapshot or self.snapshot()
        rows = []
        for n, (name, value) in enumerate(items, 1):
            served = snapshot.task(name)
            rows.append(Row(snapshot, served, input_fields(served, value, n)))
        return rows

    def run(self, rows: list[Row]) -> list[str]:
        """Predictions for checked rows (of any tasks and snapshots): a label value or a generated text each."""
        out: list[str] = [""] * len(rows)
        groups = defaultdict(list)
        for i, row in enumerate(rows):
            groups[id(row.snapshot)].append(i)
        with self._run_lock:
            for indices in groups.values():
                snapshot = rows[indices[0]].snapshot
                self.model.bank = snapshot.bank
                for i, prediction in zip(indices, self._run_rows([rows[i] for i in indices])):
                    out[i] = prediction
        return out

    def predict(self, items: list[tuple[str, str | dict]]) -> list[str]:
        return self.run(self.prepare(items))

    def _run_rows(self, rows: list[Row]) -> list[str]:
        """Rows of one snapshot, whose bank the model holds."""
        out: list[str] = [""] * len(rows)
        classify = [i for i, r in enumerate(rows) if r.task.classifies]
        if classify:
            texts = self._render(rows, classify, lambda t, fields: t.render(self.model, fields))
            label_sets = [rows[i].task.task.label_texts for i in classify]
            scores = self.model.score_labels(texts, label_sets, [rows[i].task.prompt_id for i in classify])
            for i, s in zip(classify, scores):
                out[i] = rows[i].task.task.label_values[int(s.argmax())]
        by_length = defaultdict(list)  # generation: one call per answer length
        for i, r in enumerate(rows):
            if not r.task.classifies:
                by_length[min(r.task.task.options.max_target_length, self.max_new_tokens or MAX_TARGET_LENGTH)].append(
                    i
                )
        for max_new_tokens, indices in by_length.items():
            texts = self._render(rows, indices, self._fit_for_generation)
            longest = max(rows[i].task.task.options.max_input_length for i in indices)
            ids = [rows[i].task.prompt_id for i in indices]
            answers = self.model.generate(
                texts, ids, max_new_tokens=max_new_tokens, max_input_length=longest, max_time=self.max_seconds
            )
            for i, answer in zip(indices, answers):
                out[i] = answer
        return out

    def _render(self, rows: list[Row], indices: list[int], render) -> list[str]:
        """Each row's input rendered by its task's template (rows of a task together), in the order of `indices`."""
        by_task = defaultdict(list)
        for i in indices:
            by_task[rows[i].task.name].append(i)
        texts = {}
        for group in by_task.values():
            for i, text in zip(group, render(rows[group[0]].task.task, [rows[i].fields for i in group])):
                texts[i] = text
        return [texts[i] for i in indices]

    def _fit_for_generation(self, task: Task, fields: list[dict[str, str]]) -> list[str]:
        o = task.options
        return self.model.fit_inputs(
            fields, task.template, self.model.input_budget(o.max_input_length, o.max_target_length)
        )

    # ----- periodic rescans ------------------------------------------------------------------------------
    def watch(self, seconds: float) -> Watcher:
        """Rescan every `seconds` on a background thread until the returned watcher is stopped."""
        return Watcher(self, seconds)


def input_fields(served: ServedTask, value: str | dict, n: int) -> dict[str, str]:
    """A request's input as the task's template fields; `n` numbers it in errors."""
    template = served.task.template
    if isinstance(value, str) and template.single:
        check_text(value, n)
        return {template.fields[0]: value}
    if isinstance(value, str):
        value = parse_json_input(value)
    needed = template.fields
    if isinstance(value, dict) and all(isinstance(value.get(f), str) for f in needed):
        fields = {f: value[f] for f in needed}
        for text in fields.values():
            check_text(text, n)
        return fields
    if template.fields == [""]:
        wanted = "a text"
    elif template.single:
        wanted = f"a text, or an object with the text field {needed[0]!r}"
    else:
        wanted = f"an object (or its JSON text) with the text fields {', '.join(repr(f) for f in needed)}"
    raise UserError(f"input {n}: task {served.name} takes {wanted}")
