"""The package's shape, as docs/architecture.md describes it (the layers themselves are checked by lint-imports)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "softprompt"
MAX_PARAMETERS = 8  # more, and the options travel as an object (a dataclass of options, or the run)
MAX_TOP_LEVEL_MODULES = 8


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = function.args
    named = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    return len(named) - (1 if named and named[0].arg in ("self", "cls") else 0)


def test_no_function_takes_more_than_eight_parameters():
    crowded = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and parameters(node) > MAX_PARAMETERS:
                crowded.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({parameters(node)})")
    assert crowded == []


def test_the_package_top_level_holds_at_most_eight_modules():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
    assert {"__init__.py", "errors.py", "options.py"} <= set(modules)


MAX_LINES = 400  # a file longer than this holds two rooms: split it along its seam


def test_no_source_file_is_longer_than_four_hundred_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
