"""Benchmark sections: printed by default, and written into docs/benchmarks.md or docs/reliability.md only when asked
(`--write`): each benchmark replaces its own `## ` section there and keeps the others."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
RELIABILITY = ROOT / "docs" / "reliability.md"


def add_write_option(parser, path: Path) -> None:
    """`--write`: record the section in `path` (relative to the repository); without it the section is only printed."""
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"also write the section into {path.relative_to(ROOT)} (replacing its earlier run); "
        "without it, the section is only printed",
    )


def publish(text: str, path: Path, write: bool, header: str | None = None) -> None:
    """Print a section; with `write`, also record it in `path` (created with `header` when missing)."""
    print(text, flush=True)
    if write:
        if header is not None and not path.exists():
            path.write_text(header, encoding="utf-8")
        write_section(text, path)
        print(f"written: {path}", flush=True)


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
