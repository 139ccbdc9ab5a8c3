"""Property-based tests of the data readers, the templates and the metrics: whatever a file holds, reading it gives
examples or a one-line UserError naming the file (and the line, where there is one), never another exception."""

import csv
import io
import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softprompt.core.template import Template
from softprompt.data.readers import load_squad
from softprompt.errors import UserError
from softprompt.options import DataOptions
from softprompt.tasks import TASKS, Example, make_task, metrics

pytestmark = pytest.mark.slow  # starts processes or servers, loads real models, or draws many examples

SCALE = int(os.environ.get("SOFTPROMPT_FUZZ_SCALE", "1"))  # more generated cases per property, for a long run
FUZZ = settings(
    max_examples=60 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MANY = settings(FUZZ, max_examples=150 * SCALE)

VERBALIZERS = {"0": "bad", "1": "good"}
COLUMNS = sorted(
    {
        "text",
        "label",
        "input",
        "target",
        "sentence",
        "question",
        "context",
        "answers",
        "passage",
        "hypothesis",
        "premise",
        "choice1",
        "choice2",
        "word",
        "sentence1",
        "sentence2",
        "qas",
        "idx",
        "id",
        "entities",
        "query",
        "questions",
        "span1_index",
        "span1_text",
        "span2_index",
        "span2_text",
        "start",
        "end",
    }
)
LABELS = ["0", "1", 0, 1, True, False, "entailment", "neutral", "not_entailment", "True", "2", "4"]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(LABELS)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
rows = st.lists(
    st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=4), json_values, max_size=6), min_size=0, max_size=5
)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


def options(task: str) -> DataOptions:
    return DataOptions(task=task, verbalizers=VERBALIZERS if task == "classification" else {})


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """`data` as written, cut short, with random bytes put in, or with a line replaced by junk."""
    how = draw(st.sampled_from(["intact", "cut", "insert", "line"]))
    if how == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if how == "line":
        lines = data.split(b"\n")
        lines[draw(st.integers(0, len(lines) - 1))] = draw(
            st.binary(max_size=12) | st.sampled_from([b"null", b"[]", b"{", b'"x"', b"1e999", b"[" * 3000])
        )
        return b"\n".join(lines)
    return data


def lines_of(path) -> int:
    """Lines as CSV readers count them: a lone carriage return ends one too."""
    return len(re.split(rb"\r\n|\r|\n", path.read_bytes()))


def check(task, path):
    """Read `path` with `task`: examples that score in [0, 100], or a one-line UserError naming the file and a real line."""
    try:
        examples = task.load(str(path))
    except UserError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(str(path)), message
        line = re.match(re.escape(str(path)) + r":(\d+):", message)
        assert line is None or 1 <= int(line[1]) <= lines_of(path), message
        return None
    assert examples and all(isinstance(e.input, str) and isinstance(e.target, str) for e in examples)
    for predictions in ([e.target for e in examples], ["?"] * len(examples)):
        for value in task.score(predictions, examples).values():
            assert 0 <= value <= 100
    return examples


# ----- any file content ------------------------------------------------------------------------------
JSONL_TASKS = [
    "classification",
    "text2text",
    "squad",
    "boolq",
    "cb",
    "copa",
    "multirc",
    "record",
    "rte",
    "wic",
    "wsc",
    "sst2",
]


@MANY
@given(task=st.sampled_from(JSONL_TASKS), data=st.data(), rows=rows)
def test_jsonl_files_of_any_content(tmp_path_factory, task, data, rows):
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path = tmp_path_factory.mktemp("f") / "data.jsonl"
    path.write_bytes(data.draw(damaged(text)))
    check(make_task(options(task)), path)


@MANY
@given(
    task=st.sampled_from(["classification", "text2text", "sst2", "rte"]),
    fmt=st.sampled_from(["csv", "tsv"]),
    data=st.data(),
    header=st.lists(st.sampled_from(COLUMNS) | st.text(max_size=4), max_size=4),
    cells=st.lists(st.lists(texts | st.sampled_from(["0", "1", '"', "", "\t", ","]), max_size=5), max_size=5),
)
def test_csv_and_tsv_files_of_any_content(tmp_path_factory, task, fmt, data, header, cells):
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    for record in [header, *cells]:
        writer.writerow(record)
    path = tmp_path_factory.mktemp("f") / f"data.{fmt}"
    path.write_bytes(data.draw(damaged(out.getvalue().encode("utf-8", "surrogatepass"))))
    check(make_task(options(task)), path)


