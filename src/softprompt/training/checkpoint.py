"""Checkpoints that survive a kill: what a run needs to continue exactly where it stopped, and nothing more.

    OUTPUT/checkpoints/step-00000120/
        state.safetensors  the trained parameters (for prompt tuning the prompt alone, never the frozen model), optimiser,
                     scheduler, loss scaler, step, data position, best-so-far and the options (the main process)
        rng-0.safetensors  each process's random generators: CPU, CUDA, numpy, random
        rng-1.safetensors  ...

A checkpoint is written into a hidden temporary folder and renamed into place as the last act: a folder named
step-N is complete, whatever happened during the write (a kill, a full disk). The last `keep` complete ones are kept.
Files are safetensors (state_file.py): tensors, and plain values in their metadata; nothing is unpickled.
"""

import contextlib
import dataclasses
import os
import random
import re
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from softprompt.errors import UserError, first_line
from softprompt.files.atomic import atomic_folder
from softprompt.files.state_file import load_state, save_state

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.safetensors"
NAME = re.compile(r"step-(\d+)")
# options that may change between a run and its resumption: how long it runs, where and how often it saves and logs
RESUMABLE_CHANGES = ("max_steps", "epochs", "resume", "output_dir", "save_every", "keep_checkpoints", "log_every")


@dataclasses.dataclass
class TrainingState:
    """What continuing after `step` needs, as the main process saves it; its fields are the state file's keys."""

    step: int
    epoch: int  # the data position: epochs done, and micro-batches drawn in the current one
    batch: int
    running: float  # the loss's running mean, as the progress bar shows it
    trained: list[torch.Tensor]  # the trained parameters (for prompt tuning the prompt alone)
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    best: float | None  # early stopping and the best prompt so far
    stale: int
    saved_best: bool
    best_state: list[torch.Tensor] | None
    metrics: dict  # the run's result so far
    best_step: int
    history: list
    stopped_early: bool
    identity: dict  # what makes it the same run (check_same_run)
    options: dict
    processes: int

    @classmethod
    def from_file(cls, values: dict, path: Path) -> "TrainingState":
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in values]
        if missing:
            raise UserError(
                f"--train.resume: {path} lacks {', '.join(missing)}; delete its folder to resume from the one before"
            )
        return cls(**{name: values[name] for name in names})

    def as_file(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # shallow: tensors not copied


def folder(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:08d}"


def complete(output_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints in output_dir, oldest first (temporary folders of interrupted writes are hidden)."""
    root = Path(output_dir) / CHECKPOINTS
    found = (
        [p for p in root.iterdir() if NAME.fullmatch(p.name) and (p / STATE_FILE).is_file()] if root.is_dir() else []
    )
    return sorted(found, key=lambda p: int(NAME.fullmatch(p.name)[1]))


def latest(output_dir: str | os.PathLike) -> Path | None:
    found = complete(output_dir)
    return found[-1] if found else None


def save(output_dir: str | os.PathLike, step: int, state: TrainingState, accelerator, keep: int) -> Path:
    """Write `state` (from the main process) and every process's random generators as checkpoint `step`; all
    processes call this together. Returns the checkpoint's folder."""
    final = folder(output_dir, step)
    accelerator.wait_for_everyone()
    if final.exists():  # the same step saved again (a signal right after a scheduled save): nothing new
        return final
    main = accelerator.is_main_process
    # the main process makes the temporary folder, every process writes its file into it, the main one renames it
    with atomic_folder(final, fixed=True) if main else contextlib.nullcontext(temporary(final)) as tmp:
        accelerator.wait_for_everyone()
        write(rng_state(), tmp / rng_file(accelerator.process_index))
        accelerator.wait_for_everyone()
        if main:
            write(state.as_file(), tmp / STATE_FILE)
    if main:  # the checkpoint exists from here on, whole
        prune(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


def temporary(final: Path) -> Path:
    """Where checkpoint `final` is written before it is renamed into place."""
    return final.with_name(f".{final.name}.tmp")


def rng_file(process: int) -> str:
    return f"rng-{process}.safetensors"


def write(obj, path: Path) -> None:
    """One file of a checkpoint, flushed to disk before the folder is renamed."""
    save_state(obj, path)


def prune(output_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints."""
    for old in complete(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load(path: Path, process: int, processes: int) -> tuple[TrainingState, dict]:
    """A checkpoint's state and this process's random generators."""
    state = TrainingState.from_file(_read(path / STATE_FILE), path / STATE_FILE)
    if state.processes != processes:
        raise UserError(
            f"--train.resume: {path} was written by {_processes(state.processes)}; resume it with as many, not {processes}"
        )
    return state, _read(path / rng_file(process))


def _read(file: Path):
    try:
        return load_state(file)
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise UserError(
            f"--train.resume: {file}: not a readable checkpoint file ({first_line(e)}); delete its folder to resume from the one before"
        ) from e


def _processes(n: int) -> str:
    return f"{n} process" + ("es" if n != 1 else "")


ROW_OPTIONS = {"train": "--data.train", "validation": "--data.validation"}


# what a run's identity gained or lost since checkpoints were first written: a checkpoint of an earlier version lacks
# these, or records the data's paths (now their rows' digest), so they are compared only where both sides hold them
ADDED_SECTIONS = {"rows"}
CHANGED_FIELDS = {("model", "dtype"), ("model", "readout_scale"), ("data", "train"), ("data", "validation")}


def check_same_run(state: TrainingState, identity: dict, options: dict, path: Path) -> None:
    """Refuse to resume a checkpoint with another model, method, task, prompt, data or training options (other than
    those in RESUMABLE_CHANGES), naming the first field that differs."""
    for section, value in identity.items():
        if section in ADDED_SECTIONS and section not in state.identity:
            continue
        saved = state.identity.get(section)
        if isinstance(value, dict) and isinstance(saved, dict):
            keys = [
                k
                for k in value.keys() | saved.keys()
                if (section, k) not in CHANGED_FIELDS or (k in value and k in saved)
            ]
            pairs = [(k, saved.get(k), value.get(k)) for k in keys]
        else:
            pairs = [(None, saved, value)]
        for key, was, now in sorted(pairs, key=lambda p: p[0] or ""):
            if was == now:
                continue
            if section == "rows":
                raise UserError(
                    f"--train.resume: {path} was trained on other {key} data than {ROW_OPTIONS[key]} now holds (rows added, dropped or changed); resume with the same data, or start a new run in another --train.output_dir"
                )
            raise UserError(
                f"--train.resume: {path} was trained with {section}{'.' + key if key else ''} {was!r}, not {now!r}"
            )
    for key, value in options.items():
        if key not in RESUMABLE_CHANGES and state.options.get(key) != value:
            raise UserError(
                f"--train.{key}: {path} was trained with {state.options.get(key)!r}, not {value!r}; resume with the same value"
            )


def rng_state() -> dict:
    """This process's random generators, as tensors and plain values."""
    state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [state[0], torch.from_numpy(state[1].astype(np.int64)), *state[2:]],
        "random": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["random"])


class StopSignals:
    """SIGTERM and SIGINT (Ctrl-C) ask the loop to stop at the next step boundary, after saving a checkpoint; a
    second Ctrl-C interrupts at once. Signals are caught only in the main thread (Python delivers them there)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def handle(self, number, frame):
        if self.received == signal.SIGINT and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = number

    def requested(self, accelerator) -> bool:
        """Whether any process received a signal: all processes stop at the same step."""
        flag = self.received is not None
        if accelerator.num_processes == 1:
            return flag
        return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), reduction="sum").item())
