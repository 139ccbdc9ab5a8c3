"""Which trained prompts are most like a given one: SPoT's retrieval (Vu et al. 2022). Each prompt is averaged over
its positions into one (H,) vector, and prompts are ranked by the cosine similarity of those vectors, the best
candidate first: a source task whose prompt can initialise the target's (`--prompt.init SOURCE.safetensors`).

Only prompts of the target's model compare: a file of another width, of other input embeddings (by the recorded
fingerprint), or not a prompt file at all is skipped with the reason.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from softprompt.errors import UserError
from softprompt.files.prompt_file import PromptFile, fingerprint_difference, load_prompt


@dataclass
class Match:
    path: str
    similarity: float
    length: int
    base_model: str | None


@dataclass
class Ranking:
    matches: list[Match]  # most similar first
    skipped: list[tuple[str, str]]  # (path, why)
    compared: int  # prompts compared, before keeping the k best

    def as_dict(self) -> dict:
        return {
            "compared": self.compared,
            "ranked": [vars(m) for m in self.matches],
            "skipped": [{"path": path, "reason": why} for path, why in self.skipped],
        }


def pooled(prompt: torch.Tensor) -> torch.Tensor:
    """(P, H) -> (H,): the mean prompt vector, in float64 so that a copy compares at 1 to the last digit shown."""
    return prompt.double().mean(dim=0)


def prompt_files(folder: str | Path) -> list[Path]:
    """Every .safetensors file under `folder`, in sorted order."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--bank: {folder} is not a folder")
    return sorted(p for p in root.rglob("*.safetensors") if p.is_file())


def why_not(candidate: PromptFile, target: PromptFile) -> str | None:
    """Why `candidate` cannot be compared with `target`; None when it can."""
    if candidate.hidden != target.hidden:
        return f"width {candidate.hidden}, not {target.hidden}"
    ours, theirs = candidate.metadata.get("embedding_fingerprint"), target.metadata.get("embedding_fingerprint")
    difference = fingerprint_difference(ours, theirs) if ours and theirs else None
    return f"trained on other input embeddings ({difference})" if difference else None


def rank(target: PromptFile, target_path: str | Path, folder: str | Path, k: int | None = None) -> Ranking:
    """The prompt files under `folder`, but `target_path` itself, ranked by the cosine similarity of their mean
    vectors to `target`'s; the `k` best (all when None)."""
    paths = [p for p in prompt_files(folder) if p.resolve() != Path(target_path).resolve()]
    if not paths:
        raise UserError(f"--bank: no prompt files (.safetensors) under {folder}")
    query = pooled(target.prompt)  # (H,)
    matches, skipped = [], []
    for path in paths:
        try:
            candidate = load_prompt(path)
        except UserError as e:
            skipped.append((str(path), str(e).removeprefix(f"{path}: ")))
            continue
        reason = why_not(candidate, target)
        if reason:
            skipped.append((str(path), reason))
            continue
        similarity = F.cosine_similarity(pooled(candidate.prompt), query, dim=0).item()
        matches.append(Match(str(path), similarity, candidate.length, candidate.metadata.get("base_model")))
    if not matches:
        raise UserError(
            f"--bank: none of the {len(paths)} files under {folder} is a prompt of {target_path}'s model ({skipped[0][0]}: {skipped[0][1]})"
        )
    matches.sort(key=lambda m: -m.similarity)
    return Ranking(matches[:k] if k else matches, skipped, len(matches))


def table(ranking: Ranking) -> str:
    """The ranking as text: rank, similarity, length and file."""
    lines = [f"{'rank':>4}  {'cosine':>7}  {'length':>6}  file"]
    lines += [f"{i:>4}  {m.similarity:>7.4f}  {m.length:>6}  {m.path}" for i, m in enumerate(ranking.matches, 1)]
    lines += [f"skipped {path}: {why}" for path, why in ranking.skipped]
    return "\n".join(lines)
