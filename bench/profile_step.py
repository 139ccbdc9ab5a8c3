"""What one training step runs, phase by phase: softprompt's step against PEFT's prompt tuning under torch.profiler,
on the models, batch and lengths of bench/training.py.

    python bench/profile_step.py                    # MiniLM, a SmolLM2-sized and a T5-base-sized model, on the CPU
    python bench/profile_step.py --quick            # small random models: a smoke run
    python bench/profile_step.py --device cuda      # on a GPU, bf16 autocast: kernels launched instead of operators
    python bench/profile_step.py --before 6e26174   # beside the same step of softprompt as a git commit left it
    python bench/profile_step.py --write            # any of these, recorded in docs/benchmarks.md ("## Step profile")

Each trainer's step (one untimed, then a few profiled) is split into phases: the frozen model's forward passes
("model"); what the trainer runs around them in the forward pass ("around": joining prompt and input, the label
readout, the loss); the backward pass; and the optimiser step. For each phase: the operations run (on the CPU,
ATen operators that compute, views and other metadata-only operators left out; on a GPU, the kernels launched) and
their time. "Host reads" counts operators whose result the host must wait for (a value read back, or an output whose
size depends on the data): each one is a synchronisation on a GPU, where the host stops queueing work until the
device has caught up.
"""

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/training.py and bench/report.py, beside this file

import training  # noqa: E402
from report import BENCHMARKS, add_write_option, publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINERS = ("softprompt", "peft")
PHASES = ("around", "model", "backward", "optimizer")
PROFILED_STEPS = 3
# operators that compute nothing: they make a view or read metadata
METADATA = {
    "aten::view",
    "aten::_unsafe_view",
    "aten::reshape",
    "aten::unsqueeze",
    "aten::squeeze",
    "aten::expand",
    "aten::expand_as",
    "aten::as_strided",
    "aten::transpose",
    "aten::t",
    "aten::permute",
    "aten::slice",
    "aten::select",
    "aten::narrow",
    "aten::split",
    "aten::chunk",
    "aten::unbind",
    "aten::flatten",
    "aten::alias",
    "aten::detach",
    "aten::detach_",
    "aten::lift_fresh",
    "aten::empty",
    "aten::empty_like",
    "aten::empty_strided",
    "aten::resize_",
    "aten::size",
    "aten::stride",
    "aten::dim",
    "aten::is_nonzero",
    "aten::result_type",
    "aten::_reshape_alias",
    "aten::view_as",
    "aten::contiguous",
    "aten::to",
    "aten::_to_copy",
    "aten::numpy_T",
    "aten::_has_compatible_shallow_copy_type",
}
# operators whose result the host waits for: a value read back, or an output sized by the data; on a GPU also the
# runtime's synchronisations (a copy from pageable host memory ends with one)
HOST_READS = {
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::masked_select",
}


PHASE_OF_LABEL = {"forward": "around", "model": "model", "backward": "backward", "optimizer": "optimizer"}


def phases(events) -> list[tuple[float, float, str]]:
    """(start, end, phase) of every labelled range, shortest first, so that the first that holds an operator is its
    innermost (a "model" pass inside "forward")."""
    ranges = [
        (e.time_range.start, e.time_range.end, PHASE_OF_LABEL[e.name]) for e in events if e.name in PHASE_OF_LABEL
    ]
    return sorted(ranges, key=lambda r: r[1] - r[0])


def phase_of(event, ranges) -> str | None:
    """The innermost phase an operator ran in, by time: on a GPU the backward pass runs on the autograd engine's own
    thread, outside the labelled range's call tree."""
    return next((phase for start, end, phase in ranges if start <= event.time_range.start <= end), None)


def is_operation(event) -> bool:
    """A CPU operator that computes and calls no other operator that does (a view or an allocation inside is fine)."""
    return computes(event) and not any(_computes_within(child) for child in event.cpu_children)


def computes(event) -> bool:
    return event.name.startswith("aten::") and event.name not in METADATA


def _computes_within(event) -> bool:
    return computes(event) or any(_computes_within(child) for child in event.cpu_children)


def count(events, gpu: bool) -> dict:
    """Per phase: operations (CPU) or kernels (GPU) and milliseconds; host reads and forward passes of the model."""
    ops = dict.fromkeys(PHASES, 0)
    ms = dict.fromkeys(PHASES, 0.0)
    reads = passes = 0
    ranges = phases(events)
    for e in events:
        if e.device_type != DeviceType.CPU:
            continue
        if e.name in PHASE_OF_LABEL:
            ms[PHASE_OF_LABEL[e.name]] += e.cpu_time_total / 1e3
            if e.name == "model":
                passes += 1
                ms["around"] -= e.cpu_time_total / 1e3  # "forward" holds the model's passes
            continue
        phase = phase_of(e, ranges)
        if phase is None:
            continue
        if e.name in HOST_READS and not _inside(e, HOST_READS):
            reads += 1
        if gpu:
            ops[phase] += len(e.kernels)
        elif is_operation(e):
            ops[phase] += 1
    n = PROFILED_STEPS
    return {
        "ops": {k: v / n for k, v in ops.items()},
        "ms": {k: v / n for k, v in ms.items()},
        "host_reads": reads / n,
        "model_passes": passes / n,
    }


