"""The server under load, printed as the `## Load` section of docs/reliability.md, and written there (other sections
kept) with `--write`:

`softprompt serve` (uvicorn, a subprocess on 127.0.0.1) serving 4 classification tasks of the embedded MiniLM; 64
concurrent loopback clients (httpx, async, in this process) send requests of mixed tasks (one task and 1-4 inputs, or
items of several tasks) for 60 s. Recorded: errors (any answer but 200, or no answer), requests/s, p50/p99 latency,
and the server's resident memory (RSS, sampled every second) from the first to the last 10 s.

    python bench/load.py                          # the recorded run: 64 clients, 60 s
    python bench/load.py --write                  # the same, recorded in docs/reliability.md
    python bench/load.py --clients 8 --seconds 10 # a shorter one
"""

import argparse
import asyncio
import datetime
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from report import RELIABILITY, add_write_option, publish  # noqa: E402  bench/report.py, beside this file
from serving import TASKS, TEXTS, Server, machine, percentile  # noqa: E402

from softprompt.files.prompt_file import save_prompt  # noqa: E402
from softprompt.models.embedded import MINILM  # noqa: E402
from softprompt.models.model import SoftPromptModel  # noqa: E402

SECTION = "## Load"
HEADER = "# Reliability\n\nWhat softprompt guarantees under faults, bad input and load: each guarantee with the tests that check it, each figure with the command that reproduces it.\n"
BOUNDS = {"clients": (1, 256), "seconds": (1, 600), "tasks": (2, len(TASKS))}


@dataclass
class Run:
    clients: int
    seconds: float
    tasks: int
    requests: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since the start, bytes)
    elapsed: float = 0.0

    def window(self) -> float:
        """The memory windows: 10 s, or a quarter of a shorter run."""
        return min(10.0, self.seconds / 4)

    def rss_growth(self) -> tuple[float, float, float]:
        """Mean RSS (MiB) over the first and the last window, and the growth between them (%)."""
        w = self.window()
        first = [b for t, b in self.rss if t <= w] or [self.rss[0][1]]
        last = [b for t, b in self.rss if t >= self.elapsed - w] or [self.rss[-1][1]]
        a, b = statistics.mean(first) / 2**20, statistics.mean(last) / 2**20
        return a, b, 100 * (b - a) / a


def prompt_folder(model: SoftPromptModel, name: str, tasks: int, folder: Path) -> Path:
    """`tasks` classification tasks as prompt files (20 vocabulary-initialised tokens each), as `softprompt serve` reads them."""
    for seed, (task, template, labels) in enumerate(TASKS[:tasks]):
        meta = {
            **model.identity(),
            "base_model": name,
            "task": {"type": "classification", "template": template, "verbalizers": labels},
        }
        save_prompt(folder / f"{task}.safetensors", model.initial_prompt("vocab", 20, seed=seed), meta)
    return folder


def request(n: int, tasks: int) -> dict:
    """The n-th request of a client: one task with 1-4 inputs, or (every third) items of several tasks."""
    names = [t[0] for t in TASKS[:tasks]]
    if n % 3 == 2:
        return {
            "items": [{"task": names[(n + k) % tasks], "input": TEXTS[(n + k) % len(TEXTS)]} for k in range(1 + n % 4)]
        }
    return {"task": names[n % tasks], "inputs": [TEXTS[(n + k) % len(TEXTS)] for k in range(1 + n % 4)]}


