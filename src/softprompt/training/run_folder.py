"""Who may write a run's output folder. A run writes only into a folder that is new, empty, or an earlier softprompt
run's; it removes only the names a run writes (RUN_NAMES), never the model it loads; and it holds a lock on the folder
while it writes, so that a second run into the same folder is refused in one line naming the process that holds it.

    OUTPUT/.softprompt-run.json   the marker: this folder is a softprompt run's, and the names such a run writes
    OUTPUT/.softprompt.lock       held (flock) while a run writes; released by the system if the process dies
    OUTPUT/.softprompt.holder     the holding process: pid, host and start time, for the refusal's message
"""

import contextlib
import datetime
import json
import os
import shutil
import socket
from pathlib import Path

from filelock import FileLock, Timeout

from softprompt.errors import UserError
from softprompt.files.atomic import is_temporary, write_text_atomic
from softprompt.methods import METHODS
from softprompt.training import checkpoint
from softprompt.training.run_output import LOG_FILE, RESULTS_FILE

MARKER = ".softprompt-run.json"
LOCK = ".softprompt.lock"
HOLDER = ".softprompt.holder"
TENSORBOARD = "tensorboard"
RUN_NAMES = frozenset(
    [method.output for method in METHODS.values()] + [LOG_FILE, RESULTS_FILE, TENSORBOARD, checkpoint.CHECKPOINTS]
)
OWN_FILES = frozenset([MARKER, LOCK, HOLDER])
OPTION = "--train.output_dir"


def check_output_folder(output_dir: str, model_name: str | None = None) -> None:
    """Refuse, before anything loads, an output folder a run may not write: an empty name, a folder holding what no
    softprompt run wrote, or one whose run files include the model this run loads."""
    if not str(output_dir).strip():
        raise UserError(f"{OPTION}: empty; give the folder the run writes into")
    folder = Path(output_dir)
    if folder.is_dir() and not (folder / MARKER).is_file():
        entries = sorted(p.name for p in folder.iterdir() if p.name not in OWN_FILES)
        if entries and not _an_earlier_run(folder, entries):
            others = [name for name in entries if name not in RUN_NAMES] or entries
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise UserError(
                f"{OPTION} {output_dir}: the folder holds what no softprompt run wrote ({shown}); give a new or empty folder, or an earlier run's"
            )
    if model_name and Path(model_name).exists():
        model = Path(model_name).resolve()
        for name in RUN_NAMES:
            replaced = (folder / name).resolve()
            if model == replaced or replaced in model.parents:
                raise UserError(
                    f"{OPTION} {output_dir}: a run there replaces {folder / name}, which holds the model this run loads ({model_name}); give another output folder"
                )


def _an_earlier_run(folder: Path, entries: list[str]) -> bool:
    """A folder written before runs left a marker: nothing but the names a run writes (and the temporaries of a
    killed write of one), with its log or report."""
    names = {name for name in entries if not is_temporary(name, sorted(RUN_NAMES))}
    return names <= RUN_NAMES and any((folder / name).is_file() for name in (LOG_FILE, RESULTS_FILE))


@contextlib.contextmanager
def hold(output_dir: str | os.PathLike, model_name: str | None = None, main_process: bool = True):
    """Own `output_dir` while the block runs: checked, locked against other runs and marked as a run's (the main
    process of a launch; the others write only where it has let them)."""
    if not main_process:
        yield
        return
    check_output_folder(str(output_dir), model_name)
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{OPTION} {output_dir}: cannot create the folder ({e.strerror})") from None
    lock = FileLock(folder / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"{OPTION} {output_dir}: another run is writing this folder ({_holder(folder)}); wait for it to end, or give another folder"
        ) from None
    except OSError as e:
        raise UserError(f"{OPTION} {output_dir}: cannot lock the folder ({e.strerror})") from None
    try:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        write_text_atomic(
            folder / HOLDER, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n"
        )
        if not (folder / MARKER).is_file():
            write_text_atomic(folder / MARKER, json.dumps({"softprompt_run": 1, "writes": sorted(RUN_NAMES)}) + "\n")
        yield
    finally:
        (folder / HOLDER).unlink(missing_ok=True)
        lock.release()


def clear_previous_run(output_dir: Path) -> None:
    """A new run replaces an earlier one in the same folder, whatever its method: never one run's result beside
    another's log. Only the names a run writes go (a link among them, not what it points to); results.jsonl stays:
    it keeps every run's row."""
    for name in sorted(RUN_NAMES - {RESULTS_FILE}):
        path = output_dir / name
        try:
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path)
        except OSError as e:
            raise UserError(f"{OPTION} {output_dir}: cannot remove {path} of the earlier run ({e.strerror})") from None


def _holder(folder: Path) -> str:
    try:
        holder = json.loads((folder / HOLDER).read_text(encoding="utf-8"))
        return f"process {holder['pid']} on {holder['host']}, since {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said which"