def _inside(event, names: set) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in names:
            return True
        parent = parent.cpu_parent
    return False


def labelled_model(base) -> None:
    """Label every forward pass of the frozen model "model" in the profile."""
    open_labels = []
    base.register_forward_pre_hook(lambda *_: open_labels.append(record_function("model").__enter__()))
    base.register_forward_hook(lambda *_: open_labels.pop().__exit__(None, None, None))


def profiled(name: str, quick: bool) -> list[dict]:
    s = training.setting(quick)
    base, tokenizer, family = training.build(name, quick)
    rows = []
    for checkpointing in (False, True):
        for kind in TRAINERS:
            step = training.trainer(kind, base, tokenizer, family, s, checkpointing)
            labelled_model(step.base)
            step()  # warm-up
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if training.DEVICE.type == "cuda" else [])
            with profile(activities=activities) as prof:
                for _ in range(PROFILED_STEPS):
                    step()
                training.synchronize()
            found = count(prof.events(), training.DEVICE.type == "cuda")
            rows.append({"model": name, "checkpointing": checkpointing, "trainer": kind, **found})
            del step
    return rows


def profiled_at(commit: str, quick: bool) -> list[dict]:
    """The same profile of softprompt's step as `commit` left it: its src/ exported beside, run in a child process."""
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        command = [sys.executable, __file__, "--device", str(training.DEVICE), "--child", str(Path(tree) / "src")]
        out = subprocess.run(command + (["--quick"] if quick else []), capture_output=True, text=True, check=True)
    return [row for row in json.loads(out.stdout.splitlines()[-1]) if row["trainer"] == "softprompt"]


def cells(row: dict) -> list[str]:
    ops, ms = row["ops"], row["ms"]
    total_ms = sum(ms.values())
    return [
        " / ".join(f"{ops[p]:,.0f}" for p in PHASES),
        f"{sum(ops.values()):,.0f}",
        f"{row['host_reads']:g}",
        f"{row['model_passes']:g}",
        " / ".join(f"{ms[p]:.0f}" for p in PHASES) + f" ({total_ms:.0f})",
    ]


def section(rows: list[dict], before: list[dict], commit: str | None, quick: bool, s) -> str:
    import peft
    import transformers

    gpu = training.DEVICE.type == "cuda"
    unit = "kernels" if gpu else "operators"
    where = (
        f"{torch.cuda.get_device_name(training.DEVICE)}, bf16 autocast"
        if gpu
        else f"{platform.machine()} {torch.get_num_threads()} CPU threads, float32"
    )
    command = f"python bench/profile_step.py{' --quick' if quick else ''}{' --device cuda' if gpu else ''}"
    command += f" --before {commit}" if commit else ""
    lines = [
        "## Step profile" + (" on a GPU" if gpu else ""),
        "",
        f"`{command}`, {datetime.date.today()}, {where}, torch {torch.__version__}, transformers {transformers.__version__},"
        f" peft {peft.__version__}. Batch {s.batch}, T = {s.length}, P = {s.prompt}, as in the training section; {PROFILED_STEPS} profiled steps"
        f' after one untimed, figures per step. Phases: around / model / backward / optimizer, where "around" is what a'
        f" trainer runs in the forward pass besides the model (the join, the label readout, the loss). {unit.capitalize()}:"
        + (" CUDA kernels launched." if gpu else " ATen operators that compute (views and metadata left out).")
        + " Host reads: operators the host waits on (a synchronisation on a GPU). Times are under the profiler, for"
        " orientation; the ratios of the training section are the step-time figures.",
        "",
        f"| model | checkpointing | trainer | {unit}: around / model / backward / optimizer | {unit} | host reads | model passes | ms: around / model / backward / optimizer (step) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in before + rows:
        who = row["trainer"] + (f" at {commit}" if row in before else "")
        lines.append(
            f"| {row['model']} | {'yes' if row['checkpointing'] else 'no'} | {who} | " + " | ".join(cells(row)) + " |"
        )
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small random models: a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu (the recorded run) or cuda: bf16 autocast on a GPU")
    parser.add_argument("--before", metavar="COMMIT", help="also profile softprompt's step as this git commit left it")
    add_write_option(parser, BENCHMARKS)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the src/ folder to profile, printing JSON
    args = parser.parse_args()
    training.DEVICE = torch.device(args.device)
    if training.DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    sys.path.insert(0, args.child or str(ROOT / "src"))
    rows = []
    for name in training.MODELS:
        print(f"profiling: {name}", file=sys.stderr)
        rows += profiled(name, args.quick)
    if args.child:
        return print(json.dumps(rows))
    before = profiled_at(args.before, args.quick) if args.before else []
    text = section(rows, before, args.before, args.quick, training.setting(args.quick))
    publish(text, BENCHMARKS, args.write)


if __name__ == "__main__":
    main()
