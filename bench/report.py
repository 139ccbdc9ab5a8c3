"""BENCHMARKS.md, written a section at a time: each benchmark replaces its own `## ` section and keeps the others."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    """Replace the section `text` heads (its first line, `## Name`) in `path`, or add it at the end."""
    heading = text.splitlines()[0]
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    parts = [p.rstrip("\n") for p in re.split(r"(?m)^(?=## )", old)]
    mine = [i for i, p in enumerate(parts) if p.split("\n", 1)[0].strip() == heading]
    if mine:
        parts[mine[0]] = text.rstrip("\n")
    else:
        parts.append(text.rstrip("\n"))
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
