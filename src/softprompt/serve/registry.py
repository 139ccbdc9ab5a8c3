"""The served folder's prompt files: found, checked against the model, loaded once settled and refused with a
logged reason; what changed at each rescan. The engine (engine.py) serves what the registry holds.

A file NAME.safetensors or NAME/prompt.safetensors serves task NAME. A file is loaded only once it is settled (not
being written), and a served file that changes into one refused withdraws its task while the others serve on.
"""

import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from softprompt.errors import UserError
from softprompt.files.integrity import sha256_of
from softprompt.files.prompt_file import PromptFile, check_compatible, load_prompt
from softprompt.inference.loading import recorded_task
from softprompt.models.model import SoftPromptModel
from softprompt.tasks import ClassificationTask, Task

log = logging.getLogger("softprompt.serve")

PROMPT_SUFFIX = ".safetensors"
SETTLE_SECONDS = 0.1  # an asked-for rescan loads a new or changed file only once it has stayed unchanged this long


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


class Registry:
    """The prompt files of `folder` that fit `model`: served (ServedTask) or refused (with why)."""

    def __init__(self, model: SoftPromptModel, folder: str | os.PathLike, allow_other_model: bool = False):
        self.model = model
        self.folder = Path(folder)
        self.allow_other_model = allow_other_model
        self.fingerprint = model.fingerprint()
        self._served: dict[Path, ServedTask] = {}
        self._refused: dict[Path, Refused] = {}
        self._settling: dict[Path, tuple[int, int, int]] = {}  # new or changed files as the last rescan saw them
        self.last_refused: list[dict] = []  # as of the last scan

    def scan(self, watching: bool = False) -> tuple[ScanReport, dict[Path, ServedTask]]:
        """Load new and changed prompt files (a new modification time, size or inode, then a new sha256) and drop deleted
        ones: what changed, and the files served now. A file that does not fit the model, or a link to a file outside the
        folder, is refused and logged; the rest keep serving, and a served file that changes into one refused (or
        becomes unreadable) withdraws its task, with a logged line.

        A new or changed file loads only once it is settled, so that a file being written in place is never served
        half-written: unchanged since the previous rescan when `watching` (periodic rescans), else unchanged over
        SETTLE_SECONDS; until then its earlier version, if any, keeps serving. The engine runs one scan at a time."""
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
                unservable = self._unservable(name, path, rel, names)
                if unservable:
                    self._refuse(path, f"{rel}: {unservable}", file_state(path))
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
        self._served = served
        return report, served

    def _unservable(self, name: str, path: Path, rel: str, names: dict[str, Path]) -> str | None:
        """Why the file at `path` cannot serve task `name`, whatever it holds; None when it may."""
        if rel != path.relative_to(self.folder).as_posix():  # escaped: not printable text
            return "the file name is not printable UTF-8 text; rename the file to serve it"
        if name in names:
            return f"the task name {name!r} is taken by {self._relative(names[name])}"
        if not inside(self.folder, path):
            return "a link to a file outside the prompt folder; only files inside it are served"
        return None

    def _unsettled(self, paths: list[Path], watching: bool) -> set[Path]:
        """The new or changed files among `paths` that may still be being written (see `scan`)."""
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
            now = file_state(path)
            if now != state:  # written to while it loaded: the next rescan takes it
                self._settling[path] = now
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


class Watcher:
    """Calls `engine.rescan(watching=True)` every `seconds` on a background thread until stopped."""

    def __init__(self, engine, seconds: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(engine, seconds), name="softprompt-rescan", daemon=True
        )
        self._thread.start()

    def _loop(self, engine, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                engine.rescan(watching=True)
            except Exception:  # noqa: BLE001  keep watching
                log.exception("rescan failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
