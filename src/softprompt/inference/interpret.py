"""Reading a prompt: the vocabulary tokens nearest to each prompt vector (the paper's section 7.1).

Nearness is cosine similarity to the rows of the model's input-embedding matrix. A label word (a verbalizer's
text) counts as found at a position when one of its tokens is among that position's nearest tokens, tokenised
alone or after a space (byte-level BPE spells "great" and " great" differently).
"""

import unicodedata
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from softprompt.errors import UserError

CHUNK_ROWS = 16384  # vocabulary rows compared at a time, so that no normalised copy of the whole matrix is made


@dataclass
class NearestTokens:
    ids: torch.Tensor  # (P, k) token ids, nearest first
    similarities: torch.Tensor  # (P, k) cosine similarities
    tokens: list[list[str]]  # P lists of k token strings, as the tokenizer spells them ("Ġgreat", "▁great", "##ing")
    texts: list[list[str]]  # the same tokens as the text each decodes to (" great", "great", "##ing"; see readable)


@dataclass
class LabelHits:
    per_position: list[list[str]]  # P lists: the label words found among that position's nearest tokens
    positions: dict[str, int]  # label word -> number of positions where it is found

    @property
    def positions_with_any(self) -> int:
        return sum(1 for found in self.per_position if found)

    @property
    def total(self) -> int:
        return sum(len(found) for found in self.per_position)


def cosine_to_vocabulary(prompt: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """(P, H) prompt, (V, H) embeddings -> (P, V) cosine similarities, in float32."""
    queries = F.normalize(prompt.detach().float(), dim=-1).to(embeddings.device)
    chunks = [queries @ F.normalize(rows.detach().float(), dim=-1).T for rows in embeddings.split(CHUNK_ROWS)]
    return torch.cat(chunks, dim=1).cpu()  # (P, V)


def nearest_tokens(model, prompt: torch.Tensor, k: int = 5) -> NearestTokens:
    """The `k` vocabulary tokens nearest to each of the (P, H) prompt's vectors, for a SoftPromptModel `model`.

    Only rows the tokenizer can name are candidates (some models pad their embedding matrix beyond the vocabulary)."""
    with model.embedding_matrix() as embeddings:
        return _nearest_tokens(model, prompt, embeddings, k)


def _nearest_tokens(model, prompt: torch.Tensor, embeddings: torch.Tensor, k: int) -> NearestTokens:
    rows = min(embeddings.shape[0], len(model.tokenizer))
    if prompt.dim() != 2 or prompt.shape[1] != embeddings.shape[1]:
        raise UserError(
            f"the prompt has shape {tuple(prompt.shape)}; the model's embeddings are {embeddings.shape[1]} wide"
        )
    if not 1 <= k <= rows:
        raise UserError(f"-k must be between 1 and the vocabulary size {rows} (got {k})")
    similarities, ids = cosine_to_vocabulary(prompt, embeddings[:rows]).topk(k, dim=1)  # (P, k) each
    tokens = [model.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
    texts = [readable(model.tokenizer, row, spelled) for row, spelled in zip(ids.tolist(), tokens)]
    return NearestTokens(ids, similarities, tokens, texts)


def readable(tokenizer, ids: list[int], tokens: list[str]) -> list[str]:
    """The text each token decodes to; its own spelling where that text is not whole (a byte-level token holding part
    of a UTF-8 character decodes to U+FFFD, which many tokens share)."""
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    return [token if "\ufffd" in text else text for text, token in zip(texts, tokens)]


def label_hits(model, nearest: NearestTokens, label_words: list[str]) -> LabelHits:
    """Which label words appear among each position's nearest tokens, and at how many positions each does."""
    label_ids = {word: set(model.token_ids(word)) | set(model.token_ids(" " + word)) for word in label_words}
    per_position = []
    for row in nearest.ids.tolist():
        found = set(row)
        per_position.append([word for word, ids in label_ids.items() if ids & found])
    positions = {word: sum(word in found for found in per_position) for word in label_words}
    return LabelHits(per_position, positions)


def report(nearest: NearestTokens, hits: LabelHits | None) -> dict:
    """Everything `softprompt neighbors --json` prints, as plain values."""
    positions = []
    for i, (ids, sims, tokens, texts) in enumerate(
        zip(nearest.ids.tolist(), nearest.similarities.tolist(), nearest.tokens, nearest.texts)
    ):
        row = {
            "position": i,
            "token_ids": ids,
            "tokens": tokens,
            "texts": texts,
            "similarities": [round(s, 6) for s in sims],
        }
        if hits is not None:
            row["label_words"] = hits.per_position[i]
        positions.append(row)
    out = {"k": nearest.ids.shape[1], "positions": positions}
    if hits is not None:
        out["label_words"] = {
            "positions": hits.positions,
            "positions_with_any": hits.positions_with_any,
            "total": hits.total,
        }
    return out


def table(nearest: NearestTokens, hits: LabelHits | None) -> str:
    """A compact text table: one line per prompt position (each token as the text it decodes to), then the label-word
    summary."""
    cells = [
        "  ".join(f"{_printable(text)} {sim:.2f}" for text, sim in zip(texts, sims))
        for texts, sims in zip(nearest.texts, nearest.similarities.tolist())
    ]
    width = max(map(_columns, cells))
    lines = [f"{'pos':>4}  {'nearest tokens (cosine)':<{width}}" + ("  label words" if hits else "")]
    for i, cell in enumerate(cells):
        found = f"  {', '.join(hits.per_position[i]) or '-'}" if hits else ""
        lines.append(f"{i:>4}  {cell}{' ' * (width - _columns(cell))}{found}".rstrip())
    if hits:
        P, k = nearest.ids.shape
        counts = ", ".join(f"{_printable(word)} at {n} of {P}" for word, n in hits.positions.items())
        lines.append(
            f"label words among the {k} nearest tokens: {counts} positions; {hits.positions_with_any} of {P} positions have one"
        )
    return "\n".join(lines)


def _columns(text: str) -> int:
    """Terminal columns `text` takes: wide (CJK) characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _printable(token: str) -> str:
    """A token as shown in the table: as it is, or quoted when it is empty, holds spaces or control characters."""
    return token if token and token.isprintable() and not any(c.isspace() for c in token) else repr(token)
