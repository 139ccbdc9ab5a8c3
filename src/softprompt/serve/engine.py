"""One frozen model serving many tasks: a bank of task prompts, one per prompt file in a folder, hot-loaded.

Rows of every task run together: classification rows of all tasks in one scoring pass (each with its own prompt and
labels), generation rows together with a prompt per row. A rescan builds a new bank and swaps it in whole; requests
hold the snapshot they were checked against, so a swap never changes a request in flight.
"""

import logging
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from softprompt.checks import MAX_TARGET_LENGTH
from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.integrity import sha256_of
from softprompt.files.prompt_file import PromptFile, check_compatible, load_prompt
from softprompt.inference.loading import recorded_task
from softprompt.models.model import SoftPromptModel
from softprompt.tasks import ClassificationTask, Task
from softprompt.tasks.base import check_text, parse_json_input

log = logging.getLogger("softprompt.serve")

PROMPT_SUFFIX = ".safetensors"
SETTLE_SECONDS = 0.1  # an asked-for rescan loads a new or changed file only once it has stayed unchanged this long


class UnknownTask(UserError):
    """A request names a task that is not served."""


def discover(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """The prompt files of a folder with their task names: NAME.safetensors and NAME/prompt.safetensors."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix == PROMPT_SUFFIX:
            found.append((path.stem, path))
        elif path.is_dir() and (path / f"prompt{PROMPT_SUFFIX}").is_file():
            found.append((path.name, path / f"prompt{PROMPT_SUFFIX}"))
    return found


def printable(name: str) -> str:
    """A file name as it may be logged and listed: bytes that are not UTF-8 as \\xNN, other characters that are not
    printable (a line break, which would forge a log line) escaped."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def inside(folder: Path, path: Path) -> bool:
    """Whether `path`, its links followed, lies inside `folder`."""
    return path.resolve().is_relative_to(folder.resolve())


def file_state(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten or replaced: modification time, size and inode."""
    s = path.stat()
    return s.st_mtime_ns, s.st_size, s.st_ino


def _state_or_none(path: Path) -> tuple[int, int, int] | None:
    try:
        return file_state(path)
    except OSError:
        return None


@dataclass(frozen=True)
class ServedTask:
    name: str
    file: str  # relative to the served folder
    task: Task
    prompt: PromptFile
    sha256: str
    state: tuple[int, int, int]
    prompt_id: int = -1  # the row of the snapshot's bank

    @property
    def classifies(self) -> bool:
        return isinstance(self.task, ClassificationTask)

    def describe(self) -> dict:
        meta = self.prompt.metadata
        return {
            "name": self.name,
            "file": self.file,
            "length": self.prompt.length,
            **self.task.describe(),
            "metrics": meta.get("metrics", {}),
            "step": meta.get("step"),
            "base_model": meta.get("base_model"),
            "sha256": self.sha256,
        }


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


@dataclass
class Refused:
    file: str
    error: str
    state: tuple[int, int, int]


@dataclass
class ScanReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)  # every file not served, with why


class Engine:
    """A frozen model and the task prompts of `folder`; `rescan()` picks up new, changed and deleted files."""

    def __init__(self, model: SoftPromptModel, folder: str | os.PathLike, allow_other_model: bool = False):
        self.model = model
        self.folder = Path(folder)
        self.allow_other_model = allow_other_model
        self.fingerprint = model.fingerprint()
        self._served: dict[Path, ServedTask] = {}
        self._refused: dict[Path, Refused] = {}
        self._settling: dict[Path, tuple[int, int, int]] = {}  # new or changed files as the last rescan saw them
        self.last_refused: list[dict] = []
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
        return self.last_refused

    def rescan(self, watching: bool = False) -> ScanReport:
        """Load new and changed prompt files (a new modification time, size or inode, then a new sha256), drop deleted
        ones, and swap in the new bank at once. A file that does not fit the model, or a link to a file outside the
        folder, is refused and logged; the rest keep serving, and a served file that changes into one refused (or
        becomes unreadable) withdraws its task, with a logged line.

        A new or changed file loads only once it is settled, so that a file being written in place is never served
        half-written: unchanged since the previous rescan when `watching` (periodic rescans), else unchanged over
        SETTLE_SECONDS; until then its earlier version, if any, keeps serving."""
        with self._scan_lock:
            report = ScanReport()
            served: dict[Path, ServedTask] = {}
            names: dict[str, Path] = {}
            found, gone = discover(self.folder), set()
            unsettled = self._unsettled([path for _, path in found], watching)
            for name, path in sorted(found, key=lambda f: f[1] not in self._served):  # a served file keeps its name
                rel = self._relative(path)
                if path in unsettled:
                    if path in self._served:
                        served[path] = self._served[path]
                        names[name] = path
                    continue
                try:
                    if rel != path.relative_to(self.folder).as_posix():  # escaped: not printable text
                        self._refuse(
                            path,
                            f"{rel}: the file name is not printable UTF-8 text; rename the file to serve it",
                            file_state(path),
                        )
                        continue
                    if name in names:
                        self._refuse(
                            path,
                            f"{rel}: the task name {name!r} is taken by {self._relative(names[name])}",
                            file_state(path),
                        )
                        continue
                    if not inside(self.folder, path):
                        self._refuse(
                            path,
                            f"{rel}: a link to a file outside the prompt folder; only files inside it are served",
                            file_state(path),
                        )
                        continue
                    entry = self._scan_one(name, path, rel, report)
                except OSError:  # vanished before its state was read: gone
                    gone.add(path)
                    continue
                if entry is not None:
                    served[path] = entry
                    names[name] = path
            present = {path for _, path in found} - gone
            for path, old in self._served.items():
                if path not in served:
                    report.dropped.append(old.name)
                    if path in present:
                        log.warning("withdrew task %s: %s no longer loads", old.name, old.file)
                    else:
                        log.info("dropped task %s (%s is gone)", old.name, old.file)
            self._refused = {p: r for p, r in self._refused.items() if p in present}
            report.refused = [{"file": r.file, "error": r.error} for r in self._refused.values()]
            self.last_refused = report.refused
            if report.added or report.changed or report.dropped:
                self._swap(served)
            self._served = served
            return report

    def _unsettled(self, paths: list[Path], watching: bool) -> set[Path]:
        """The new or changed files among `paths` that may still be being written (see `rescan`)."""
        changed = {}
        for path in paths:
            try:
                state = file_state(path)
            except OSError:
                continue  # gone: the scan finds it so
            known = self._served.get(path) or self._refused.get(path)
            if known is None or known.state != state:
                changed[path] = state
        if watching:
            unsettled = {path for path, state in changed.items() if self._settling.get(path) != state}
        else:
            if changed:
                threading.Event().wait(SETTLE_SECONDS)
            unsettled = {path for path, state in changed.items() if _state_or_none(path) != state}
        self._settling = {path: changed[path] for path in unsettled}  # unchanged at the next rescan: settled
        return unsettled

    def _scan_one(self, name: str, path: Path, rel: str, report: ScanReport) -> ServedTask | None:
        state = file_state(path)
        old = self._served.get(path)
        if old is not None and old.state == state:
            return old
        refused = self._refused.get(path)
        if refused is not None and refused.state == state:
            return None  # still the file that was refused
        try:
            digest = sha256_of(path)
            if old is not None and old.sha256 == digest:
                return replace(old, state=state)  # touched, not changed
            entry = self._load(name, path, rel, digest, state)
            if file_state(path) != state:  # written to while it loaded: the next rescan takes it
                self._settling[path] = file_state(path)
                return old
        except Exception as e:  # noqa: BLE001  a bad (or unreadable) file must never stop the server
            message = (
                str(e).replace(str(path), rel)
                if isinstance(e, UserError)
                else f"{rel}: cannot load it ({type(e).__name__}: {e})"
            )
            self._refuse(path, message, state)
            return None
        self._refused.pop(path, None)
        (report.changed if old else report.added).append(name)
        log.info(
            "%s task %s from %s (%d prompt tokens)", "reloaded" if old else "loaded", name, rel, entry.prompt.length
        )
        return entry

    def _load(self, name: str, path: Path, rel: str, digest: str, state) -> ServedTask:
        file = load_prompt(path)
        check_compatible(file, self.model.hidden, self.fingerprint, rel, self.allow_other_model)
        task = recorded_task(file, rel)
        entry = ServedTask(name, rel, task, file, digest, state)
        if not entry.classifies:
            task.prepare(self.model)  # refuses generation on an encoder-only model
        self._check_room(entry)
        return entry

    def _check_room(self, entry: ServedTask) -> None:
        """Refuse a prompt that leaves the model no room for its task's input (as model.input_budget counts)."""
        model, o = self.model, entry.task.options
        if entry.classifies:
            try:
                model.check_label_room(entry.task.label_texts, entry.prompt.length)
            except UserError as e:
                raise UserError(f"{entry.file}: {e}") from None
        target = model.label_target_length(entry.task.label_texts) if entry.classifies else o.max_target_length
        room = model.input_room(entry.prompt.length, target)
        if room is not None and room < 1:
            raise UserError(
                f"{entry.file}: a {entry.prompt.length}-token prompt leaves no room for the input: {model.name} has {model.max_positions} positions"
            )

    def _refuse(self, path: Path, error: str, state: tuple[int, int, int]) -> None:
        known = self._refused.get(path)
        if known is None or known.state != state or known.error != error:
            log.warning("refused %s", error)
        self._refused[path] = Refused(self._relative(path), error, state)

    def _relative(self, path: Path) -> str:
        return printable(path.relative_to(self.folder).as_posix())

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
    def watch(self, seconds: float) -> "Watcher":
        """Rescan every `seconds` on a background thread until the returned watcher is stopped."""
        return Watcher(self, seconds)


class Watcher:
    def __init__(self, engine: Engine, seconds: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(engine, seconds), name="softprompt-rescan", daemon=True
        )
        self._thread.start()

    def _loop(self, engine: Engine, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                engine.rescan(watching=True)
            except Exception:  # noqa: BLE001  keep watching
                log.exception("rescan failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


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