def squad_doc(value):
    """A SQuAD document with `value` put somewhere in its structure."""
    doc = {
        "data": [
            {
                "title": "t",
                "paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q", "answers": [{"text": "a"}]}]}],
            }
        ]
    }
    return doc, [
        lambda d: d.update(data=value),
        lambda d: d["data"][0].update(paragraphs=value),
        lambda d: d["data"][0]["paragraphs"][0].update(context=value),
        lambda d: d["data"][0]["paragraphs"][0].update(qas=value),
        lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(answers=value),
        lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(question=value),
        lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(text=value),
    ]


@FUZZ
@given(value=json_values, where=st.integers(0, 6), data=st.data())
def test_squad_json_of_any_content(tmp_path_factory, value, where, data):
    doc, places = squad_doc(value)
    places[where](doc)
    path = tmp_path_factory.mktemp("f") / "squad.json"
    path.write_bytes(data.draw(damaged(json.dumps(doc, indent=1).encode())))
    check(make_task(options("squad")), path)
    try:
        load_squad(str(path))
    except UserError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)


@FUZZ
@given(
    records=st.lists(
        st.dictionaries(
            st.sampled_from(["context", "qas", "header"]),
            json_values | st.just([{"qid": "q", "question": "q?", "answers": ["a"]}]),
        ),
        max_size=4,
    ),
    data=st.data(),
)
def test_mrqa_jsonl_of_any_content(tmp_path_factory, records, data):
    path = tmp_path_factory.mktemp("f") / "mrqa.jsonl"
    path.write_bytes(data.draw(damaged("".join(json.dumps(r) + "\n" for r in records).encode())))
    check(make_task(options("mrqa")), path)


LINE_TASKS = ["sst5", "sst5-binary", "trec", "mr"]


@FUZZ
@given(task=st.sampled_from(LINE_TASKS), content=st.binary(max_size=200))
def test_label_text_lines_of_any_bytes(tmp_path_factory, task, content):
    path = tmp_path_factory.mktemp("f") / "data.txt"
    path.write_bytes(content)
    check(make_task(options(task)), path)


