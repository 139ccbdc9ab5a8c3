"""The Python blocks of README.md and docs/*.md run, against a tiny random BERT in place of the MiniLM they name and a
small CSV in place of the reader's `train.csv` and `dev.csv`, with their step budgets cut to 2. A block that needs a
running server (the HTTP client) is skipped, as is one that uses `softprompt.tune` or `softprompt.load` while the
installed package has no such function yet."""

import re
from pathlib import Path

import pytest
from conftest import save_model, tiny_bert

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
ROWS = ["review,sentiment", "a good film,pos", "a bad film,neg", "good and fun,pos", "bad and dull,neg"]


def python_blocks() -> list:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for n, m in enumerate(re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M), 1):
            out.append(pytest.param(m[1], id=f"{page.relative_to(REPO).as_posix()}-{n}"))
    return out


def skip_reason(code: str) -> str | None:
    if "Client(" in code:
        return "the HTTP client needs a running server (tests/serve covers it)"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("code", python_blocks())
def test_each_python_block_runs_on_a_tiny_model(code, tmp_path, monkeypatch):
    reason = skip_reason(code)
    if reason:
        pytest.skip(reason)
    folder = save_model(tiny_bert(), tmp_path / "tiny-bert")
    for name in ("train.csv", "dev.csv"):
        (tmp_path / name).write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = code.replace(MINILM, folder)
    code = re.sub(r'"max_steps": \d+', '"max_steps": 2', code)
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})


def test_the_pages_hold_python_blocks():
    assert len(python_blocks()) >= 4
