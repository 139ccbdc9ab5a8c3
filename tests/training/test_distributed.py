"""The same training loop under torchrun: two CPU processes (gloo), one log, one prompt file, one checkpoint, the
prompt of one process with the same global batch, and evaluation sharded without duplicates; and under FSDP 2 and
DeepSpeed ZeRO-3, the frozen weights sharded and the prompt whole, to the same prompt."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from conftest import embedding_readings, save_model, sentiment_rows, tiny_gpt2, trained_prompt

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.models.sharding import fsdp_not_run, keep_prompt_whole, to_device
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training import checkpoint
from softprompt.training import train as training
from softprompt.training.run import check_launch
from softprompt.training.train import train_prompt

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

PROMPT = PromptOptions(length=4, init="vocab", vocab_first_n=40)
ONE_STEP = dict(
    max_steps=6,
    batch_size=10,
    micro_batch_size=5,
    eval_every=3,
    save_every=3,
    keep_checkpoints=1,
    lr=0.3,
    max_grad_norm=0.5,
)  # gradient norms here: 0.4-1.8


def test_two_processes_train_one_prompt(tmp_path):
    folder = save_model(tiny_gpt2(), tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows() * 4))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        "torchrun",
        "--nproc_per_node",
        "2",
        "-m",
        "softprompt.cli",
        "train",
        "--model.name",
        folder,
        "--data.train",
        "train.jsonl",
        "--data.validation",
        "train.jsonl",
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        "--prompt.length",
        "8",
        "--prompt.vocab_first_n",
        "40",
        "--train.max_steps",
        "20",
        "--train.batch_size",
        "16",
        "--train.micro_batch_size",
        "4",
        "--train.eval_every",
        "10",
        "--train.output_dir",
        "run",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("saved: ") == 1  # only the main process reports
    assert done.stderr.count("processes: 2 (MULTI_CPU)") == 1
    report = json.loads((tmp_path / "run" / "results.jsonl").read_text())
    assert (report["processes"], report["distributed"]) == (2, "MULTI_CPU")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/accuracy" in r] == [10, 20]  # logged once, not per process
    assert (tmp_path / "run" / "prompt.safetensors").is_file()


SCRIPT = f"""
import json, os, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from conftest import embedding_readings, sentiment_rows, tiny_gpt2
from softprompt.options import DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import make_task
from softprompt.training.train import train_prompt
import softprompt.training.train

model = tiny_gpt2()
task = make_task(DataOptions(verbalizers={{"0": "no", "1": "yes"}}))
examples = task.examples(sentiment_rows() * 2, "rows", None)
options = TrainOptions(**{{**{ONE_STEP!r}, "output_dir": "run", "max_steps": int(sys.argv[1]), "resume": sys.argv[2] == "resume"}})
backward, first_gradient, matrix = softprompt.training.train.backward_accumulated, [], {{}}  # at the first step: the prompt's gradient,

def recorded(*args, **kwargs):  # and what reads the embedding matrix, read on the model as wrapped for training
    loss = backward(*args, **kwargs)
    if not first_gradient:
        first_gradient.append(model.bank.weight.grad.flatten().tolist())
        matrix.update(embedding_readings(model))
    return loss

softprompt.training.train.backward_accumulated = recorded
scored = []  # the predictions each evaluation scores, gathered from both processes
score = task.score
task.score = lambda predictions, examples: scored.append(predictions) or score(predictions, examples)
result = train_prompt(model, task, examples, examples[:7], {PROMPT!r}, options, "run", progress=False)
from transformers.integrations import is_deepspeed_zero3_enabled  # a model loaded now would load partitioned
if int(os.environ["RANK"]) == 0:
    # each process holds a share of a sharded weight: an FSDP DTensor, or a DeepSpeed parameter's own partition
    sharded = {{part: [type(p).__name__ == "DTensor" or (hasattr(p, "ds_id") and p.ds_tensor.numel() < p.ds_numel) for p in getattr(model, part).parameters()] for part in ("base", "bank")}}
    print("RESULT" + json.dumps({{"metrics": result.history[-1], "predictions": scored[-1], "sharded": sharded, "first_gradient": first_gradient[0], "matrix": matrix, "zero3_after": is_deepspeed_zero3_enabled(), "tied": model.base.lm_head.weight is model.base.transformer.wte.weight}}))