# ----- the line of a bad row is named ----------------------------------------------------------------
GOOD = {"text": "fine", "label": 1}
BAD_LINES = {
    "truncated JSON": b'{"text": "fi',
    "not an object": b"[1, 2]",
    "null": b"null",
    "bad UTF-8": b'{"text": "\xff\xfe", "label": 1}',
    "nested junk": b'{"text": {"a": [1, {"b": null}]}, "label": 1}',
    "a list for a text": b'{"text": ["a"], "label": 0}',
    "a null text": b'{"text": null, "label": 1}',
    "an unknown label": b'{"text": "a", "label": [0]}',
    "deep nesting": b'{"text": ' + b"[" * 100_000 + b"}",
    "a huge integer": b'{"text": "a", "label": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("bad", list(BAD_LINES))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.integers(0, 4), after=st.integers(0, 2))
def test_a_bad_jsonl_line_is_named(tmp_path_factory, bad, before, after):
    good = json.dumps(GOOD).encode()
    path = tmp_path_factory.mktemp("f") / "data.jsonl"
    path.write_bytes(b"\n".join([good] * before + [BAD_LINES[bad]] + [good] * after) + b"\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:{before + 1}: [^\n]+$"):
        make_task(options("classification")).load(str(path))


BAD_CSV = {
    "too many fields": b"poor,0,extra",
    "bad UTF-8": b"\xffpoor,1",
    "an unknown label": b"poor,7",
    "an empty text": b",1",
}


@pytest.mark.parametrize("bad", list(BAD_CSV))
def test_a_bad_csv_line_is_named(tmp_path, bad):
    path = tmp_path / "data.csv"
    path.write_bytes(b"text,label\nfine,1\n" + BAD_CSV[bad] + b"\nfine,0\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:3: [^\n]+$"):
        make_task(options("classification")).load(str(path))


@pytest.mark.parametrize(
    "task, row",
    [
        (
            "wsc",
            {
                "text": "a b",
                "target": {"span1_index": "0", "span1_text": "a", "span2_index": 1, "span2_text": "b"},
                "label": True,
            },
        ),
        ("multirc", {"passage": {"text": "p", "questions": 5}}),
        (
            "multirc",
            {"passage": {"text": "p", "questions": [{"question": "q", "answers": [{"text": "a", "label": [1]}]}]}},
        ),
        ("record", {"passage": {"text": "p", "entities": [{"start": "0", "end": 1}]}, "qas": []}),
        ("record", {"passage": {"text": "p", "entities": []}, "qas": [{"query": "q", "answers": [5]}]}),
        ("boolq", {"question": {"q": 1}, "passage": "p", "label": True}),
    ],
)
def test_a_superglue_field_of_the_wrong_type_is_named(tmp_path, task, row):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:1: [^\n]+$"):
        make_task(options(task)).load(str(path))


@pytest.mark.parametrize(
    "name, content",
    [
        ("data.jsonl", '{"text": "%s", "label": 1}\n'),
        ("data.csv", 'text,label\n"%s",1\n'),
        ("data.tsv", "text\tlabel\n%s\t1\n"),
        ("mrqa.jsonl", '{"context": "%s", "qas": [{"qid": "1", "question": "q", "answers": ["a"]}]}\n'),
    ],
)
def test_a_huge_line_is_read(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content % ("word " * 400_000))  # 2 MB on one line
    task = make_task(options("mrqa" if name.startswith("mrqa") else "classification"))
    (example,) = task.load(str(path))
    assert len(example.input) >= 2_000_000


# ----- templates, typed inputs and metrics ---------------------------------------------------------------
@MANY
@given(
    text=st.text(max_size=40)
    | st.lists(st.sampled_from(["{}", "{a}", "{b}", "{prompt}", "{", "}", " ", "x: ", "{{}}"]), max_size=6).map(
        "".join
    ),
    value=texts,
    budget=st.integers(0, 30),
)
def test_any_template_renders_within_its_budget_or_says_why(text, value, budget):
    try:
        template = Template(text)
    except UserError as e:
        assert str(e).startswith("--data.template: ") and "\n" not in str(e)
        return
    values = {f: value for f in template.fields}
    rendered = template.render(values)
    count = lambda s: len(s.split())  # noqa: E731
    try:
        fitted = template.fit(values, count, budget)
    except UserError as e:
        assert "\n" not in str(e) and count(template.render(dict.fromkeys(template.fields, ""))) > budget
        return
    assert count(fitted) <= budget and (fitted == rendered or count(rendered) > budget)


@FUZZ
@given(
    template=st.sampled_from(["{a} {b}", "q: {question} c: {context}", "{}"]),
    inputs=st.lists(texts | json_values.map(json.dumps), min_size=1, max_size=4),
)
def test_typed_inputs_fill_the_template_or_say_which_input_is_wrong(template, inputs):
    task = make_task(DataOptions(task="text2text", template=template))
    try:
        fields = task.fields_from_texts(inputs)
    except UserError as e:
        assert re.fullmatch(r"input \d+: [^\n]+", str(e))
        return
    assert len(fields) == len(inputs) and all(set(f) == set(task.template.fields) for f in fields)


pairs = st.integers(0, 6).flatmap(
    lambda n: st.tuples(st.lists(texts, min_size=n, max_size=n), st.lists(texts, min_size=n, max_size=n))
)


@MANY
@given(
    pair=pairs,
    answers=st.lists(st.lists(texts, max_size=3), min_size=6, max_size=6),
    groups=st.lists(st.integers(0, 2), min_size=6, max_size=6),
)
def test_metrics_of_any_strings_stay_between_0_and_100(pair, answers, groups):
    predictions, references = pair
    n = len(predictions)
    for score in (
        metrics.accuracy(predictions, references),
        metrics.macro_f1(predictions, references),
        metrics.binary_f1(predictions, references, positive=references[0] if references else "1"),
        metrics.grouped_exact_match(predictions, references, groups[:n]),
    ):
        assert 0 <= score <= 1
    for value in metrics.squad(predictions, answers[:n]).values():
        assert 0 <= value <= 100


@FUZZ
@given(
    task=st.sampled_from(sorted(TASKS)),
    predictions=st.lists(texts | st.sampled_from(["0", "1", "True", "entailment"]), min_size=1, max_size=5),
    data=st.data(),
)
def test_task_scores_of_any_predictions_stay_between_0_and_100(task, predictions, data):
    t = make_task(options(task))
    classes = len(getattr(t, "label_values", [None]))
    examples = [
        Example(
            {},
            target="t",
            class_id=data.draw(st.integers(0, classes - 1)),
            answers=data.draw(st.lists(texts, max_size=2)),
            group=str(i % 2),
        )
        for i, _ in enumerate(predictions)
    ]
    for value in t.score(predictions, examples).values():
        assert 0 <= value <= 100


def test_the_fuzzed_files_cover_every_task():
    assert set(JSONL_TASKS) | set(LINE_TASKS) | {"mrqa"} == set(TASKS)
