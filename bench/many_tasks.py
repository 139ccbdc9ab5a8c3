"""What many tasks cost one server: `softprompt serve` over folders of 1, 100 and 1,000 prompt files of the embedded
MiniLM (encoder-only) and SmolLM2 (decoder-only), side by side.

    python bench/many_tasks.py           # the recorded run: 1, 100 and 1,000 tasks, 3 rounds of 5 s windows
    python bench/many_tasks.py --quick   # a smoke run: 1, 10 and 50 tasks, short windows; figures not to be quoted
    python bench/many_tasks.py --write   # either, recorded in docs/benchmarks.md ("## Many tasks")

For each folder size, a server of its own (all up at once): the seconds from start to answering /healthz, its
resident memory above the one-task server's once warmed up, the median time of listing the tasks (GET /v1/tasks) and
of a rescan that finds nothing new (POST /v1/tasks), and the requests per second of 16 clients whose requests
(one input each) go to the tasks in turn, so that every task is used, relative to the one-task server's, measured in
alternating windows. Every prompt is distinct (random), so nothing is shared between tasks by accident.
"""

import argparse
import asyncio
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/serving.py and bench/report.py, beside this file

from report import BENCHMARKS, add_write_option, publish  # noqa: E402
from serving import TASKS, TEXTS, Server, load, machine  # noqa: E402

from softprompt.files.prompt_file import save_prompt  # noqa: E402
from softprompt.models.embedded import MINILM, SMOLLM2  # noqa: E402

CLIENTS = 16
PROMPT_LENGTH = 20