"""

# accelerate 1.15 turns FSDP on for GPUs only (a CPU run is MULTI_CPU whatever the config says); the same accelerator
# with its distributed type set to FSDP after start-up prepares the model with FSDP 2's fully_shard, as on GPUs.
FSDP_ON_CPU = """
import softprompt.training.run
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

class FSDPOnCPU(Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        PartialState().distributed_type = self.state.distributed_type = DistributedType.FSDP
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["GPT2Block"], cpu_ram_efficient_loading=FROM_PROCESS_0)

softprompt.training.run.Accelerator = FSDPOnCPU
"""

# accelerate 1.15 turns DeepSpeed on for GPUs only, too; the same set-up after start-up, with the shipped ZeRO-3 config's
# DeepSpeed options, prepares the model as on GPUs (ZeRO-3 partitions every weight over the gloo processes). DeepSpeed's
# shared-memory all-reduce for CPU inference, compiled on first use, is left out: ZeRO-3's gloo collectives need none.
DEEPSPEED_ON_CPU = f"""
import deepspeed, deepspeed.comm.torch, softprompt.training.run, yaml
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DeepSpeedPlugin, DistributedType

deepspeed.comm.torch.build_shm_op = lambda: None

class DeepSpeedOnCPU(Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        deepspeed.init_distributed(dist_backend="gloo")
        PartialState().distributed_type = self.state.distributed_type = DistributedType.DEEPSPEED
        with open({str(Path(__file__).parents[2] / "configs" / "accelerate-deepspeed-zero3.yaml")!r}) as f:
            plugin = DeepSpeedPlugin(**yaml.safe_load(f)["deepspeed_config"])
        plugin.set_mixed_precision("no")
        plugin.select(_from_accelerator_state=True)
        self.state.deepspeed_plugins, self.deepspeed_engine_wrapped = plugin, None

softprompt.training.run.Accelerator = DeepSpeedOnCPU
"""


def test_two_processes_reach_the_one_process_prompt_shard_evaluation_and_resume(tmp_path, monkeypatch):
    """The same global batch of 10 (2 x 5 rows, or 2 micro-batches of 5 in one process) gives the same prompt;
    evaluation split 3 + 4 over the processes scores each of 7 examples once, as one process does; two processes
    resume from their checkpoint (each its own random generators) to the prompt of one uninterrupted process."""
    two, at_six, trained = two_process_runs(tmp_path, SCRIPT)
    assert not any(two["sharded"]["base"] + two["sharded"]["bank"])
    same_as_one_process(tmp_path, monkeypatch, two, at_six, trained)


@pytest.mark.parametrize("loaded", ["on every process", "from process 0"])
def test_under_fsdp_the_frozen_model_is_sharded_and_the_prompt_trains_whole_as_in_one_process(
    tmp_path, monkeypatch, loaded
):
    """FSDP 2 shards the frozen weights and leaves the prompt bank whole on every process: Adafactor trains it, its
    gradient is averaged over the processes, evaluation scores every example on gathered weights, and a checkpoint
    resumes to the prompt of one uninterrupted process. Each process shards its own copy of the model, or (with
    fsdp_cpu_ram_efficient_loading) process 0's: then process 1's own weights, made different here, are not used, and
    the tied embeddings, untied on the way, are tied again."""
    model = f"FROM_PROCESS_0 = {loaded == 'from process 0'}\n{FSDP_ON_CPU}model = tiny_gpt2()"
    if loaded == "from process 0":
        model += """
if os.environ["RANK"] == "1":
    import torch
    torch.nn.init.normal_(model.base.transformer.h[0].mlp.c_fc.weight)"""
    two, at_six, trained = two_process_runs(tmp_path, SCRIPT.replace("model = tiny_gpt2()", model, 1))
    assert all(two["sharded"]["base"]) and two["sharded"]["bank"] == [False]
    same_as_one_process(tmp_path, monkeypatch, two, at_six, trained)


@pytest.mark.parametrize("loaded", ["whole", "partitioned"])
def test_under_deepspeed_zero3_the_frozen_model_is_partitioned_and_the_prompt_trains_whole_as_in_one_process(
    tmp_path, monkeypatch, loaded
):
    """ZeRO-3 partitions the frozen weights and never sees the prompt bank: softprompt's Adafactor trains it, its
    gradient is averaged over the processes, evaluation scores every example, and a checkpoint resumes to the prompt of
    one uninterrupted process. The model is built whole, or loaded after accelerate has started, which loads it
    partitioned: the initialisers then gather the embedding matrix. After the run a model loads whole again."""
    model = "model = tiny_gpt2()"
    if loaded == "partitioned":
        folder = save_model(tiny_gpt2(), tmp_path / "model")
        model = f"""DeepSpeedOnCPU()
from softprompt.models.model import SoftPromptModel
model = SoftPromptModel.load({folder!r})
assert hasattr(model.base.get_input_embeddings().weight, "ds_id") and model.base.get_input_embeddings().weight.numel() == 0"""
    two, at_six, trained = two_process_runs(
        tmp_path, SCRIPT.replace("model = tiny_gpt2()", DEEPSPEED_ON_CPU + model, 1)
    )
    assert all(two["sharded"]["base"]) and two["sharded"]["bank"] == [False]
    same_as_one_process(tmp_path, monkeypatch, two, at_six, trained)


def test_the_shipped_deepspeed_config_trains_checkpoints_and_resumes_through_accelerate_launch(tmp_path, monkeypatch):
    """`accelerate launch --config_file configs/accelerate-deepspeed-zero3.yaml` on one CPU process: the model loads
    partitioned, in its own dtype or the one asked for; a run of 3 steps resumes from its checkpoint to 6 and reaches
    the prompt of an uninterrupted run without DeepSpeed."""
    from softprompt.cli import main

    folder = save_model(tiny_gpt2(), tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows() * 4))
    (
        tmp_path / "launched.py"
    ).write_text(  # the CLI, without DeepSpeed's shared-memory all-reduce (see DEEPSPEED_ON_CPU)
        "import sys, deepspeed.comm.torch\n"
        "deepspeed.comm.torch.build_shm_op = lambda: None\n"
        "from accelerate.state import PartialState\n"
        "from softprompt.cli import main\n"
        "from softprompt.models.model import SoftPromptModel\n"
        "load = SoftPromptModel.load\n"
        "def loaded(cls, *args, **kwargs):  # how the model's weights arrive\n"
        "    model = load(*args, **kwargs)\n"
        "    weight = model.base.get_input_embeddings().weight\n"
        "    print('loaded:', 'partitioned' if weight.numel() == 0 else 'whole', getattr(weight, 'ds_tensor', weight).dtype)\n"
        "    return model\n"
        "SoftPromptModel.load = classmethod(loaded)\n"
        "code = main()\n"
        "print('distributed:', PartialState().distributed_type)\n"
        "sys.exit(code)\n"
    )
    options = [
        "--model.name",
        folder,
        "--data.train",
        "train.jsonl",
        "--data.validation",
        "train.jsonl",
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        "--prompt.length",
        "4",
        "--prompt.vocab_first_n",
        "40",
        "--train.batch_size",
        "8",
        "--train.eval_every",
        "3",
        "--train.lr",
        "0.3",
    ]
    config = str(Path(__file__).parents[2] / "configs" / "accelerate-deepspeed-zero3.yaml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}

    def launch(steps: int, resume: str, *more: str) -> str:
        command = [
            "accelerate",
            "launch",
            "--config_file",
            config,
            "--num_processes",
            "1",
            "launched.py",
            "train",
            *options,
            "--train.max_steps",
            str(steps),
            "--train.output_dir",
            "run",
            "--train.resume",
            resume,
            *more,
        ]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "distributed: DistributedType.DEEPSPEED" in done.stdout
        return done.stdout + done.stderr

    assert "loaded: partitioned torch.float32" in launch(3, "false")
    assert checkpoint.latest(tmp_path / "run").name == "step-00000003"
    assert "resuming from" in launch(6, "true")
    assert checkpoint.latest(tmp_path / "run").name == "step-00000006"
    monkeypatch.chdir(tmp_path)
    assert main(["train", *options, "--train.max_steps", "6", "--train.output_dir", "one"]) == 0

    torch.testing.assert_close(trained_prompt(tmp_path / "run"), trained_prompt(tmp_path / "one"), rtol=1e-4, atol=1e-6)
    assert not torch.equal(
        trained_prompt(tmp_path / "one"), tiny_gpt2().initial_prompt("vocab", 4, first_n=40, seed=42)
    )
    assert "loaded: partitioned torch.bfloat16" in launch(1, "false", "--model.dtype", "bfloat16")


def two_process_runs(tmp_path: Path, script: str):
    """`script` run by two processes for 6 steps, then resumed to 8: the first run's result, its prompt at step 6,
    and a reader of the trained prompt in a run's newest checkpoint."""
    (tmp_path / "run.py").write_text(script)
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }

    def two_processes(*args) -> dict:
        done = subprocess.run(
            ["torchrun", "--nproc_per_node", "2", "run.py", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.split("RESULT")[1])

    def trained(run: str, processes: int) -> torch.Tensor:
        return trained_prompt(tmp_path / run, processes)

    two = two_processes("6", "new")
    assert [p.name for p in checkpoint.complete(tmp_path / "run")] == ["step-00000006"]  # one checkpoint, written once
    assert sorted(f.name for f in checkpoint.latest(tmp_path / "run").iterdir()) == [
        "rng-0.safetensors",
        "rng-1.safetensors",
        "state.safetensors",
    ]
    at_six = trained("run", 2)
    two_processes("8", "resume")
    return two, at_six, trained


def same_as_one_process(tmp_path: Path, monkeypatch, two: dict, at_six: torch.Tensor, trained) -> None:
    """The two processes' evaluation at step 6 is one process's with their prompt, and their gradient at the first step
    and prompt at step 8 (after resuming) are those of one process with the same global batch; what reads the embedding
    matrix (an initialiser, the fingerprint, the default rate's scale) reads it whole, sharded or not."""
    model = tiny_gpt2()
    assert two["zero3_after"] is False
    assert two["tied"] is True  # GPT-2's output embeddings still the input embeddings, one weight
    assert two["matrix"] == embedding_readings(model)
    task = make_task(DataOptions(verbalizers={"0": "no", "1": "yes"}))
    examples = task.examples(sentiment_rows() * 2, "rows", None)
    model.bank = PromptBank(at_six)
    predictions = task.predict_all(model, [e.fields for e in examples[:7]], progress=False)
    assert two["predictions"] == predictions
    assert two["metrics"] == {"step": 6, **{f"eval/{k}": v for k, v in task.score(predictions, examples[:7]).items()}}

    backward, first_gradient = training.backward_accumulated, []

    def recorded(*args, **kwargs):
        loss = backward(*args, **kwargs)
        if not first_gradient:
            first_gradient.append(model.bank.weight.grad.flatten().clone())
        return loss

    monkeypatch.setattr(training, "backward_accumulated", recorded)
    train_prompt(
        model,
        task,
        examples,
        examples[:7],
        PROMPT,
        TrainOptions(**{**ONE_STEP, "max_steps": 8, "output_dir": str(tmp_path / "one")}),
        tmp_path / "one",
        progress=False,
    )
    assert first_gradient[0].abs().max() > 1e-3  # a gradient whose scale the comparison below can see
    torch.testing.assert_close(torch.tensor(two["first_gradient"]), first_gradient[0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(trained("run", 2), trained("one", 1), rtol=1e-4, atol=1e-5)
    assert not torch.equal(trained("one", 1), tiny_gpt2().initial_prompt("vocab", 4, first_n=40, seed=42))


def test_under_fsdp_and_deepspeed_the_bank_trains_unsynced_and_what_would_shard_trained_weights_is_refused():
    model = tiny_gpt2()
    model.bank = PromptBank(torch.zeros(4, model.hidden))

    def fsdp(version=2):
        return SimpleNamespace(
            distributed_type=DistributedType.FSDP,
            state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=version)),
        )

    data_parallel = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    model_weight = next(model.base.parameters())
    assert keep_prompt_whole(data_parallel, model, "lora", [model_weight]) == []  # DDP averages every gradient
    assert keep_prompt_whole(fsdp(), model, "prompt", [model.bank.weight]) == [model.bank.weight]
    with pytest.raises(UserError, match="fsdp_version 1 in the accelerate config: softprompt runs under FSDP 2"):
        keep_prompt_whole(fsdp(version=1), model, "prompt", [model.bank.weight])
    with pytest.raises(UserError, match="--method lora: under FSDP softprompt trains prompts only"):
        keep_prompt_whole(fsdp(), model, "lora", [model_weight])

    deepspeed = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    assert keep_prompt_whole(deepspeed, model, "prompt", [model.bank.weight]) == [model.bank.weight]
    with pytest.raises(UserError, match="--method lora: under DeepSpeed softprompt trains prompts only"):
        keep_prompt_whole(deepspeed, model, "lora", [model_weight])


@pytest.mark.parametrize("kind", [DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MULTI_CPU])
@pytest.mark.parametrize("trains", [True, False])
def test_under_fsdp_a_model_to_be_sharded_waits_in_cpu_memory_and_everything_else_moves_to_the_device(kind, trains):
    """The meta device stands in for a GPU: under FSDP, a method that trains (prepare will shard the model onto the
    device) leaves the frozen model where it loaded and moves the bank; otherwise (prompt design, which prepare never
    sees, or another distributed type) everything moves."""
    model = tiny_gpt2()
    model.bank = PromptBank(torch.zeros(4, model.hidden))
    to_device(SimpleNamespace(distributed_type=kind, device=torch.device("meta")), model, sharded_later=trains)
    waits = kind == DistributedType.FSDP and trains
    assert {p.device.type for p in model.base.parameters()} == {"cpu" if waits else "meta"}
    assert model.bank.weight.device.type == "meta"


def test_an_fsdp_config_that_accelerate_runs_as_data_parallel_is_said(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert fsdp_not_run(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)) is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # as accelerate launch sets it from an FSDP config
    assert fsdp_not_run(SimpleNamespace(distributed_type=DistributedType.FSDP)) is None
    assert "accelerate runs on GPUs only: this run is data parallel" in fsdp_not_run(
        SimpleNamespace(distributed_type=DistributedType.MULTI_CPU)
    )


def test_a_launch_accelerate_would_run_wrongly_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    check_launch(SimpleNamespace(num_processes=2, mixed_precision="no", distributed_type=DistributedType.MULTI_CPU))
    with pytest.raises(
        UserError,
        match="accelerate counts 1 of the 2 processes launched, so they would not train together: on CPUs launch with ACCELERATE_USE_CPU=1 \\(torchrun or accelerate launch\\)$",
    ):
        check_launch(
            SimpleNamespace(num_processes=1, mixed_precision="no", distributed_type=DistributedType.NO)
        )  # off GPUs, without ACCELERATE_USE_CPU=1
    with pytest.raises(UserError, match="; DeepSpeed shards over GPUs only$"):
        check_launch(SimpleNamespace(num_processes=1, mixed_precision="no", distributed_type=DistributedType.DEEPSPEED))
    check_launch(
        SimpleNamespace(num_processes=8, mixed_precision="no", distributed_type=DistributedType.XLA)
    )  # TPUs keep their own count
    with pytest.raises(
        UserError,
        match="mixed_precision bf16 in the accelerate config, its launch options or the DeepSpeed config: softprompt sets the precision itself",
    ):
        check_launch(
            SimpleNamespace(num_processes=2, mixed_precision="bf16", distributed_type=DistributedType.MULTI_CPU)
        )


def test_what_accelerate_cannot_start_with_stops_in_one_line_and_a_wrong_launch_stops_before_the_model_loads(
    tmp_path, monkeypatch, capsys
):
    import softprompt.training.run
    from softprompt.cli import main

    def refuses(*args, **kwargs):  # as accelerate 1.15 does for an FSDP 1 config on CPUs
        raise RuntimeError("There are currently no available devices found, must be one of 'XPU', 'CUDA'.\nmore")

    monkeypatch.setattr(softprompt.training.run, "Accelerator", refuses)
    with pytest.raises(
        UserError,
        match="^accelerate cannot start with this launch and its config: There are currently no available devices found, must be one of 'XPU', 'CUDA'.$",
    ):
        softprompt.training.run.start_accelerate()
    monkeypatch.undo()
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    monkeypatch.setenv("WORLD_SIZE", "2")  # as if launched as two processes that accelerate counts as one each
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "no-such-type"}')  # a model that would fail to load
    argv = [
        "train",
        "--model.name",
        str(tmp_path / "model"),
        "--data.train",
        str(tmp_path / "train.jsonl"),
        "--data.verbalizers",
        '{"0": "no", "1": "yes"}',
        "--train.output_dir",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith(
        "error: accelerate counts 1 of the 2 processes launched"
    )  # not the model's error
    assert not (tmp_path / "run").exists()
