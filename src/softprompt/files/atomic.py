"""Writing files so that nothing half-written is ever left behind: a temporary file or folder, then a rename.

A write that fails (a full disk, a read-only folder) removes its temporary, leaves the previous file or folder as it
was and raises a one-line UserError naming the path. A killed process can leave only hidden temporaries (names
starting with '.' and ending in TEMP_SUFFIXES), which `clear_temporaries` removes."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from softprompt.errors import UserError, first_line

TEMP_SUFFIXES = (".tmp", ".old", ".build")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; it is flushed to disk and renamed onto `path` only if the block succeeds."""
    path = Path(path)
    existed = path.exists()
    with _write_error(path, existed):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    try:
        with _write_error(path, existed):
            yield Path(tmp)
            _fsync(tmp)
            new_file_modes(tmp)  # mkstemp's 0600 -> the mode of any newly created file
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, suffix: str = ".tmp", fixed: bool = False):
    """Yield an empty temporary folder beside `path`; it takes `path`'s place (replacing any earlier folder) only if
    the block succeeds, and is removed otherwise.

    fixed: the temporary folder is `.NAME{suffix}`, a name other processes can find (and any leftover of a killed
    write is cleared first); else a fresh unique name."""
    path = Path(path)
    existed = path.exists()
    with _write_error(path, existed):
        path.parent.mkdir(parents=True, exist_ok=True)
        if fixed:
            tmp = path.with_name(f".{path.name}{suffix}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        else:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    retired = False  # the earlier folder is set aside as `old` (a folder cannot be renamed onto another)
    try:
        with _write_error(path, existed):
            yield tmp
            new_file_modes(tmp)  # mkdtemp's 0700 (and some writers' 0600) -> the modes of new files
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                os.replace(path, old)
                retired = True
            os.replace(tmp, path)
            retired = False
    finally:
        if retired:
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _write_error(path: Path, existed: bool):
    """An OSError raised while writing `path` becomes a one-line UserError naming it."""
    try:
        yield
    except OSError as e:
        kept = "the previous one is unchanged" if existed else "nothing was written"
        raise UserError(f"{path}: cannot write it ({e.strerror or first_line(e)}); {kept}") from e


def _fsync(path: str | os.PathLike) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def new_file_modes(path: str | os.PathLike) -> None:
    """Give a file, or a folder and everything in it, the modes newly created ones have (0666 for files and 0777
    for folders, less the umask) in place of the 0600/0700 that mkstemp and mkdtemp use."""
    path = Path(path)
    mask = os.umask(0)  # reading the umask means setting it
    os.umask(mask)
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def append_line(path: str | os.PathLike, line: str) -> None:
    """Add one line to a text file (a JSON-lines log) by rewriting it atomically: a kill or a failed write leaves the
    file as it was before, never a line cut short."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text and not text.endswith("\n"):  # a line cut short by a writer that appended in place
        text = text[: text.rfind("\n") + 1]
    write_text_atomic(path, text + line.rstrip("\n") + "\n")


def clear_temporaries(folder: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Remove the hidden temporaries that killed writes left directly in `folder`: those of the files and folders
    `names`, or of any; returns what was removed."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if is_temporary(p.name, names)] if folder.is_dir() else []
    for p in found:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return found


def is_temporary(name: str, names: list[str] | None) -> bool:
    """Whether `name` is a hidden temporary of a write (of one of `names`, or of any)."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIXES)):
        return False
    return names is None or any(name.startswith(f".{n}.") for n in names)


def human_size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")
