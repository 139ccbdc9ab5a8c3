"""The training loop, on accelerate: the same code on one CPU, one GPU, or many under `accelerate launch`/`torchrun`.

The optimiser gets the parameters the method names (methods/): for prompt tuning the prompt bank alone, so the frozen
model's weights never change. Every run appends its report to OUTPUT/results.jsonl. Checkpoints (checkpoint.py) let a
killed run continue with --train.resume=true to the prompt an uninterrupted run reaches.

The run's set-up, evaluation and report are in run.py; one step's gradient in accumulate.py; the optimiser in optim.py.
"""

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from softprompt.errors import UserError
from softprompt.methods import Method, make_method
from softprompt.models.model import SoftPromptModel
from softprompt.models.sharding import prepare, same_on_every_process
from softprompt.options import MethodOptions, PromptOptions, TrainOptions
from softprompt.tasks import Example, Task
from softprompt.training import checkpoint, run_folder, run_output
from softprompt.training.accumulate import backward_accumulated
from softprompt.training.optim import NonFinite, check_finite, make_optimizer, optimizer_step
from softprompt.training.run import Run
from softprompt.training.run_report import TrainResult
from softprompt.training.step_modes import training_mode


def train_prompt(
    model: SoftPromptModel,
    task: Task,
    train_examples: list[Example],
    validation_examples: list[Example] | None,
    prompt_options: PromptOptions,
    o: TrainOptions,
    output_dir: str | Path,
    progress: bool = True,
) -> TrainResult:
    """Learn one prompt for `task`; the best one (by the task's metric on validation) is written to output_dir.

    Nothing is written until training starts; from then on the run replaces any earlier run in output_dir."""
    method = make_method(MethodOptions(), prompt_options)
    return train(model, method, task, train_examples, validation_examples, o, output_dir, progress)


def train(
    model: SoftPromptModel,
    method: Method,
    task: Task,
    train_examples: list[Example],
    validation_examples: list[Example] | None,
    o: TrainOptions,
    output_dir: str | Path,
    progress: bool = True,
) -> TrainResult:
    """Adapt `model` to `task` with `method` (methods.make_method); its best result (by the task's metric on
    validation) is saved in output_dir, and the run's report is appended to output_dir/results.jsonl.

    Nothing is written until training starts; from then on the run replaces any earlier run in output_dir, except
    results.jsonl, which keeps a row for every run."""
    output_dir = Path(output_dir)
    task.prepare(model)  # refuses a task the model cannot do, before anything is written
    if not method.trains and not validation_examples:
        raise UserError(f"--data.validation: {method.name} trains nothing and is scored on validation data; give it")
    o = method.training_options(model, o)
    set_seed(o.seed)
    run = Run(model, method, task, train_examples, validation_examples, o, output_dir, progress)
    with run_folder.hold(output_dir, model.name, run.accelerator.is_main_process):
        if run.accelerator.is_main_process:
            run_output.clear_killed_writes(output_dir)
        if not method.trains:  # prompt design: one evaluation, and the design is saved
            if run.accelerator.is_main_process:
                run_folder.clear_previous_run(output_dir)
            run.result.metrics = run.score(0)
            run.save(run.result.metrics, 0)
            return run.finish()
        training = Training(run, train_examples)
        training.steps()
        return training.end()


