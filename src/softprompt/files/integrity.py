"""Checking files against sha256 hashes, each file hashed in full once per process.

A file whose hash matched is remembered with its size, modification and change times and inode; while those stay the same it is
not hashed again in this process (hashing SmolLM2's 538 MB takes about 1.5 s, its load a few seconds). A file
changed in place gets a new modification time and is hashed again; every new process hashes every file once."""

import hashlib
import os
from pathlib import Path

from softprompt.errors import UserError

_matched: dict[str, tuple] = {}  # path -> (size, mtime, ctime, inode, sha256) of a file that matched


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, label: str, what: str) -> None:
    """Refuse `path` unless its sha256 is `expected`: "LABEL: sha256 X is not WHAT (EXPECTED)"."""
    key = str(Path(path).resolve())
    stat = os.stat(path)
    seen = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, expected)
    if _matched.get(key) == seen:
        return
    digest = sha256_of(path)
    if digest != expected:
        _matched.pop(key, None)
        raise UserError(f"{label}: sha256 {digest} is not {what} ({expected})")
    _matched[key] = seen


def folder_hashes(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """The sha256 of every file under `folder` (but `skip`), by path relative to it, in sorted order."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in skip)
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in files}


def check_folder(folder: Path, recorded: dict[str, str], skip: tuple[str, ...], what: str, remedy: str) -> None:
    """Refuse `folder` unless it holds exactly the files `recorded` (but `skip`), each with its recorded sha256."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - set(skip)
    missing, extra = sorted(set(recorded) - present), sorted(present - set(recorded))
    if missing:
        raise UserError(f"{folder / missing[0]}: missing, though recorded when {what}; {remedy}")
    if extra:
        raise UserError(f"{folder / extra[0]}: not among the files recorded when {what}; {remedy}")
    for name, expected in recorded.items():
        try:
            check_sha256(folder / name, expected, str(folder / name), f"the one recorded when {what}")
        except UserError as e:
            raise UserError(f"{e}; {remedy}") from None
