"""The commands that look inside: info, models, tasks, neighbors and similar."""

import json
from pathlib import Path

from softprompt import checks
from softprompt.errors import UserError
from softprompt.files.atomic import human_size
from softprompt.options import ModelOptions


def info(prompt: str, json_output: bool = False) -> dict:
    """Show a prompt file's metadata."""
    from softprompt.files.prompt_file import load_prompt

    file = load_prompt(prompt)
    size = Path(prompt).stat().st_size
    if json_output:
        print(
            json.dumps(
                {**file.metadata, "length": file.length, "hidden": file.hidden, "size": size}, indent=2, sort_keys=True
            )
        )
    else:
        offset = f" and {file.offset.shape[0]} x {file.hidden} input offset (DePT)" if file.offset is not None else ""
        print(f"{prompt}: {file.length} x {file.hidden} prompt{offset}, {human_size(size)}")
        print(json.dumps(file.metadata, indent=2, sort_keys=True))
    return file.metadata


def models(json_output: bool = False) -> list[dict]:
    """List the embedded models (no model hub needed): source, pinned sha256 hashes, licence and cache state."""
    from softprompt.models import embedded

    root = embedded.cache_root()
    rows = [embedded.describe(model, root) for model in embedded.MODELS.values()]
    print(json.dumps(rows, indent=2) if json_output else embedded.listing(rows, root))


def tasks() -> list[dict]:
    """List the tasks that --data.task names: the data each reads, its input template, targets and metric."""
    from softprompt.tasks import TASKS

    rows = [t.summary() for t in TASKS.values()]
    width = max(len(r["task"]) for r in rows) + 2
    for r in rows:
        print(f"{r['task']:<{width}}{r['data']}; metric: {r['metric']}")
        print(f"{'':<{width}}{r['template']}  ->  {r['targets']}")
    return rows


def neighbors(
    prompt: str,
    k: int = 5,
    json_output: bool = False,
    model: ModelOptions | None = None,
    allow_other_model: bool = False,
    device: str = "auto",
) -> dict:
    """List each prompt position's nearest vocabulary tokens (cosine similarity) and the label words among them."""
    if k < 1:
        raise UserError(f"-k must be at least 1 (got {k})")
    model = model or ModelOptions()
    checks.check_model(model)
    checks.check_device(device)
    from softprompt.inference.interpret import label_hits, nearest_tokens, report, table
    from softprompt.inference.loading import load_with_prompts

    frozen, files = load_with_prompts([prompt], model, allow_other_model, device)
    nearest = nearest_tokens(frozen, files[0].prompt, k)
    words = list(dict.fromkeys(files[0].metadata.get("task", {}).get("verbalizers", {}).values()))
    hits = label_hits(frozen, nearest, words) if words else None
    result = {"prompt": prompt, "model": frozen.name, **report(nearest, hits)}
    if json_output:
        print(json.dumps(result, indent=2))
    else:
        print(f"{prompt}: {files[0].length} positions, nearest of {frozen.name}'s {len(frozen.tokenizer):,} tokens")
        print(table(nearest, hits))
    return result


def similar(prompt: str, bank: str, k: int = 10, json_output: bool = False) -> dict:
    """Rank the prompt files under a folder by how similar they are to a prompt (SPoT's retrieval of a source).

    Similarity is the cosine of the prompts' mean vectors; the best one can initialise training with
    --prompt.init FILE."""
    if k < 1:
        raise UserError(f"-k must be at least 1 (got {k})")
    from softprompt.files.prompt_file import load_prompt
    from softprompt.inference.similar import rank, table

    target = load_prompt(prompt)
    ranking = rank(target, prompt, bank, k)
    result = {"prompt": prompt, "bank": bank, "hidden": target.hidden, **ranking.as_dict()}
    if json_output:
        print(json.dumps(result, indent=2))
    else:
        shown = (
            f"the {len(ranking.matches)} most similar"
            if len(ranking.matches) < ranking.compared
            else f"all {ranking.compared}"
        )
        print(
            f"{prompt}: {shown} of {ranking.compared} prompts under {bank}, by cosine similarity of mean prompt vectors"
        )
        print(table(ranking))
    return result
