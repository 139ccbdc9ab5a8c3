"""The commands that use trained prompts: predict, ensemble and serve."""

import json
import re
import sys
from pathlib import Path

from softprompt import checks
from softprompt.errors import UserError
from softprompt.options import DataOptions, ModelOptions, ServeOptions
from softprompt.training import option_checks


def predict(
    prompt: str,
    texts: list[str],
    file: str | None = None,
    batch_size: int = 64,
    json_output: bool = False,
    model: ModelOptions | None = None,
    allow_other_model: bool = False,
    device: str = "auto",
) -> list[str]:
    """Predict with a prompt file for texts given as arguments, in a file or on standard input.

    One line out per text in: a line break inside a generated answer is written as \\n; --json gives the exact
    text."""
    checks.check_predict(batch_size)
    model = model or ModelOptions()
    checks.check_model(model)
    checks.check_device(device)
    if not texts:
        texts = [t for t in _input_text(file).splitlines() if t.strip()]
    if not texts:
        raise UserError("no texts to predict: give them as arguments, with --file, or on standard input")
    from softprompt.files.prompt_file import load_prompt
    from softprompt.inference.loading import load_with_prompts, recorded_task

    task = recorded_task(load_prompt(prompt), prompt)  # before the model loads
    frozen, _ = load_with_prompts([prompt], model, allow_other_model, device)
    task.prepare(frozen)
    out = task.predict_all(frozen, task.fields_from_texts(texts), batch_size, progress=False)
    for text, prediction in zip(texts, out, strict=True):
        print(json.dumps({"text": text, "prediction": prediction}) if json_output else one_line(prediction))
    return out


LINE_BREAKS = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines splits at


def one_line(prediction: str) -> str:
    """A prediction on one line: each of its line breaks written as \\n."""
    return LINE_BREAKS.sub(r"\\n", prediction)


def _input_text(file: str | None) -> str:
    """The text of --file, or of standard input without it; refuses anything that is not UTF-8 text."""
    if file and Path(file).is_dir():
        raise UserError(f"{file}: is a folder; give a text file")
    if file and not Path(file).exists():  # a pipe (--file <(...)) exists without being a regular file
        raise UserError(f"{file}: no such file")
    if not file and sys.stdin is None:
        raise UserError("no texts to predict: standard input is closed; give them as arguments or with --file")
    try:
        text = Path(file).read_text(encoding="utf-8") if file else sys.stdin.read()
    except UnicodeDecodeError:
        text = None
    except OSError as e:
        raise UserError(f"{file or 'standard input'}: cannot read it ({e.strerror})") from None
    if text is None or "\0" in text:  # undecodable, or binary
        raise UserError(f"{file or 'standard input'}: not a UTF-8 text file")
    return text


def ensemble(
    prompts: list[str],
    model: ModelOptions,
    data: DataOptions,
    batch_size: int = 64,
    json_output: bool = False,
    allow_other_model: bool = False,
    device: str = "auto",
) -> dict:
    """Score prompts of one task alone and as an ensemble, run together in one batched pass (paper section 7)."""
    option_checks.check_data(data)
    option_checks.check_data_files(data)
    checks.check_predict(batch_size)
    checks.check_model(model)
    checks.check_device(device)
    if len(prompts) < 2:
        raise UserError("--prompts: an ensemble needs at least two prompt files")
    if not (data.validation or data.train):
        raise UserError("--data.validation: give the data to evaluate on")
    from softprompt.inference.ensemble import evaluate_ensemble
    from softprompt.inference.loading import load_with_prompts, same_task, task_options
    from softprompt.tasks import make_task

    frozen, files = load_with_prompts(prompts, model, allow_other_model, device)
    same_task(prompts, files)
    data = task_options(files[0], data)
    task = make_task(data)
    examples = task.load(data.validation or data.train, data.limit_validation)
    task.prepare(frozen)
    report = evaluate_ensemble(frozen, task, examples, batch_size, progress=not json_output)
    print(json.dumps(report.as_dict(), indent=2) if json_output else report.table())
    return report.as_dict()


def serve(
    prompts: str, model: str | None = None, allow_other_model: bool = False, no_kv_reuse: bool = False, **options
) -> None:
    """Serve every prompt of a folder over HTTP from one frozen model: rows of all tasks run in shared batches."""
    from softprompt.serve.server import run

    run(prompts, model, ServeOptions(**options, kv_reuse=not no_kv_reuse), allow_other_model)