def rss(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


async def drive(url: str, pid: int, run: Run) -> Run:
    """`run.clients` clients, each sending its next request as soon as the last is answered, for `run.seconds`."""
    import httpx

    start = time.perf_counter()
    deadline = start + run.seconds

    async def client(c: int, http: httpx.AsyncClient) -> None:
        n = c
        while time.perf_counter() < deadline:
            body = request(n, run.tasks)
            t = time.perf_counter()
            try:
                response = await http.post(url + "/v1/predict", json=body)
                expected = len(body.get("inputs") or body.get("items"))
                if response.status_code != 200 or len(response.json()["predictions"]) != expected:
                    run.errors.append(f"{response.status_code}: {response.text[:200]}")
                else:
                    run.latencies.append(time.perf_counter() - t)
                    run.rows += expected
            except (httpx.HTTPError, ValueError, KeyError) as e:
                run.errors.append(f"{type(e).__name__}: {e}")
            run.requests += 1
            n += run.clients

    async def sample() -> None:
        while time.perf_counter() < deadline:
            run.rss.append((time.perf_counter() - start, rss(pid)))
            await asyncio.sleep(1.0)

    limits = httpx.Limits(max_connections=run.clients, max_keepalive_connections=run.clients)
    async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as http:
        await asyncio.gather(sample(), *(client(c, http) for c in range(run.clients)))
    run.elapsed = time.perf_counter() - start
    run.rss.append((run.elapsed, rss(pid)))
    return run


def section(run: Run, model: str, load: float, command: str) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    first, last, growth = run.rss_growth()
    p50, p99 = (1000 * percentile(run.latencies, q) for q in (0.5, 0.99)) if run.latencies else (float("nan"),) * 2
    return "\n".join(
        [
            SECTION,
            "",
            f"`{command}`. {when}; {machine(load)}.",
            f"`softprompt serve` (uvicorn, one worker, its default micro-batching: max_batch_size 32, no wait) on 127.0.0.1, serving {run.tasks} classification tasks of {model} "
            f"(20-token prompts); {run.clients} concurrent clients (httpx, async, one process on the same machine) send requests of mixed tasks "
            f"(one task with 1-4 inputs, or items of several tasks) for {run.seconds:g} s, each its next request as soon as the last is answered. "
            f"An error is any answer but 200 with one prediction per input, or none. Memory: the server's RSS sampled every second, "
            f"mean of the first {run.window():g} s against the last {run.window():g} s.",
            "",
            "| clients | seconds | requests | errors | requests/s | inputs/s | p50 ms | p99 ms | RSS first / last (MiB) | RSS growth |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {run.clients} | {run.seconds:g} | {run.requests} | {len(run.errors)} | {run.requests / run.elapsed:.1f} | {run.rows / run.elapsed:.1f} | "
            f"{p50:.0f} | {p99:.0f} | {first:.0f} / {last:.0f} | {growth:+.1f}% |",
            *([""] + [f"First errors: {'; '.join(run.errors[:3])}"] if run.errors else []),
        ]
    )


def bounded(name: str):
    low, high = BOUNDS[name]

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"--{name} must be between {low} and {high} (got {value})")
        return value

    return parse


def main(argv: list[str] | None = None) -> Run:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=bounded("clients"), default=64, help="Concurrent clients (1-256).")
    parser.add_argument("--seconds", type=bounded("seconds"), default=60, help="How long they send requests (1-600).")
    parser.add_argument("--tasks", type=bounded("tasks"), default=4, help=f"Served tasks (2-{len(TASKS)}).")
    parser.add_argument(
        "--model", default=MINILM.name, help="The served model (a name or folder); the embedded MiniLM by default."
    )
    parser.add_argument("--output", default=str(RELIABILITY), help="The file --write records the `## Load` section in.")
    add_write_option(parser, RELIABILITY)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    output = Path(args.output)
    with tempfile.TemporaryDirectory() as tmp:
        model = SoftPromptModel.load(args.model)
        prompt_folder(model, args.model, args.tasks, Path(tmp))
        del model
        server = Server(Path(tmp), args.model, "auto", batching=True)
        try:
            server.wait()
            asyncio.run(
                drive(server.url, server.process.pid, Run(args.tasks, 1, args.tasks))
            )  # warm-up: each task once
            run = asyncio.run(drive(server.url, server.process.pid, Run(args.clients, args.seconds, args.tasks)))
            alive = server.process.poll() is None
        finally:
            server.stop()
    if not alive:
        run.errors.append("the server stopped")
    command = "python bench/load.py" + "".join(
        f" --{k} {v}" for k, v in vars(args).items() if k not in ("output", "write") and v != parser.get_default(k)
    )
    text = section(run, args.model, load, command)
    publish(text, output, args.write, HEADER)
    return run


if __name__ == "__main__":
    finished = main()
    sys.exit(
        1 if finished.errors or finished.rss_growth()[2] >= 10 else 0
    )  # the goals: no errors, memory growth under 10%
