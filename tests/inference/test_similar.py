"""softprompt similar: prompt files ranked by cosine similarity of their mean vectors (SPoT's source retrieval)."""

import json

import pytest
import torch

from softprompt.cli import main
from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt, save_prompt
from softprompt.inference.similar import rank

FINGERPRINT = "norms:1,2,3"


def write(path, prompt, fingerprint=FINGERPRINT):
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_prompt(path, prompt, {"base_model": "tiny", "embedding_fingerprint": fingerprint})


@pytest.fixture
def bank(tmp_path):
    """A target prompt and a folder holding its copy, its negation, two others and files that do not compare."""
    torch.manual_seed(0)
    target = torch.randn(6, 16) + 0.5
    write(tmp_path / "target.safetensors", target)
    folder = tmp_path / "bank"
    write(folder / "copy.safetensors", target.clone())
    write(folder / "negated" / "prompt.safetensors", -target)
    write(folder / "longer.safetensors", torch.cat([target, target[:4] + 0.3 * torch.randn(4, 16)]))  # 10 positions
    write(folder / "other.safetensors", torch.randn(3, 16))
    write(folder / "wide.safetensors", torch.randn(6, 32))
    write(folder / "other-model.safetensors", target.clone(), fingerprint="norms:5,5,5")
    (folder / "adapter_model.safetensors").write_bytes(b"not a prompt")
    return tmp_path / "target.safetensors", folder


def test_a_copy_ranks_first_at_one_and_the_negation_last_at_minus_one(bank):
    target, folder = bank
    ranking = rank(load_prompt(target), target, folder)
    names = [m.path.removeprefix(str(folder) + "/") for m in ranking.matches]
    assert names[0] == "copy.safetensors" and names[-1] == "negated/prompt.safetensors"
    assert names[1] == "longer.safetensors" and len(names) == ranking.compared == 4
    assert ranking.matches[0].similarity == pytest.approx(1.0, abs=1e-12)
    assert ranking.matches[-1].similarity == pytest.approx(-1.0, abs=1e-12)
    assert [m.length for m in ranking.matches if m.path.endswith("longer.safetensors")] == [10]
    skipped = dict((p.removeprefix(str(folder) + "/"), why) for p, why in ranking.skipped)
    assert skipped["wide.safetensors"] == "width 32, not 16"
    assert skipped["other-model.safetensors"].startswith("trained on other input embeddings (row norms differ")
    assert skipped["adapter_model.safetensors"].startswith("not a readable safetensors file")


def test_the_target_itself_is_not_ranked_and_k_keeps_the_best(bank):
    target, folder = bank
    write(folder / "target.safetensors", load_prompt(target).prompt)
    ranking = rank(load_prompt(folder / "target.safetensors"), folder / "target.safetensors", folder, k=2)
    assert [m.path.rsplit("/", 1)[-1] for m in ranking.matches] == ["copy.safetensors", "longer.safetensors"]
    assert ranking.compared == 4


def test_the_command_prints_a_table_and_json(bank, capsys):
    target, folder = bank
    assert main(["similar", str(target), "--bank", str(folder), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert (
        out.splitlines()[0]
        == f"{target}: the 2 most similar of 4 prompts under {folder}, by cosine similarity of mean prompt vectors"
    )
    assert out.splitlines()[2].split() == ["1", "1.0000", "6", str(folder / "copy.safetensors")]
    assert f"skipped {folder / 'wide.safetensors'}: width 32, not 16" in out
    assert main(["similar", str(target), "--bank", str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [round(m["similarity"], 6) for m in result["ranked"]][::3] == [1.0, -1.0] and result["hidden"] == 16
    assert {s["path"].rsplit("/", 1)[-1] for s in result["skipped"]} == {
        "wide.safetensors",
        "other-model.safetensors",
        "adapter_model.safetensors",
    }


def test_an_empty_or_missing_bank_is_one_line(bank, tmp_path, capsys):
    target, _ = bank
    (tmp_path / "empty").mkdir()
    assert main(["similar", str(target), "--bank", str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err == f"error: --bank: no prompt files (.safetensors) under {tmp_path / 'empty'}\n"
    assert main(["similar", str(target), "--bank", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err == f"error: --bank: {tmp_path / 'nowhere'} is not a folder\n"


def test_a_bank_with_nothing_comparable_says_why(tmp_path):
    write(tmp_path / "target.safetensors", torch.randn(4, 8))
    write(tmp_path / "bank" / "wide.safetensors", torch.randn(4, 12))
    with pytest.raises(
        UserError,
        match=r"none of the 1 files under .* is a prompt of .*'s model \(.*wide.safetensors: width 12, not 8\)$",
    ):
        rank(load_prompt(tmp_path / "target.safetensors"), tmp_path / "target.safetensors", tmp_path / "bank")
