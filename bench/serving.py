"""Serving benchmarks on the embedded MiniLM (encoder-only) and SmolLM2 (decoder-only), printed as the `## Serving`
section of docs/benchmarks.md, and written there (other sections kept) with `--write`:

- an 8-task mixed batch against a same-task batch of the same size, and against the 8 tasks run one after another
  with one prompt per pass (batch/8 rows each, as PEFT must);
- an ensemble of 5 prompts in one pass against 5 separate passes, one input;
- decoder-only greedy generation with a 100-token prompt: prompt keys/values reused, recomputed, and no prompt at all;
- the HTTP server (uvicorn, loopback) under 1, 8 and 64 concurrent clients on mixed tasks, with the default
  micro-batching and with batches of one row (both servers up at once, measured in alternating windows).

Every comparison alternates its variants in one process over several rounds and reports the median ratio with its
spread (min-max over rounds): the machine may be shared, so ratios, not absolute times, are the figures.

    python bench/serving.py            # the full run: 5 rounds (3 for the server), batches of 16, 5 s windows
    python bench/serving.py --write    # the same, recorded in docs/benchmarks.md
    python bench/serving.py --quick    # a smoke run: 1 round, batches of 8, short windows; figures not to be quoted
"""

import argparse
import asyncio
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from report import BENCHMARKS, add_write_option, publish  # noqa: E402  bench/report.py, beside this file

from softprompt.core.bank import PromptBank  # noqa: E402
from softprompt.core.families import ENCODER_ONLY  # noqa: E402
from softprompt.files.prompt_file import save_prompt  # noqa: E402
from softprompt.models.embedded import MINILM, SMOLLM2  # noqa: E402
from softprompt.models.model import SoftPromptModel  # noqa: E402
from softprompt.options import DataOptions  # noqa: E402
from softprompt.tasks import make_task  # noqa: E402

SECTION = "## Serving"
TASKS = [  # 8 classification tasks: a template and two label words each
    ("sentiment", "Review: {} Sentiment:", {"0": "negative", "1": "positive"}),
    ("rating", "{} The movie was", {"0": "bad", "1": "good"}),
    ("topic", "Text: {} Topic:", {"sport": "sport", "politics": "politics"}),
    ("spam", "Message: {} Spam:", {"0": "no", "1": "yes"}),
    ("emotion", "{} I feel", {"sad": "sad", "happy": "happy"}),
    ("formality", "Sentence: {} Style:", {"casual": "casual", "formal": "formal"}),
    ("question", "{} Is this a question?", {"0": "no", "1": "yes"}),
    ("tense", "{} Tense:", {"past": "past", "present": "present"}),
]
TEXTS = [
    "A gorgeous, moving film with a cast at the top of its game.",
    "The plot was a mess and the ending made no sense at all.",
    "Parliament voted on the new budget late last night.",
    "Win a free cruise now, just reply with your bank details!",
    "We finally adopted a dog and the whole family is thrilled.",
    "Dear Sir or Madam, I am writing to request further information.",
    "Where did you park the car this morning?",
    "She walked to the station and caught the last train home.",
]


@dataclass
class Setup:
    quick: bool
    rounds: int  # rounds of every side-by-side comparison
    batch: int  # rows of a mixed batch (a multiple of 8)
    prompt_length: int  # of the task prompts
    new_tokens: int  # greedy generation
    window: float  # seconds of one server measurement
    server_rounds: int  # alternating measurement windows per server and concurrency
    max_requests: int  # per server measurement window
    device: str
    load: float = 0.0  # the 1-minute load average when the run started


