"""Data paths may name environment variables ($SOFTPROMPT_DATA/sst2/dev.tsv, as the shipped recipes do): they are
expanded wherever a data file is read, and a variable that is not set is refused in one line that says what to set."""

import pytest

from softprompt.data.readers import expand_path, load_labelled_lines, load_mrqa, load_rows
from softprompt.errors import UserError
from softprompt.options import DataOptions
from softprompt.tasks import make_task

UNSET = r"^\$SOFTPROMPT_DATA/sst2/dev\.tsv: \$SOFTPROMPT_DATA is not set: export it to the folder holding the public data sets \(docs/data\.md\)$"


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A data folder named by $SOFTPROMPT_DATA, holding a JSONL, a TSV, `LABEL TEXT` lines and an MRQA file."""
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\nfine \t1\npoor \t0\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"text": "fine", "label": "1"}\n', encoding="utf-8")
    (tmp_path / "lines.all").write_text("1 fine\n0 poor\n", encoding="utf-8")
    qa = '{"context": "Paris is in France.", "qas": [{"qid": "q", "question": "Where?", "answers": ["France"]}]}\n'
    (tmp_path / "qa.jsonl").write_text(qa, encoding="utf-8")
    monkeypatch.setenv("SOFTPROMPT_DATA", str(tmp_path))
    return tmp_path


def test_both_spellings_of_a_variable_are_expanded(data):
    assert expand_path("$SOFTPROMPT_DATA/sst2/dev.tsv") == str(data / "sst2" / "dev.tsv")
    assert expand_path("${SOFTPROMPT_DATA}/a.jsonl") == str(data / "a.jsonl")
    assert expand_path("plain/path.tsv") == "plain/path.tsv"


def test_every_reader_expands_the_variable(data):
    rows, lines = load_rows("$SOFTPROMPT_DATA/sst2/dev.tsv")
    assert [r["label"] for r in rows] == ["1", "0"] and lines == [2, 3]
    assert load_rows("${SOFTPROMPT_DATA}/a.jsonl")[0] == [{"text": "fine", "label": "1"}]
    assert [r["text"] for r in load_labelled_lines("$SOFTPROMPT_DATA/lines.all")[0]] == ["fine", "poor"]
    assert load_mrqa("$SOFTPROMPT_DATA/qa.jsonl")[0][0]["answers"] == ["France"]


def test_a_task_loads_a_split_of_a_file_named_through_the_variable(data):
    (data / "mr.all").write_text("".join(f"{n % 2} sentence {n}\n" for n in range(20)), encoding="utf-8")
    task = make_task(DataOptions(task="mr"))
    assert len(task.load("$SOFTPROMPT_DATA/mr.all@validation")) == 2
    assert len(task.load("$SOFTPROMPT_DATA/mr.all@train")) == 18
    sst2 = make_task(DataOptions(task="sst2"))
    assert [e.target for e in sst2.load("$SOFTPROMPT_DATA/sst2/dev.tsv")] == ["positive", "negative"]


def test_an_unset_variable_is_one_line_saying_what_to_set(monkeypatch):
    monkeypatch.delenv("SOFTPROMPT_DATA", raising=False)
    with pytest.raises(UserError, match=UNSET):
        load_rows("$SOFTPROMPT_DATA/sst2/dev.tsv")
    with pytest.raises(UserError, match=r"^\$\{SOFTPROMPT_DATA\}/x\.all@validation: \$SOFTPROMPT_DATA is not set"):
        make_task(DataOptions(task="mr")).load("${SOFTPROMPT_DATA}/x.all@validation")
    monkeypatch.delenv("NO_SUCH_VARIABLE_HERE", raising=False)
    with pytest.raises(
        UserError, match=r"^\$NO_SUCH_VARIABLE_HERE/a\.jsonl: \$NO_SUCH_VARIABLE_HERE is not set: export it"
    ):
        load_rows("$NO_SUCH_VARIABLE_HERE/a.jsonl")


def test_the_command_refuses_an_unset_variable_before_the_model_loads(monkeypatch, capsys):
    from softprompt.cli import main

    monkeypatch.delenv("SOFTPROMPT_DATA", raising=False)
    argv = ["train", "--data.task=sst2", "--data.train=$SOFTPROMPT_DATA/sst2/dev.tsv", "--model.name=/no/such/model"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$SOFTPROMPT_DATA is not set: export it to the folder holding" in err, err
