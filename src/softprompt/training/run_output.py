"""What a run writes in its output folder besides its result: the log (metrics.jsonl), the rows of results.jsonl and
messages, from the main process only; and clearing what a killed run's writes left there (run_folder.py clears an
earlier run)."""

import datetime
import json
import sys
from pathlib import Path

from accelerate import Accelerator
from tqdm.auto import tqdm

from softprompt.files.atomic import append_line, clear_temporaries, write_text_atomic
from softprompt.methods import METHODS
from softprompt.training import checkpoint

LOG_FILE = "metrics.jsonl"
RESULTS_FILE = "results.jsonl"


def say(message: str, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        tqdm.write(message, file=sys.stderr)


def log(path: Path, record: dict, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        append_line(path, json.dumps({"time": datetime.datetime.now().isoformat(timespec="seconds"), **record}))


def clear_killed_writes(output_dir: Path) -> None:
    """Remove the temporary files and folders that a killed run's writes left in output_dir and its checkpoints."""
    names = [method.output for method in METHODS.values()] + [LOG_FILE, RESULTS_FILE]
    clear_temporaries(output_dir, names)
    clear_temporaries(output_dir / checkpoint.CHECKPOINTS)


def keep_log_until(path: Path, step: int) -> None:
    """Drop the log's records of steps after `step` (a resumed run logs them again), and a last line that a kill
    cut short."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        write_text_atomic(
            path, "".join(line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step)
        )
