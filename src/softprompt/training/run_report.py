"""What a run gives back: its result, its row of results.jsonl (time, memory, sizes, metrics, configuration) and the
summaries the commands print."""

import contextlib
import datetime
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from softprompt.files.atomic import human_size

try:
    import resource
except ImportError:  # not on Windows
    resource = None


@dataclass
class TrainResult:
    prompt_path: Path  # what was saved: the prompt file, or the method's own file or folder (methods/)
    metrics: dict[str, float] = field(default_factory=dict)  # at the best evaluation
    best_step: int = 0
    steps: int = 0
    lr: float = 0.0  # the learning rate used (train.lr, or its default for the model)
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # the run's row of results.jsonl (on the main process)
    output_dir: Path | None = None  # the run's folder


class PeakMemory:
    """Memory used above the process as it stood when measuring began: allocated memory on CUDA, else the resident set
    (RSS), whose high-water mark is first reset where Linux allows (/proc/self/clear_refs); elsewhere its growth."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda" if device.type == "cuda" else "rss"
        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
            self.start = _max_rss()

    def peak(self) -> int | None:
        if self.kind == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.start
        return None if self.start is None else _max_rss() - self.start


def _max_rss() -> int | None:
    """The process's resident-set high-water mark in bytes (getrusage counts kilobytes, on macOS bytes)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_report(run, train_seconds: float) -> dict:
    """One run's row of results.jsonl, from the run (training/run.py): what ran, how accelerate ran it (processes,
    MULTI_GPU, FSDP, ...), its result, times and memory."""
    method, model, task, o, result = run.method, run.model, run.task, run.o, run.result
    params, base_parameters = run.params, run.base_parameters
    trainable = sum(p.numel() for p in params)
    return {
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "method": method.name,
        "model": model.name,
        "family": model.family,
        "task": task.name,
        "trainable_parameters": trainable,
        "base_parameters": base_parameters,
        "trainable_percent": 100 * trainable / base_parameters,
        "bytes_per_task": method.stored_bytes(result.prompt_path.parent),
        "saved": str(result.prompt_path),
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(run.eval_seconds, 3),
        "peak_memory_bytes": run.memory.peak(),
        "peak_memory_of": run.memory.kind,
        "processes": run.accelerator.num_processes,
        "distributed": run.accelerator.distributed_type.value,
        "metrics": result.metrics,
        "best_step": result.best_step,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        **method.report(),
        "config": {
            "model": {
                "name": model.name,
                "family": model.family,
                "dtype": model.weights_dtype,
                "readout_scale": model.readout_scale,
            },
            "method": asdict(method.options),
            "prompt": asdict(method.prompt_options),
            "data": asdict(task.options),
            "train": asdict(o),
        },
    }


def size_report(frozen, prompt_path: Path) -> str:
    """Trainable parameters and their share, and the prompt file's size beside the model's."""
    trainable = frozen.bank.weight[0].numel()
    total = frozen.base_parameters()
    model_bytes = frozen.base_bytes()
    return (
        f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)\n"
        f"prompt file: {human_size(prompt_path.stat().st_size)} (model: {human_size(model_bytes)})"
    )


def run_summary(report: dict, model_bytes: int) -> str:
    """A run's report as the command prints it: what trained, what one task stores, time and memory."""
    stored = "prompt file" if report["method"] == "prompt" else "stored per task"
    peak = report["peak_memory_bytes"]
    memory = (
        "unknown"
        if peak is None
        else f"{human_size(peak)} above the idle process ({'CUDA, allocated' if report['peak_memory_of'] == 'cuda' else 'RSS'})"
    )
    return (
        f"trainable parameters: {report['trainable_parameters']:,} of {report['base_parameters']:,} ({report['trainable_percent']:.3f}%)\n"
        f"{stored}: {human_size(report['bytes_per_task'])} (model: {human_size(model_bytes)})\n"
        f"time: {report['train_seconds']:.1f} s training, {report['eval_seconds']:.1f} s evaluating; peak memory: {memory}"
    )