def task_folder(model, name: str, n: int, folder: Path) -> list[str]:
    """`n` prompt files of distinct random prompts, their templates and labels cycling through serving.py's 8."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(n)
    identity = {**model.identity(), "base_model": name}
    names = []
    for i in range(n):
        _, template, labels = TASKS[i % len(TASKS)]
        prompt = 0.05 * torch.randn(PROMPT_LENGTH, model.hidden, generator=generator)
        task = {"type": "classification", "template": template, "verbalizers": labels}
        save_prompt(folder / f"task{i:04d}.safetensors", prompt, {**identity, "task": task})
        names.append(f"task{i:04d}")
    return names


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


async def spread_load(url: str, tasks: list[str], window: float) -> float:
    """CLIENTS clients for `window` seconds, request k going to task k mod len(tasks): requests per second."""
    done, sent, deadline = 0, 0, time.perf_counter() + window
    begun = time.perf_counter()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done, sent
        while time.perf_counter() < deadline:
            k, sent = sent, sent + 1
            body = {"task": tasks[k % len(tasks)], "inputs": [TEXTS[k % len(TEXTS)]]}
            (await http.post(url + "/v1/predict", json=body)).raise_for_status()
            done += 1

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return done / (time.perf_counter() - begun)


def timed(call, times: int) -> float:
    """The median seconds of `times` calls."""
    seconds = []
    for _ in range(times):
        begun = time.perf_counter()
        call().raise_for_status()
        seconds.append(time.perf_counter() - begun)
    return statistics.median(seconds)


def measure(name: str, sizes: tuple[int, ...], window: float, rounds: int) -> list[dict]:
    model = load(name, "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = {n: task_folder(model, name, n, Path(tmp) / f"tasks-{n}") for n in sizes}
        del model
        servers, startup = {}, {}
        try:
            for n in sizes:  # one at a time, so that each start is timed alone
                begun = time.perf_counter()
                servers[n] = Server(Path(tmp) / f"tasks-{n}", name, "cpu", batching=True)
                servers[n].wait(seconds=600)
                startup[n] = time.perf_counter() - begun
            for n, server in servers.items():  # warm-up, the same requests for all: every task answers at least once
                for i in range(0, max(sizes), 64):
                    items = [{"task": tasks[n][k % n], "input": TEXTS[0]} for k in range(i, i + 64)]
                    httpx.post(server.url + "/v1/predict", json={"items": items}, timeout=600).raise_for_status()
            rates: dict[int, list[float]] = {n: [] for n in sizes}
            for r in range(rounds):
                for n in sizes[r % len(sizes) :] + sizes[: r % len(sizes)]:
                    rates[n].append(asyncio.run(spread_load(servers[n].url, tasks[n], window)))
            for n, server in servers.items():
                rows.append(
                    {
                        "model": name,
                        "tasks": n,
                        "startup_s": startup[n],
                        "memory_mb": resident_mb(server.process.pid) - resident_mb(servers[sizes[0]].process.pid),
                        "list_s": timed(lambda url=server.url: httpx.get(url + "/v1/tasks", timeout=600), 5),
                        "rescan_s": timed(lambda url=server.url: httpx.post(url + "/v1/tasks", timeout=600), 3),
                        "ratio": [a / b for a, b in zip(rates[n], rates[sizes[0]])],
                        "rps": statistics.median(rates[n]),
                    }
                )
        finally:
            for server in servers.values():
                server.stop()
    return rows


def section(rows: list[dict], quick: bool, window: float, rounds: int, seconds: float) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = (
        "`python bench/many_tasks.py --quick` (a smoke run: its figures only show that it runs)"
        if quick
        else "`python bench/many_tasks.py`"
    )
    lines = [
        "## Many tasks",
        "",
        f"{mode}. {when}; {machine(0.0)}; {seconds:.0f} s. One server per folder of N prompt files ({PROMPT_LENGTH}-token"
        f" random prompts, classification), all up at once; {CLIENTS} clients send one-input requests to the tasks in turn"
        f" for {window:g} s windows, the servers alternating over {rounds} rounds. Memory: resident set above the one-task"
        f" server's, after each has answered the same {-(-max(r['tasks'] for r in rows) // 64)} requests of 64 items (every task at least once). Throughput: requests/s over all N tasks relative to the one-task"
        " server's, median of the rounds (min-max).",
        "",
        "| model | tasks | start (s) | memory above one task (MB) | list tasks (s) | rescan (s) | requests/s | relative to one task |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["ratio"]
        lines.append(
            f"| {r['model']} | {r['tasks']:,} | {r['startup_s']:.1f} | {r['memory_mb']:.0f} | {r['list_s']:.3f} |"
            f" {r['rescan_s']:.3f} | {r['rps']:.1f} | {statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}) |"
        )
    lines += [
        "",
        "SmolLM2 reuses each prompt's keys and values (prefix_cache.py): the server keeps them for every served"
        " prompt, up to `--kv_cache_mb` (1,024 MB by default). A 20-token prompt's take 30 layers x 2 x 3 key/value"
        " heads x 64 x 20 positions x 4 bytes = 0.88 MB, so 1,000 tasks hold 879 MB of them, most of the memory above."
        " Past the budget (about 1,160 such tasks by default) the least recently used prompt's are dropped and"
        " computed again when its task comes back: one prefix pass for each such prompt in a batch. MiniLM keeps each"
        " (prompt, label text) anchor the same way (384 x 4 bytes each, up to 4,096 pairs). The prompts themselves"
        " take N x 20 x H x 4 bytes (for 1,000 tasks: 29 MB on MiniLM, 44 MB on SmolLM2).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1, 10 and 50 tasks, short windows: a smoke run")
    add_write_option(parser, BENCHMARKS)
    args = parser.parse_args()
    sizes, window, rounds = ((1, 10, 50), 1.0, 1) if args.quick else ((1, 100, 1000), 5.0, 3)
    begun, rows = time.perf_counter(), []
    for name in (MINILM.name, SMOLLM2.name):
        print(f"{name}: {', '.join(map(str, sizes))} tasks", file=sys.stderr, flush=True)
        rows += measure(name, sizes, window, rounds)
    publish(section(rows, args.quick, window, rounds, time.perf_counter() - begun), BENCHMARKS, args.write)


if __name__ == "__main__":
    main()
