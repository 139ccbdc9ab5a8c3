"""Reading data: formats, and one clear error naming the file and line for each kind of bad input."""

import json
import os
from pathlib import Path

import pytest

from softprompt.data.readers import is_local, load_rows, load_squad, where
from softprompt.errors import UserError
from softprompt.options import DataOptions
from softprompt.tasks import make_task

# the public data sets (docs/data.md): $SOFTPROMPT_DATA, else ../shared/data beside the checkout; tests skip without them
SHARED = Path(os.environ.get("SOFTPROMPT_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def classification(**kw):
    return make_task(DataOptions(verbalizers={"0": "bad", "1": "good"}, **kw))


def test_jsonl_csv_tsv(tmp_path):
    j = write(tmp_path / "a.jsonl", '{"text": "fine", "label": 1}\n{"text": "poor", "label": 0}\n')
    c = write(tmp_path / "a.csv", 'text,label\n"fine, really",1\npoor,0\n')
    t = write(tmp_path / "a.tsv", 'text\tlabel\nit \'s "fine"\t1\npoor\t0\n')
    for path in (j, c, t):
        examples = classification().load(path)
        assert [e.class_id for e in examples] == [1, 0] and [e.target for e in examples] == ["good", "bad"]
    assert classification().load(c)[0].input == "fine, really"
    assert classification().load(t)[0].input == 'it \'s "fine"'  # TSV quotes are text, as in GLUE


def test_template_and_text2text(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"q": "2+2", "a": "4"}\n')
    task = make_task(DataOptions(task="text2text", input_column="q", target_column="a", template="sum: {}"))
    (example,) = task.load(path)
    assert example.input == "sum: 2+2" and example.target == "4" and example.answers == ["4"]


def test_missing_file():
    with pytest.raises(UserError, match=r"nope\.jsonl: no such file"):
        classification().load("nope.jsonl")


def test_malformed_jsonl_line_is_named(tmp_path):
    path = write(
        tmp_path / "bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n{"text": "c" "label": 1}\n'
    )
    with pytest.raises(UserError, match=r"bad\.jsonl:3: malformed JSON"):
        classification().load(path)


def test_tsv_with_a_wrong_field_count_is_named(tmp_path):
    path = write(tmp_path / "bad.tsv", "text\tlabel\nfine\t1\npoor\t0\textra\n")
    with pytest.raises(UserError, match=r"bad\.tsv:3: expected 2 fields, found 3"):
        classification().load(path)


def test_missing_column(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"sentence": "fine", "label": 1}\n')
    with pytest.raises(UserError, match=r"a\.jsonl: missing column 'text' \(columns: sentence, label\)"):
        classification().load(path)


def test_empty_data_set(tmp_path):
    for name in ("empty.jsonl", "empty.tsv"):
        path = write(tmp_path / name, "")
        with pytest.raises(UserError, match="the data set is empty"):
            classification().load(path)


def test_unknown_label_names_the_line(tmp_path):
    path = write(tmp_path / "a.tsv", "text\tlabel\nfine\t1\nodd\t7\n")
    with pytest.raises(UserError, match=r"a\.tsv:3: label '7' is not one of the verbalizers \(0, 1\)"):
        classification().load(path)


def test_line_numbers_after_a_quoted_newline_and_blank_lines(tmp_path):
    csv_path = write(tmp_path / "a.csv", 'text,label\n"two\nlines",1\n\n   \nodd,7\n')
    with pytest.raises(UserError, match=r"a\.csv:6: label '7'"):
        classification().load(csv_path)
    jsonl = write(tmp_path / "a.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": 7}\n')
    with pytest.raises(UserError, match=r"a\.jsonl:3: label '7'"):
        classification().load(jsonl)
    tsv = write(tmp_path / "a.tsv", 'text\tlabel\n"quotes are text\t1\n  \nodd\t7\n')
    with pytest.raises(UserError, match=r"a\.tsv:4: label '7'"):
        classification().load(tsv)


def test_malformed_line_after_a_quoted_newline_is_named(tmp_path):
    path = write(tmp_path / "bad.csv", 'text,label\n"two\nlines",1\nshort\npoor,0,extra\n')
    with pytest.raises(UserError, match=r"bad\.csv:5: expected 2 fields, found 3"):
        classification().load(path)


def test_rows_and_their_lines_agree_with_the_datasets_library(tmp_path):
    path = write(tmp_path / "a.csv", '\ntext,label\r\n"a\r\n\r\nb",1\r\n \t \r\n"  ",0\r\nc,1\n')
    rows, lines = load_rows(path)
    assert [r["text"] for r in rows] == ["a\r\n\r\nb", "  ", "c"] and lines == [3, 7, 8]
    assert where(path, lines, 1) == f"{path}:7" and where("glue:sst2", None, 1) == "glue:sst2 row 1"
    array = write(tmp_path / "array.json", '[\n{"text": "a", "label": 1}\n]\n')
    assert load_rows(array, "jsonl") == ([{"text": "a", "label": 1}], None)  # a JSON array: rows are counted, not lines


def test_classification_needs_verbalizers():
    with pytest.raises(UserError, match="data.verbalizers"):
        make_task(DataOptions())


def test_squad_json(tmp_path):
    doc = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "Paris is in France.",
                        "qas": [
                            {
                                "id": "1",
                                "question": "Where is Paris?",
                                "answers": [
                                    {"text": "France", "answer_start": 12},
                                    {"text": "in France", "answer_start": 9},
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = write(tmp_path / "squad.json", json.dumps(doc))
    (example,) = make_task(DataOptions(task="squad")).load(path)
    assert example.input == "question: Where is Paris? context: Paris is in France."
    assert example.target == "France" and example.answers == ["France", "in France"]
    broken = write(tmp_path / "broken.json", '{"data": [\n  {"title": }\n]}')
    with pytest.raises(UserError, match=r"broken\.json:2: malformed JSON"):
        load_squad(broken)


@pytest.mark.skipif(not (SHARED / "sst2").is_dir(), reason="needs $SOFTPROMPT_DATA/sst2")
def test_reads_glue_sst2_dev():
    rows, lines = load_rows(str(SHARED / "sst2" / "dev.tsv"))
    assert len(rows) == 872 and lines == list(range(2, 874)) and set(rows[0]) == {"sentence", "label"}


def test_hub_data_set_offline_is_a_clear_error():
    with pytest.raises(UserError, match=r"glue:sst2@validation: no such file, and the hub data set cannot be loaded"):
        load_rows("glue:sst2@validation")


def test_owner_slash_name_is_a_hub_data_set_not_a_missing_file():
    assert not is_local("stanfordnlp/sst2@validation") and not is_local("glue:sst2")
    assert is_local("data/train.jsonl") and is_local("./sst2") and is_local("~/sst2")
    with pytest.raises(
        UserError,
        match=r"^softprompt-tests/no-such-set@validation: no such file, and the hub data set cannot be loaded",
    ):
        load_rows("softprompt-tests/no-such-set@validation")
    with pytest.raises(UserError, match=r"^\./no-such-set: no such file$"):
        load_rows("./no-such-set")
