"""Writing files so that nothing half-written is ever left behind: a temporary file, then a rename."""

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        new_file_modes(tmp)  # mkstemp's 0600 -> the mode of any newly created file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def human_size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")
