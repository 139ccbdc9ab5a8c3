"""Every documented command runs on a fresh clone as printed. Each `softprompt ...` command in the shell blocks of
README.md and docs/*.md is parsed by the command's own parser (softprompt.cli.parser.build_parser), never run, so a
misspelled or unknown option fails here; and every file it reads must be accounted for, as a user's clone has it.

Shell blocks are those marked bash, sh, shell or console, or not marked at all; `text`, `python`, `yaml` and the other
blocks are output or code, not commands. Within a shell block a line continued with `\\` is joined to the next, and
only lines that start with `softprompt ` (or `$ softprompt `) are commands; lines starting with `#` are comments or
printed output.

A file a command reads (`--data.train`, `--data.validation`, `--config`, a prompt file, `--prompt.init FILE`,
`--prompts`, `--bank`, `--file`, a sweep file, a transfer target) must be one of:

- shipped: it exists in the repository (paths are relative to its root, where the docs' commands run);
- created earlier on the same page: by a heredoc (`cat > FILE <<'END'`), `cp SOURCE FILE`, `mkdir -p FOLDER`,
  `curl -LO URL` (the URL's last part), a `python -c` line that names a quoted file it saves, or an earlier command's
  output (`softprompt train`'s `train.output_dir`, from the command line or its recipe, holds `prompt.safetensors`;
  `softprompt quickstart` writes `runs/quickstart/prompt.safetensors`; `import` and `export` write their `--output`);
- under `$SOFTPROMPT_DATA`, the public data sets (docs/data.md): when that folder is present (the variable, else
  `../shared/data` beside the checkout) the file must exist in it;
- a hub data set (`glue:sst2@train`: whatever the readers do not take for a local path);
- or marked as the user's own: the command's line ends with the comment `# your file`.

And no `softprompt train` command inherits the 30,000-step default: it gives `--train.max_steps` or `--train.epochs`,
or its recipe sets one, or it trains nothing (`--method prompt-design`).
"""

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from softprompt.cli.parser import build_parser
from softprompt.data.readers import is_local

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DATA = Path(os.environ.get("SOFTPROMPT_DATA") or REPO.parent / "shared" / "data")
SHELL = {"", "bash", "sh", "shell", "console"}
USERS = "# your file"
INITIALISERS = {"random", "vocab", "labels", "text"}
FILE_KEYS = ("prompt", "prompt_file", "source", "prompts", "bank", "file", "data.train", "data.validation")


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a page, in order: (language, body)."""
    return [(m[1].strip().lower(), m[2]) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M)]


def shell_lines(body: str) -> list[str]:
    """A shell block's logical lines: continuations joined; heredoc bodies kept as they are."""
    return body.replace("\\\n", " ").splitlines()