# ----- timing --------------------------------------------------------------------------------------------
def side_by_side(variants: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each variant (a function) per round, alternating them (the order rotates every round); one
    untimed warm-up call each first."""
    for fn in variants.values():
        fn()
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync()
            start = time.perf_counter()
            variants[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ratio(a: list[float], b: list[float]) -> str:
    """The median over rounds of a/b, with its min-max."""
    r = [x / y for x, y in zip(a, b)]
    return f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"


def ms(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):.0f}"


# ----- the models and their tasks ------------------------------------------------------------------------
def load(name: str, device: str) -> SoftPromptModel:
    model = SoftPromptModel.load(name).to(device)
    model.kv_reuse = True
    return model


def task_prompts(model: SoftPromptModel, n: int, length: int) -> list[torch.Tensor]:
    return [model.initial_prompt("vocab", length, seed=seed) for seed in range(n)]


def tasks():
    return [make_task(DataOptions(template=template, verbalizers=labels)) for _, template, labels in TASKS]


def scoring_rows(model: SoftPromptModel, task_ids: list[int]) -> tuple[list[str], list[list[str]], list[int]]:
    """Inputs rendered by their task's template (as the server renders them), label sets and prompt ids."""
    ts = tasks()
    texts = [ts[k].render(model, [{"": TEXTS[i % len(TEXTS)]}])[0] for i, k in enumerate(task_ids)]
    return texts, [ts[k].label_texts for k in task_ids], task_ids


def mixed_batches(model: SoftPromptModel, s: Setup) -> list[str]:
    """An 8-task mixed batch against a same-task batch and against 8 passes of one task each."""
    model.bank = PromptBank(task_prompts(model, 8, s.prompt_length), [name for name, _, _ in TASKS])
    mixed = scoring_rows(model, [i % 8 for i in range(s.batch)])
    same = scoring_rows(model, [0] * s.batch)
    per_task = [scoring_rows(model, [k] * (s.batch // 8)) for k in range(8)]
    times = side_by_side(
        {
            "mixed": lambda: model.score_labels(*mixed),
            "same": lambda: model.score_labels(*same),
            "one task per pass": lambda: [model.score_labels(*rows) for rows in per_task],
        },
        s.rounds,
    )
    return [
        f"| {model.name} | {s.batch} | {ratio(times['same'], times['mixed'])} | {ratio(times['one task per pass'], times['mixed'])} "
        f"| {ms(times['mixed'])} / {ms(times['same'])} / {ms(times['one task per pass'])} |"
    ]


def ensembles(model: SoftPromptModel, s: Setup) -> list[str]:
    """5 prompts of one task: one pass of 5 rows against 5 passes of one row, one input."""
    task = tasks()[0]
    model.bank = PromptBank(task_prompts(model, 5, s.prompt_length))
    inputs = [{"": TEXTS[0]}]
    times = side_by_side(
        {
            "one pass": lambda: task.predict_members(model, inputs, list(range(5))),
            "5 passes": lambda: [task.predict(model, inputs, [k]) for k in range(5)],
        },
        s.rounds,
    )
    return [
        f"| {model.name} | {ratio(times['one pass'], times['5 passes'])} | {ms(times['one pass'])} / {ms(times['5 passes'])} |"
    ]


def generation(model: SoftPromptModel, s: Setup) -> list[str]:
    """Greedy generation at batch 1 after a 100-token prompt (keys/values reused or recomputed) and with none.
    EOS is ignored, so that every variant makes the same number of tokens."""
    prompted = PromptBank(model.initial_prompt("vocab", 100, seed=0))
    none = PromptBank.empty(model.hidden).to(model.device)
    inputs = [TEXTS[0]]
    eos, model.base.generation_config.eos_token_id = model.base.generation_config.eos_token_id, None

    def run(bank, reuse):
        def go():
            model.bank, model.kv_reuse = bank, reuse
            model.generate(inputs, [0], max_new_tokens=s.new_tokens)

        return go

    try:
        times = side_by_side(
            {
                "reused": run(prompted.to(model.device), True),
                "recomputed": run(prompted.to(model.device), False),
                "none": run(none, False),
            },
            s.rounds,
        )
    finally:
        model.base.generation_config.eos_token_id = eos
        model.kv_reuse = True
    return [
        f"| {model.name} | {s.new_tokens} | {ratio(times['reused'], times['none'])} | {ratio(times['recomputed'], times['none'])} "
        f"| {ms(times['reused'])} / {ms(times['recomputed'])} / {ms(times['none'])} |"
    ]


# ----- the server ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prompt_folder(model: SoftPromptModel, name: str, s: Setup, folder: Path) -> Path:
    """The 8 tasks as prompt files, as `softprompt serve` reads them."""
    for (task, template, labels), prompt in zip(TASKS, task_prompts(model, 8, s.prompt_length)):
        meta = {
            **model.identity(),
            "base_model": name,
            "task": {"type": "classification", "template": template, "verbalizers": labels},
        }
        save_prompt(folder / f"{task}.safetensors", prompt, meta)
    return folder


class Server:
    """`softprompt serve` in a subprocess on a free loopback port."""

    def __init__(self, folder: Path, name: str, device: str, batching: bool):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options = [] if batching else ["--max_batch_size", "1"]  # the defaults: batches of up to 32, no waiting
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1",
        }
        command = [
            sys.executable,
            "-m",
            "softprompt",
            "serve",
            "--prompts",
            str(folder),
            "--model",
            name,
            "--port",
            str(self.port),
            "--device",
            device,
            *options,
        ]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, seconds: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"the server stopped:\n{self.log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not start in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def load_test(url: str, clients: int, window: float, max_requests: int) -> tuple[float, list[float]]:
    """`clients` concurrent clients, each sending one-input requests of rotating tasks until `window` seconds or
    `max_requests` requests in all; requests per second and every latency (seconds)."""
    import httpx

    latencies: list[float] = []
    sent = 0
    start = time.perf_counter()
    deadline = start + window

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal sent
        n = c
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            body = {"task": TASKS[n % 8][0], "inputs": [TEXTS[n % len(TEXTS)]]}
            t = time.perf_counter()
            response = await http.post(url + "/v1/predict", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - t)
            n += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    return len(latencies) / (time.perf_counter() - start), latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def serving(model: SoftPromptModel, s: Setup, concurrency: tuple[int, ...]) -> list[str]:
    """Both servers up; for each concurrency, alternating measurement windows, the medians over rounds."""
    rows, name = [], model.name
    with tempfile.TemporaryDirectory() as tmp:
        folder = prompt_folder(model, name, s, Path(tmp))
        servers = {"batched": Server(folder, name, s.device, True), "one row": Server(folder, name, s.device, False)}
        try:
            for server in servers.values():
                server.wait()
                asyncio.run(load_test(server.url, 8, s.window, 8))  # warm-up: one request of each task
            for clients in concurrency:
                results = {kind: {"rps": [], "latencies": []} for kind in servers}
                for r in range(s.server_rounds):
                    for kind in list(servers)[r % 2 :] + list(servers)[: r % 2]:
                        rps, latencies = asyncio.run(load_test(servers[kind].url, clients, s.window, s.max_requests))
                        results[kind]["rps"].append(rps)
                        results[kind]["latencies"] += latencies
                cells = []
                for kind in servers:
                    lat = results[kind]["latencies"]
                    cells.append(
                        f"{statistics.median(results[kind]['rps']):.1f} | {1000 * percentile(lat, 0.5):.0f} / {1000 * percentile(lat, 0.99):.0f} ({len(lat)})"
                    )
                speedup = ratio(results["batched"]["rps"], results["one row"]["rps"])
                rows.append(f"| {name} | {clients} | {cells[0]} | {cells[1]} | {speedup} |")
        finally:
            for server in servers.values():
                server.stop()
    return rows


# ----- the report ----------------------------------------------------------------------------------------
def machine(load: float) -> str:
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}{gpu}, "
        f"load average {load:.1f} at the start; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    )


def section(s: Setup, tables: dict[str, list[str]]) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = (
        "`python bench/serving.py --quick`: **a quick smoke run (1 round, short windows): these figures only show that the benchmark runs; the full run replaces them**"
        if s.quick
        else "`python bench/serving.py`"
    )
    lines = [
        SECTION,
        "",
        f"{mode}. {when}; {machine(s.load)}.",
        f"Ratios are medians over {s.rounds} alternating rounds ({s.server_rounds} for the server; min-max in brackets); times are medians, for orientation only on cores shared with other work. "
        f"Task prompts: {s.prompt_length} tokens, vocabulary-initialised; classification by label scoring; prompt keys/values reused (SmolLM2) unless said.",
        "",
        "### Mixed-task batches (8 tasks, classification)",
        "",
        "Throughput of a batch whose rows belong to 8 tasks (a prompt and label set each), relative to a batch of one task of the same size (goal >= 0.9), "
        "and relative to running the 8 tasks one after another, one prompt per pass (batch/8 rows each), as PEFT must.",
        "",
        "| model | batch (rows) | mixed / same-task throughput | mixed / one-task-per-pass throughput | ms: mixed / same / per pass |",
        "|---|---|---|---|---|",
        *tables["mixed"],
        "",
        "### Ensembles (5 prompts, one input)",
        "",
        "Time of one pass over the input under 5 prompts, relative to 5 separate passes at batch 1 (goal <= 0.5).",
        "",
        "| model | one pass / 5 passes (time) | ms: one pass / 5 passes |",
        "|---|---|---|",
        *tables["ensemble"],
        "",
        "### Decoder-only generation after a 100-token prompt",
        "",
        "Greedy generation, batch 1, a fixed number of new tokens (EOS ignored): latency with the prompt's keys/values reused "
        "(computed once, before the timing) and recomputed in every call, relative to no prompt at all (goal for reuse <= 1.1).",
        "",
        "| model | new tokens | reused / no prompt (latency) | recomputed / no prompt (latency) | ms: reused / recomputed / none |",
        "|---|---|---|---|---|",
        *tables["generation"],
        "",
        "### Server (HTTP on loopback, mixed tasks)",
        "",
        f"`softprompt serve` with its default micro-batching (a request that finds the model idle runs at once; those arriving "
        f"while a batch runs are gathered, up to 32 rows) and with batches of one row (max_batch_size 1), both up at once; concurrent clients (httpx, async, on the same machine) send one-input requests of "
        f"rotating tasks for {s.window:g} s windows (at most {s.max_requests} requests each), alternating between the servers.",
        "",
        "| model | clients | batched: requests/s | batched: p50 / p99 ms (requests) | one row: requests/s | one row: p50 / p99 ms (requests) | batched / one row (requests/s) |",
        "|---|---|---|---|---|---|---|",
        *tables["server"],
        "",
        "The load run of [reliability](reliability.md#load) measures the same server another way (requests of 1-4 inputs or "
        "several tasks' items, 60 s, while other work shares the cores), so its absolute rate differs from these: compare "
        "the ratios measured side by side in one run, as the last column does, not absolute rates of different runs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run: one round, small batches, short windows.")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N].")
    parser.add_argument("--output", default=str(BENCHMARKS), help="The file --write records the section in.")
    add_write_option(parser, BENCHMARKS)
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.quick:
        s = Setup(
            True,
            rounds=1,
            batch=8,
            prompt_length=20,
            new_tokens=4,
            window=1.0,
            server_rounds=1,
            max_requests=24,
            device=device,
        )
    else:
        s = Setup(
            False,
            rounds=5,
            batch=16,
            prompt_length=20,
            new_tokens=16,
            window=5.0,
            server_rounds=3,
            max_requests=2000,
            device=device,
        )
    s.load = os.getloadavg()[0]
    tables = {"mixed": [], "ensemble": [], "generation": [], "server": []}
    for name in (MINILM.name, SMOLLM2.name):
        model = load(name, device)
        print(
            f"{name}: mixed batches, ensembles" + (", generation" if model.family != ENCODER_ONLY else ""), flush=True
        )
        tables["mixed"] += mixed_batches(model, s)
        tables["ensemble"] += ensembles(model, s)
        if model.family != ENCODER_ONLY:
            tables["generation"] += generation(model, s)
        print(f"{name}: server", flush=True)
        tables["server"] += serving(model, s, (1, 8, 64))
        del model
    text = section(s, tables)
    publish(text, Path(args.output), args.write)


if __name__ == "__main__":
    main()