class Training:
    """A run's training steps: the data, optimiser and schedule, the best result so far, and the checkpoints from
    which a killed run continues exactly."""

    def __init__(self, run: Run, train_examples: list[Example]):
        self.run = run
        self.identity = self._identity(train_examples)
        resumed, state, self.rng = self._checkpoint_to_resume()
        self._prepare(train_examples)
        self.best, self.stale = -math.inf, 0
        self.saved_best = False  # an evaluated result has been saved
        self.best_state = None  # the trained parameters at the best evaluation, kept when training went on after it
        self.running = 0.0  # smoothed training loss for the progress bar
        self.start = 0  # the last step done before this process began
        if state:
            self._restore(state, resumed)
        elif run.accelerator.is_main_process:
            run_folder.clear_previous_run(run.output_dir)
        run.accelerator.init_trackers("tensorboard")
        self.bar = tqdm(
            total=run.max_steps,
            initial=min(self.start, run.max_steps),
            desc="training",
            disable=not run.progress or not run.accelerator.is_main_process,
            dynamic_ncols=True,
        )
        self.save_every = run.o.eval_every if run.o.save_every is None else run.o.save_every
        self.done = self.start  # the last step whose update is complete

    def _identity(self, train_examples: list[Example]) -> dict:
        """The same run, wherever it is resumed: its model (and the dtype and readout scale it runs with), method,
        task, options and the rows it trains and is scored on (their digest: the data's paths may change, their
        contents may not), as plain values (as a checkpoint reads them back)."""
        run, model = self.run, self.run.model
        data = {k: v for k, v in asdict(run.task.options).items() if k not in ("train", "validation")}
        rows = {"train": examples_digest(train_examples), "validation": examples_digest(run.validation_examples)}
        identity = {
            "model": {**model.identity(), "dtype": model.weights_dtype, "readout_scale": model.readout_scale},
            "method": run.method.metadata(),
            "task": run.task.describe(),
            "prompt": asdict(run.method.prompt_options),
            "data": data,
            "rows": rows,
        }
        return json.loads(json.dumps(identity, default=str))

    def _checkpoint_to_resume(self) -> tuple[Path | None, checkpoint.TrainingState | None, dict | None]:
        """With train.resume, the newest checkpoint, checked to be of this same run: its folder, state and random
        generators."""
        run, o, accelerator = self.run, self.run.o, self.run.accelerator
        resumed = checkpoint.latest(run.output_dir) if o.resume else None
        if resumed:
            state, rng = checkpoint.load(resumed, accelerator.process_index, accelerator.num_processes)
            checkpoint.check_same_run(state, self.identity, asdict(o), resumed)
            if state.step > run.max_steps:
                raise UserError(
                    f"--train.max_steps {run.max_steps}: {resumed} is at step {state.step} already; resume with at least {state.step} steps"
                )
            return resumed, state, rng
        if o.resume:
            run.say(f"--train.resume: no checkpoint in {run.output_dir / checkpoint.CHECKPOINTS}; starting a new run")
        return None, None, None

    def _prepare(self, train_examples: list[Example]) -> None:
        """The data loader, optimiser and schedule, prepared by accelerate with the model."""
        run, o = self.run, self.run.o
        self.generator = (
            torch.Generator()
        )  # reseeded every epoch (_batches), so that a data position is restored exactly
        self.loader = DataLoader(
            train_examples,
            batch_size=run.micro_batch,
            shuffle=True,
            drop_last=len(train_examples) >= o.micro_batch_size,
            collate_fn=lambda rows: {
                **run.task.batch(run.model, rows),
                "prompt_ids": torch.zeros(len(rows), dtype=torch.long),
            },
            generator=self.generator,
        )
        optimizer = make_optimizer(run.method.param_groups(run.model, run.params, o), o)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
        )
        self.wrapped, self.optimizer, self.loader = prepare(run.accelerator, run.model, optimizer, self.loader)
        run.params = run.method.parameters(run.model)
        same_on_every_process(run.unsynced)

    def _restore(self, state: checkpoint.TrainingState, resumed: Path) -> None:
        """Continue from a checkpoint: trained parameters, optimiser, schedule, best so far and the log up to it."""
        run, result = self.run, self.run.result
        self.start, self.running = state.step, state.running
        shapes = [tuple(t.shape) for t in state.trained]
        if shapes != [tuple(p.shape) for p in run.params]:
            raise UserError(
                f"--train.resume: {resumed} holds trained tensors of shapes {shapes}, not those this run trains"
            )
        with torch.no_grad():
            for p, saved in zip(run.params, state.trained):
                p.copy_(saved)
        self.optimizer.load_state_dict(state.optimizer)
        self.schedule.load_state_dict(state.scheduler)
        if run.scaler:
            run.scaler.load_state_dict(state.scaler)
        self.best, self.stale, self.saved_best, self.best_state = (
            state.best,
            state.stale,
            state.saved_best,
            state.best_state,
        )
        if self.best_state is None and state.best_step == self.start < run.max_steps:  # the best was the last step
            self.best_state = [t.clone() for t in state.trained]
        result.metrics, result.best_step = state.metrics, state.best_step
        result.history, result.stopped_early = state.history, state.stopped_early
        if run.accelerator.is_main_process:
            run_output.keep_log_until(run.log_path, self.start)  # steps logged after the checkpoint run again
        run.say(f"resuming from {resumed} (step {self.start})")

    def save_checkpoint(self, step: int) -> Path:
        """All that continuing after `step` needs, written as a checkpoint by all processes together."""
        consumed = step * self.run.accum  # micro-batches each process has drawn
        run, result, scaler = self.run, self.run.result, self.run.scaler
        training_state = checkpoint.TrainingState(
            step=step,
            epoch=consumed // len(self.loader),
            batch=consumed % len(self.loader),
            running=self.running,
            trained=[p.detach().to("cpu", copy=True) for p in run.params],
            optimizer=self.optimizer.state_dict(),
            scheduler=self.schedule.state_dict(),
            scaler=scaler.state_dict() if scaler else None,
            best=self.best,
            stale=self.stale,
            saved_best=self.saved_best,
            best_state=self.best_state,
            metrics=result.metrics,
            best_step=result.best_step,
            history=result.history,
            stopped_early=result.stopped_early,
            identity=self.identity,
            options=asdict(run.o),
            processes=run.accelerator.num_processes,
        )
        return checkpoint.save(run.output_dir, step, training_state, run.accelerator, run.o.keep_checkpoints)

    def steps(self) -> None:
        """The steps after the last one done, up to max_steps or until early stopping, a signal or a failure."""
        run = self.run
        if self.rng is not None:
            checkpoint.set_rng_state(self.rng)  # last, so that nothing above draws from the restored generators
        self.batches = _batches(self.loader, self.generator, run.o.seed, self.start * run.accum, run.accelerator)
        training_mode(self.wrapped, run.o)
        try:
            with checkpoint.StopSignals() as signals:
                for step in range(self.start + 1, run.max_steps + 1):
                    if run.result.stopped_early:  # resumed from the checkpoint of a run that had stopped early
                        break
                    if self._step(step, signals):
                        break
        except NonFinite as e:
            raise self._non_finite(e) from None
        except KeyboardInterrupt:
            self._interrupted()
            raise
        finally:
            self.bar.close()
            run.accelerator.end_training()

    def _step(self, step: int, signals: checkpoint.StopSignals) -> bool:
        """One step: update, log, evaluate and checkpoint when due; True when training stops early."""
        run, o, result = self.run, self.run.o, self.run.result
        step_loss = backward_accumulated(
            self.wrapped,
            [next(self.batches) for _ in range(run.accum)],
            run.accelerator,
            run.autocast,
            step,
            run.params,
            run.scaler,
            run.unsynced,
        )
        self._update(step)
        self.done = step
        self.running = step_loss if step == 1 else 0.9 * self.running + 0.1 * step_loss
        self.bar.update(1)
        self.bar.set_postfix(
            {"loss": f"{self.running:.4f}", **({"best": f"{self.best:.1f}"} if self.best > -math.inf else {})}
        )
        if step % o.log_every == 0 or step == run.max_steps:
            record = {"step": step, "train/loss": step_loss, "train/lr": self.schedule.get_last_lr()[0]}
            run.log(record)
            run.accelerator.log(record, step=step)
        if run.validation_examples and (step % o.eval_every == 0 or step == run.max_steps) and self.evaluate(step):
            result.stopped_early = True
            run.say(
                f"early stopping at step {step}: {run.task.metric} has not improved for {o.patience} evaluations (best {self.best:.2f} at step {result.best_step})"
            )
        stopping = signals.requested(run.accelerator)
        if (
            stopping
            or result.stopped_early
            or step == run.max_steps
            or (self.save_every and step % self.save_every == 0)
        ):
            saved = self.save_checkpoint(step)
        if stopping:
            run.say(f"stopped by a signal after step {step}: checkpoint {saved}; continue with --train.resume=true")
            raise KeyboardInterrupt
        return result.stopped_early

    def _update(self, step: int) -> None:
        """The optimiser's step on the accumulated gradient, clipped and unscaled as the options say."""
        run, optimizer, scaler = self.run, self.optimizer, self.run.scaler
        if scaler:
            scaler.unscale_(optimizer)
        if run.o.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(
                run.params, run.o.max_grad_norm
            )  # whole on every process, gradients averaged
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer_step(optimizer, step)
        check_finite(run.params, step)
        self.schedule.step()
        optimizer.zero_grad(set_to_none=True)

    def evaluate(self, step: int) -> bool:
        """Evaluate, keep the result if it is the best so far; True when patience has run out."""
        run, result, metric = self.run, self.run.result, self.run.task.metric
        scores = run.score(step)
        training_mode(self.wrapped, run.o)  # evaluation leaves every layer in train mode, dropout included
        run.accelerator.log(result.history[-1], step=step)
        if scores[metric] > self.best:
            self.best, self.stale = scores[metric], 0
            result.metrics, result.best_step = scores, step
            self.best_state = [p.detach().to("cpu", copy=True) for p in run.params] if step < run.max_steps else None
            self.saved_best = True
            run.save(scores, step)
        else:
            self.stale += 1
        self.bar.set_postfix(
            {"loss": f"{self.running:.4f}", metric: f"{scores[metric]:.1f}", "best": f"{self.best:.1f}"}
        )
        return run.o.patience is not None and self.stale >= run.o.patience

    def _non_finite(self, e: NonFinite) -> NonFinite:
        """The error, naming what was kept: the latest checkpoint and the best result saved."""
        latest = checkpoint.latest(self.run.output_dir)
        kept = [f"{latest} (continue from it with a lower --train.lr and --train.resume=true)"] if latest else []
        kept += [f"{self.run.result.prompt_path} (step {self.run.result.best_step})"] if self.saved_best else []
        return NonFinite(f"{e}; nothing was saved after it" + (f", kept: {' and '.join(kept)}" if kept else ""))

    def _interrupted(self) -> None:
        """Keep the result as it stands unless an evaluated one was saved, and say which is kept."""
        run, result = self.run, self.run.result
        self.bar.close()
        path = result.prompt_path
        if not self.saved_best:
            run.save({}, self.done, interrupted=True)
            run.say(
                f"interrupted after step {self.done}: saved the {run.method.result} as it stood (not evaluated) to {path}"
            )
        else:
            run.say(
                f"interrupted after step {self.done}: {path} holds the best {run.method.result} so far ({run.task.metric} {self.best:.2f} at step {result.best_step})"
            )

    def end(self) -> TrainResult:
        """The model leaves training in eval mode holding the result that was saved; the run's report."""
        run, result = self.run, self.run.result
        result.steps = self.done
        run.model.eval()
        if self.best_state is not None and result.best_step != self.done:
            with torch.no_grad():
                for p, kept in zip(run.params, self.best_state):
                    p.copy_(kept)
        if not run.validation_examples and self.done > self.start:
            run.save({}, self.done)
            result.best_step = self.done
        if self.done == self.start:
            run.say(
                f"--train.resume: the run had already ended at step {self.done}; nothing was trained, and results.jsonl is unchanged"
            )
        return run.finish(append=self.done > self.start)


def examples_digest(examples: list[Example] | None) -> str | None:
    """sha256 of the examples as loaded (fields, targets, labels, in order): the data a run trains or is scored on."""
    if examples is None:
        return None
    text = json.dumps([asdict(e) for e in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _batches(loader, generator: torch.Generator, seed: int, position: int, accelerator: Accelerator):
    """Micro-batches without end, from micro-batch `position` on: epoch e is shuffled by seed + e, so a position
    (epoch, batch) is restored exactly, skipping the batches already drawn without loading them."""
    epoch, skip = divmod(position, len(loader))
    while True:
        generator.manual_seed(seed + epoch)
        yield from accelerator.skip_first_batches(loader, skip) if skip else loader
        epoch, skip = epoch + 1, 0