def words(line: str) -> list[str]:
    """A shell line's words up to its first control operator (`&`, `;`, `&&`, `|`) or comment."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    out = []
    for word in lexer:
        if word and set(word) <= set(";&|"):
            break
        out.append(word)
    return out


class Page:
    """Walks one page's shell blocks in order, recording what each line creates and checking what it reads."""

    def __init__(self, path: Path, scratch: Path):
        self.name = path.relative_to(REPO).as_posix()
        self.scratch = scratch  # where heredoc files are written, so that a recipe made on the page can be parsed
        self.created: set[str] = set()
        self.commands: list[str] = []
        self.problems: list[str] = []

    def walk(self, text: str) -> None:
        for language, body in blocks(text):
            if language in SHELL:
                self.block(shell_lines(body))

    def block(self, lines: list[str]) -> None:
        rest = iter(lines)
        for line in rest:
            line = line.strip().removeprefix("$ ")
            heredoc = re.match(r"cat\s*>\s*(\S+)\s*<<-?\s*'?(\w+)'?", line)
            if heredoc:
                body = []
                for inner in rest:
                    if inner.strip() == heredoc[2]:
                        break
                    body.append(inner)
                self.create(heredoc[1], "\n".join(body) + "\n")
            elif line.startswith("softprompt "):
                self.commands.append(line)
                self.command(line)
            else:
                self.other(line)

    def create(self, path: str, text: str | None = None) -> None:
        path = os.path.normpath(path)
        self.created.add(path)
        if text is not None:
            (self.scratch / path).parent.mkdir(parents=True, exist_ok=True)
            (self.scratch / path).write_text(text, encoding="utf-8")

    def other(self, line: str) -> None:
        """Shell lines that make files: mkdir -p, cp, curl -O, python -c saving a named file."""
        try:
            said = words(line) if line and not line.startswith("#") else []
        except ValueError:  # a quoted text that goes on over lines (a curl body): makes no file
            return
        if said[:2] == ["mkdir", "-p"]:
            for folder in said[2:]:
                self.create(folder)
        elif said[:1] == ["cp"] and len(said) == 3:
            source, target = said[1:]
            self.reads(source, line, "cp")
            self.create(os.path.join(target, os.path.basename(source)) if target.endswith("/") else target)
        elif said[:1] == ["curl"] and any(w in ("-O", "-LO") for w in said):
            self.create(said[-1].rsplit("/", 1)[-1])
        elif said[:2] == ["python", "-c"]:
            for name in re.findall(r"'([\w./-]+\.\w+)'", said[2]):
                self.create(name)

    def known(self, path: str) -> bool:
        path = os.path.normpath(path)
        return path in self.created or any(c.startswith(path + os.sep) for c in self.created)

    def reads(self, path: str, line: str, what: str, data: bool = False) -> None:
        if line.rstrip().endswith(USERS):
            return
        if re.match(r"\$\{?SOFTPROMPT_DATA\b", path):
            relative = re.sub(r"^\$\{?SOFTPROMPT_DATA\}?/", "", path)
            relative = re.sub(r"@(train|validation)$", "", relative)
            if DATA.is_dir() and not (DATA / relative).exists():
                self.problems.append(f"{self.name}: {what} {path}: no {relative} in the public data sets: {line}")
            return
        if data and not is_local(path):
            return  # a hub data set
        path = re.sub(r"@(train|validation)$", "", path)
        if not (REPO / path).exists() and not self.known(path):
            self.problems.append(
                f"{self.name}: {what} {path}: neither shipped nor made earlier on the page"
                f" (nor marked {USERS!r}): {line}"
            )

    def command(self, line: str) -> None:
        try:
            argv = words(line)[1:]
        except ValueError as e:
            self.problems.append(f"{self.name}: the command line cannot be split as the shell would ({e}): {line}")
            return
        given = list(argv)
        for i, token in enumerate(argv):  # a recipe made on this page is parsed from its scratch copy
            option, eq, value = token.partition("=") if token.startswith("--") else ("", "", token)
            if value and os.path.normpath(value) in self.created and (self.scratch / value).is_file():
                argv[i] = f"{option}{eq}{self.scratch / value}"
            elif token == "--config" and i + 1 < len(argv) and not (REPO / argv[i + 1]).exists():
                self.reads(argv[i + 1], line, "--config")
        parser = build_parser()
        try:
            cfg = parser.parse_args(argv)
            parser.instantiate(cfg)
        except SystemExit as e:
            if "--help" not in argv or e.code != 0:
                self.problems.append(f"{self.name}: the command line is refused: {line}")
            return
        except Exception as e:  # the parser's error for an unknown option or a bad value
            self.problems.append(f"{self.name}: the command line is refused ({str(e).splitlines()[0]}): {line}")
            return
        name = cfg.command
        options = cfg[name]
        for key in FILE_KEYS:
            values = options.get(key)
            for value in values if isinstance(values, list) else [values]:
                if isinstance(value, str) and value:
                    self.reads(value, line, f"--{key}", data=key.startswith("data."))
        init = options.get("prompt.init")
        if isinstance(init, str) and init not in INITIALISERS:
            self.reads(init, line, "--prompt.init")
        for target in options.get("targets") or []:
            if isinstance(target, dict) and target.get("validation"):
                self.reads(target["validation"], line, "a transfer target", data=True)
        if name == "train":
            self.check_budget(given, options, line)
            output = options.get("train.output_dir")
            self.create(output)
            self.create(os.path.join(output, "prompt.safetensors"))
        elif name == "quickstart":
            output = options.get("output") or "runs/quickstart"
            self.create(output)
            self.create(os.path.join(output, "prompt.safetensors"))
        elif name in ("import", "export") and options.get("output"):
            self.create(options.get("output"))

    def check_budget(self, argv: list[str], options, line: str) -> None:
        if options.get("method.name") == "prompt-design":
            return
        if any(a.split("=")[0] in ("--train.max_steps", "--train.epochs") for a in argv):
            return
        recipes = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
        recipes += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
        for recipe in recipes:
            path = REPO / recipe if (REPO / recipe).exists() else self.scratch / recipe
            train = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("train") or {}
            if "max_steps" in train or "epochs" in train:
                return
        self.problems.append(f"{self.name}: a train command inherits the 30,000-step default: {line}")


def check(path: Path, scratch: Path) -> Page:
    page = Page(path, scratch)
    page.walk(path.read_text(encoding="utf-8"))
    return page


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_documented_command_parses_and_reads_only_files_a_clone_has(path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    page = check(path, tmp_path)
    assert not page.problems, "\n".join(page.problems)


def test_the_pages_hold_the_commands_this_test_is_meant_to_check(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    commands = {p.relative_to(REPO).as_posix(): check(p, tmp_path / p.stem).commands for p in PAGES}
    assert sum(map(len, commands.values())) >= 60, commands
    every = [line for lines in commands.values() for line in lines]
    for start in (
        "softprompt quickstart",
        "softprompt train",
        "softprompt eval",
        "softprompt serve",
        "softprompt sweep",
    ):
        assert any(line.startswith(start) for line in every), start


def test_a_misspelled_option_is_caught(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    page = Page(REPO / "README.md", tmp_path)
    page.block(["softprompt train --config configs/minilm-sst2.yaml --train.max_stpes=10"])
    assert len(page.problems) == 1 and "refused" in page.problems[0], page.problems


def test_a_file_nothing_makes_is_caught_unless_marked_as_the_users(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    page = Page(REPO / "README.md", tmp_path)
    page.block(["softprompt eval runs/nowhere/prompt.safetensors --data.validation=mine.csv"])
    assert len(page.problems) == 2 and all("neither shipped nor made" in p for p in page.problems), page.problems
    marked = Page(REPO / "README.md", tmp_path)
    marked.block(["softprompt eval runs/nowhere/prompt.safetensors --data.validation=mine.csv   # your file"])
    assert marked.problems == []
    made = Page(REPO / "README.md", tmp_path)
    made.block(["cat > mine.csv <<'CSV'", "text,label", "fine,1", "CSV", "softprompt eval --data.validation=mine.csv"])
    assert made.problems == []


def test_a_train_command_without_a_budget_is_caught(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    page = Page(REPO / "README.md", tmp_path)
    page.block(["softprompt train --data.train=src/softprompt/data/sentiment_train.jsonl"])
    assert len(page.problems) == 1 and "30,000-step default" in page.problems[0], page.problems


def test_the_readme_stays_a_front_page():
    """The manual lives in docs/; README.md is the front page a newcomer reads first."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250 and len(text.encode()) <= 15_000


def test_the_readmes_links_to_files_of_the_repository_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert links and [link for link in links if not (REPO / link).exists()] == []
