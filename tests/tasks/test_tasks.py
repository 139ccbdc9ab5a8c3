"""The task registry: each task's input format, targets and metric on rows worked out by hand, the public data sets
read as they are published (skipped without $SOFTPROMPT_DATA), and short training runs."""

import gzip
import inspect
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import WORDS, tiny_bert, tiny_gpt2, tiny_t5

from softprompt.cli import main
from softprompt.core.template import Template
from softprompt.errors import UserError
from softprompt.files.prompt_file import load_prompt
from softprompt.inference.loading import task_options
from softprompt.options import TASK_NAMES, DataOptions, PromptOptions, TrainOptions
from softprompt.tasks import TASKS, ClassificationTask, Example, SquadTask, Task, TextToTextTask, make_task, metrics
from softprompt.tasks.base import local_split
from softprompt.training.train import train_prompt

# the public data sets (docs/data.md): $SOFTPROMPT_DATA, else ../shared/data beside the checkout; tests skip without them
SHARED = Path(os.environ.get("SOFTPROMPT_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
NAMES = [
    "classification",
    "text2text",
    "squad",
    "mrqa",
    "boolq",
    "cb",
    "copa",
    "multirc",
    "record",
    "rte",
    "wic",
    "wsc",
    "trec",
    "sst5",
    "sst5-binary",
    "mr",
    "sst2",
]


def task(name: str, **options) -> Task:
    return make_task(DataOptions(task=name, **options))


def examples(name: str, rows: list[dict], **options) -> list[Example]:
    return task(name, **options).examples(rows, "rows.jsonl", list(range(1, len(rows) + 1)))


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


# ----- the registry ----------------------------------------------------------------------------------
def test_every_task_is_registered_and_the_old_names_still_import():
    assert list(TASKS) == NAMES and TASK_NAMES == tuple(NAMES)  # the option's values, which prompt files are checked on
    assert (
        TASKS["classification"] is ClassificationTask
        and TASKS["text2text"] is TextToTextTask
        and TASKS["squad"] is SquadTask
    )
    assert all(issubclass(t, Task) for t in TASKS.values())
    with pytest.raises(
        UserError,
        match=r"^--data\.task: 'glue' is not a task; the tasks are classification, text2text, squad, mrqa, boolq, .*, sst2$",
    ):
        task("glue")


def test_the_task_option_documents_every_task():
    doc = inspect.getsource(DataOptions).split("task: str")[1].split('"""')[1]
    assert [n for n in NAMES if n not in doc] == []


def test_softprompt_tasks_lists_template_targets_and_metric(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if not line.startswith(" ")] == NAMES
    assert "passage: {passage} question: {question}  ->  False / True" in out
    assert "choice1: {choice1} choice2: {choice2} premise: {premise} question: {question}  ->  choice1 / choice2" in out
    assert "metric: average of exact_match and f1a" in out and "metric: average of accuracy and macro_f1" in out


def test_a_named_task_takes_other_label_texts_and_templates_over_its_own_fields():
    boolq = task(
        "boolq", verbalizers={"False": "no", "True": "yes"}, template="question: {question} passage: {passage}"
    )
    (example,) = boolq.examples([{"question": "is it", "passage": "It is.", "label": True}], "rows.jsonl", [1])
    assert (
        example.input == "question: is it passage: It is."
        and example.target == "yes"
        and boolq.label_values == ["False", "True"]
    )
    with pytest.raises(UserError, match=r"--data\.verbalizers: boolq has the labels False, True; give a text for each"):
        task("boolq", verbalizers={"0": "no", "1": "yes"})
    with pytest.raises(UserError, match=r"--data\.template: \{title\} is not a field of boolq \(passage, question\)"):
        task("boolq", template="{title} {question}")


def test_generative_named_tasks_have_longer_targets_unless_set():
    assert task("record").options.max_target_length == 16 and task("mrqa").options.max_target_length == 32
    assert task("record", max_target_length=5).options.max_target_length == 5
    assert task("squad").options.max_target_length == 8 and task("boolq").options.max_target_length == 8


# ----- templates: the long field is cut first ------------------------------------------------------
def words(text: str) -> int:
    return len(text.split())


def test_fields_named_to_cut_first_go_before_longer_ones():
    values = {"question": "q1 q2 q3 q4 q5 q6", "passage": "p1 p2 p3"}
    text = "question: {question} passage: {passage}"
    # 11 words; longest first (the default) cuts the question, cut_first cuts the passage even though it is shorter
    assert Template(text).fit(values, words, budget=9) == "question: q1 q2 q3 q4 passage: p1 p2 p3"
    assert (
        Template(text, cut_first=("passage",)).fit(values, words, budget=9) == "question: q1 q2 q3 q4 q5 q6 passage: p1"
    )
    assert Template(text, cut_first=("passage",)).fit(values, words, budget=7) == "question: q1 q2 q3 q4 q5 passage: "
    assert Template(text, cut_first=("context",)).cut_first == []  # a field the template lacks is ignored


@pytest.mark.parametrize(
    "name,row,budget,kept",
    [
        # passage : question : </s> and 7 question words leave the passage 2 words; longest first would cut the question
        (
            "boolq",
            {"passage": "the sun is red", "question": "what is the very blue moon really", "label": True},
            4 + 1 + 7 + 2,
            "the sun question what is the very blue moon really",
        ),
        (
            "multirc",
            {
                "passage": {
                    "text": "the sun is red",
                    "questions": [
                        {"question": "what is the very blue moon really", "answers": [{"text": "red", "label": 1}]}
                    ],
                }
            },
            6 + 1 + 8 + 2,
            "question what is the very blue moon really answer red the sun",
        ),
    ],
)
def test_a_too_long_input_loses_the_passage_before_a_longer_question(name, row, budget, kept):
    model = tiny_t5()  # 'passage', 'paragraph' and ':' are <unk> here, dropped by decode
    t = task(name, max_input_length=budget)
    (example,) = t.examples([row], "rows.jsonl", [1])
    ids = t.batch(model, [example])["input_ids"][0]
    assert len(ids) == budget and model.tokenizer.decode(ids, skip_special_tokens=True) == kept


# ----- SuperGLUE formats -----------------------------------------------------------------------------
def test_boolq_cb_copa_rte_wic_formats():
    (e,) = examples("boolq", [{"question": "is the sky blue", "passage": "The sky is blue.", "idx": 0, "label": True}])
    assert (e.input, e.target, e.class_id) == ("passage: The sky is blue. question: is the sky blue", "True", 1)
    (e,) = examples("cb", [{"premise": "It rained.", "hypothesis": "It was wet.", "label": "neutral", "idx": 0}])
    assert (e.input, e.target, e.class_id) == ("hypothesis: It was wet. premise: It rained.", "neutral", 2)
    (e,) = examples(
        "copa",
        [
            {
                "premise": "The man turned on the faucet.",
                "choice1": "The toilet filled.",
                "choice2": "Water flowed.",
                "question": "effect",
                "label": 1,
            }
        ],
    )
    assert (
        e.input
        == "choice1: The toilet filled. choice2: Water flowed. premise: The man turned on the faucet. question: effect"
    )
    assert (e.target, e.class_id) == ("choice2", 1)
    (e,) = examples(
        "rte", [{"premise": "Dana Reeve died.", "hypothesis": "Reeve had an accident.", "label": "not_entailment"}]
    )
    assert (e.input, e.target) == ("hypothesis: Reeve had an accident. premise: Dana Reeve died.", "not_entailment")
    (e,) = examples(
        "wic",
        [
            {
                "word": "class",
                "sentence1": "A class.",
                "sentence2": "Real class.",
                "label": False,
                "start1": 2,
                "end1": 7,
            }
        ],
    )
    assert (e.input, e.target, e.class_id) == ("sentence1: A class. sentence2: Real class. word: class", "False", 0)


def test_a_label_outside_the_task_or_missing_names_the_row():
    with pytest.raises(
        UserError, match=r"rows\.jsonl:2: label 'maybe' is not one of the labels \(entailment, not_entailment\)"
    ):
        examples(
            "rte",
            [
                {"premise": "a", "hypothesis": "b", "label": "entailment"},
                {"premise": "a", "hypothesis": "b", "label": "maybe"},
            ],
        )
    with pytest.raises(UserError, match=r"rows\.jsonl:1: no label \(column 'label'\)"):
        examples("rte", [{"premise": "a", "hypothesis": "b", "label": None}])
    with pytest.raises(UserError, match=r"rows\.jsonl:1: missing field 'target\.span2_index'"):
        examples(
            "wsc", [{"text": "a b", "target": {"span1_index": 0, "span1_text": "a", "span2_text": "b"}, "label": True}]
        )


def test_wsc_marks_the_noun_with_stars_and_the_pronoun_with_hashes():
    def wsc(text, i1, s1, i2, s2):
        row = {
            "text": text,
            "target": {"span1_index": i1, "span1_text": s1, "span2_index": i2, "span2_text": s2},
            "label": True,
        }
        return examples("wsc", [row])[0]

    e = wsc("The cat sat on the mat because it was warm .", 4, "the mat", 7, "it")
    assert (e.input, e.target) == ("text: The cat sat on * the mat * because # it # was warm .", "True")
    # SuperGLUE's off-by-one index and other case are marked where the words are; punctuation stays outside the marks
    assert (
        wsc("The mat was warm , said the cat of it, she said .", 0, "the mat", 8, "it").input
        == "text: * The mat * was warm , said the cat of # it #, she said ."
    )
    assert (
        wsc("Tom asked Bill if he could go .", 2, "Bill", 3, "he").input
        == "text: Tom asked * Bill * if # he # could go ."
    )


def multirc_rows():
    paragraph = "<b>Sent 1: </b>The sun is red.<br><b>Sent 2: </b>The moon is blue."
    questions = [
        {
            "question": "What is red?",
            "idx": 0,
            "answers": [{"text": "The sun", "idx": 0, "label": 1}, {"text": "The moon", "idx": 1, "label": 0}],
        },
        {"question": "What is blue?", "idx": 1, "answers": [{"text": "The moon", "idx": 2, "label": 1}]},
    ]
    return [{"idx": 7, "passage": {"text": paragraph, "questions": questions}}]


def test_multirc_makes_one_example_per_answer_grouped_by_question():
    out = examples("multirc", multirc_rows())
    assert [e.input for e in out] == [
        "question: What is red? answer: The sun paragraph: Sent 1: The sun is red. Sent 2: The moon is blue.",
        "question: What is red? answer: The moon paragraph: Sent 1: The sun is red. Sent 2: The moon is blue.",
        "question: What is blue? answer: The moon paragraph: Sent 1: The sun is red. Sent 2: The moon is blue.",
    ]
    assert [e.target for e in out] == ["True", "False", "True"] and [e.group for e in out] == ["7/0", "7/0", "7/1"]


def test_multirc_exact_match_is_over_questions_and_f1a_over_answers():
    multirc = task("multirc")
    out = examples("multirc", multirc_rows())
    # every answer 'True': question 0 has a wrong answer, question 1 is right -> EM 1/2; F1a: tp 2, fp 1, fn 0 -> 4/5
    scores = multirc.score(["1", "1", "1"], out)
    assert scores == pytest.approx({"exact_match": 50.0, "f1a": 80.0, "average": 65.0})
    assert multirc.score(["1", "0", "1"], out) == pytest.approx({"exact_match": 100.0, "f1a": 100.0, "average": 100.0})
    # one wrong answer in each question: EM 0; F1a: tp 0 -> 0
    assert multirc.score(["0", "0", "0"], out) == pytest.approx({"exact_match": 0.0, "f1a": 0.0, "average": 0.0})


def record_rows():
    text = "Obama met Merkel in Berlin.\n@highlight\nObama visits Berlin\n@highlight\nTalks go well"
    entities = [{"start": text.index(w), "end": text.index(w) + len(w) - 1} for w in ("Obama", "Merkel", "Berlin")]
    entities.append({"start": text.rindex("Obama"), "end": text.rindex("Obama") + 4})  # a second mention, listed once
    qas = [
        {
            "query": "@placeholder met Merkel",
            "idx": 0,
            "answers": [{"start": 0, "end": 4, "text": "Obama"}, {"start": 0, "end": 4, "text": "President Obama"}],
        },
        {"query": "Talks in @placeholder", "idx": 1, "answers": [{"start": 20, "end": 25, "text": "Berlin"}]},
    ]
    return [{"source": "news", "idx": 3, "passage": {"text": text, "entities": entities}, "qas": qas}]


def test_record_lists_entities_and_scores_the_best_answer():
    record = task("record")
    out = record.examples(record_rows(), "rows.jsonl", [1])
    passage = "Obama met Merkel in Berlin. Obama visits Berlin. Talks go well"
    assert out[0].input == f"query: @placeholder met Merkel entities: Berlin, Merkel, Obama passage: {passage}"
    assert (out[0].target, out[0].answers, out[1].answers) == ("Obama", ["Obama", "President Obama"], ["Berlin"])
    # query 0 matches only its second answer; query 1: {berlin, visits} against {berlin}: precision 1/2, recall 1, F1 2/3
    scores = record.score(["president Obama!", "Berlin visits"], out)
    assert scores == pytest.approx(
        {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2, "average": (50 + 100 * (1 + 2 / 3) / 2) / 2}
    )


def test_cb_reports_accuracy_macro_f1_and_their_average():
    cb = task("cb")
    rows = [
        {"premise": "p", "hypothesis": "h", "label": label}
        for label in ("entailment", "contradiction", "neutral", "entailment")
    ]
    # accuracy 3/4; F1: entailment tp 2 fp 1 -> 4/5, contradiction 1, neutral 0 -> macro 0.6
    scores = cb.score(["entailment", "contradiction", "entailment", "entailment"], cb.examples(rows, "cb.jsonl", None))
    assert scores == pytest.approx({"accuracy": 75.0, "macro_f1": 60.0, "average": 67.5}) and cb.metric == "average"


def test_binary_f1_and_grouped_exact_match_by_hand():
    # class 1: tp 1 (3rd), fp 1 (1st), fn 1 (4th) -> 2/4
    assert metrics.binary_f1([1, 0, 1, 0], [0, 0, 1, 1], positive=1) == pytest.approx(0.5)
    assert metrics.binary_f1([0, 0], [0, 0], positive=1) == 0.0
    # groups a: right, right; b: right, wrong; c: right -> 2 of 3
    assert metrics.grouped_exact_match([1, 0, 1, 1, 0], [1, 0, 1, 0, 0], ["a", "a", "b", "b", "c"]) == pytest.approx(
        2 / 3
    )


# ----- sentence tasks and their files ----------------------------------------------------------------
def test_sst5_and_sst5_binary_read_label_lines(tmp_path):
    path = write(tmp_path / "stsa.fine.dev", "0 awful\n2 meh\n\n4 great fun\n1 bad\n3 good\n")
    assert [e.target for e in task("sst5").load(path)] == [
        "very negative",
        "neutral",
        "very positive",
        "negative",
        "positive",
    ]
    binary = task("sst5-binary").load(path)  # the neutral row is dropped
    assert [(e.input, e.target, e.class_id) for e in binary] == [
        ("sentence: awful", "negative", 0),
        ("sentence: great fun", "positive", 1),
        ("sentence: bad", "negative", 0),
        ("sentence: good", "positive", 1),
    ]
    bad = write(tmp_path / "bad.dev", "0 awful\n\n7 odd\n")
    with pytest.raises(UserError, match=r"bad\.dev:3: label '7' is not one of the labels \(0, 1, 2, 3, 4\)"):
        task("sst5").load(bad)
    with pytest.raises(UserError, match=r"nolabel\.dev:2: expected a label, a space and a text"):
        task("sst5").load(write(tmp_path / "nolabel.dev", "0 fine\nnolabel\n"))


def test_mr_reads_latin1_and_a_next_line_character_does_not_end_a_line(tmp_path):
    path = write(tmp_path / "rt-polarity.all", "1 a caf\xe9 film \x85 fun\n0 dull\n", encoding="latin-1")
    out = task("mr").load(path)
    assert [(e.input, e.target) for e in out] == [
        ("sentence: a caf\xe9 film \x85 fun", "positive"),
        ("sentence: dull", "negative"),
    ]


def test_a_local_file_splits_every_tenth_row_to_validation(tmp_path):
    path = write(tmp_path / "rt-polarity.all", "".join(f"{n % 2} row{n}\n" for n in range(1, 26)))
    assert [e.input for e in task("mr").load(path + "@validation")] == ["sentence: row10", "sentence: row20"]
    train = task("mr").load(path + "@train")
    assert len(train) == 23 and "sentence: row10" not in [e.input for e in train] and len(task("mr").load(path)) == 25
    assert len(task("mr").load(path + "@train", limit=5)) == 5
    with pytest.raises(UserError, match=r"rt-polarity\.all:20: label '7'"):  # lines are the file's
        task("mr").load(
            write(tmp_path / "rt-polarity.all", "".join(f"{7 if n == 20 else 0} row{n}\n" for n in range(1, 26)))
            + "@validation"
        )
    with pytest.raises(
        UserError, match=r"rt-polarity\.all@test: a local file splits into .*@train and .*@validation only"
    ):
        task("mr").load(path + "@test")
    assert local_split("glue:sst2@validation") == ("glue:sst2@validation", None)  # a hub split is the hub's


def test_trec_takes_label_ids_or_coarse_names(tmp_path):
    path = write(tmp_path / "TREC.test", "4 Where is Rome ?\nNUM:dist How far is it ?\nHUM:ind Who was Galileo ?\n")
    assert [(e.input, e.target) for e in task("trec").load(path)] == [
        ("question: Where is Rome ?", "location"),
        ("question: How far is it ?", "number"),
        ("question: Who was Galileo ?", "human"),
    ]


def test_sst2_reads_glue_tsv_and_other_tables(tmp_path):
    path = write(tmp_path / "dev.tsv", 'sentence\tlabel\nit \'s "great" \t1\nawful \t0\n')
    assert [(e.input, e.target) for e in task("sst2").load(path)] == [
        ('sentence: it \'s "great" ', "positive"),
        ("sentence: awful ", "negative"),
    ]
    jsonl = write(tmp_path / "sst5.jsonl", '{"text": "fine", "label": 3}\n')
    assert [e.target for e in task("sst5").load(jsonl)] == ["positive"]


# ----- question answering ----------------------------------------------------------------------------
def mrqa_text() -> str:
    header = {"header": {"dataset": "NewsQA", "split": "dev"}}
    context = {
        "context": "The cat sat on the mat.",
        "context_tokens": [],
        "qas": [
            {"id": "a", "qid": "q1", "question": "Who sat?", "answers": ["The cat", "cat"], "detected_answers": []},
            {"id": "b", "qid": "q2", "question": "Where?", "answers": ["on the mat"], "detected_answers": []},
        ],
    }
    return json.dumps(header) + "\n" + json.dumps(context) + "\n"


def test_mrqa_reads_jsonl_and_gzip_with_a_header(tmp_path):
    plain = write(tmp_path / "NewsQA.jsonl", mrqa_text())
    zipped = tmp_path / "NewsQA.jsonl.gz"
    zipped.write_bytes(gzip.compress(mrqa_text().encode()))
    for path in (plain, str(zipped)):
        out = task("mrqa").load(path)
        assert [e.input for e in out] == [
            "question: Who sat? context: The cat sat on the mat.",
            "question: Where? context: The cat sat on the mat.",
        ]
        assert [e.target for e in out] == ["The cat", "on the mat"] and out[0].answers == ["The cat", "cat"]
    # "the mat" against "on the mat": {mat} against {on, mat}, precision 1, recall 1/2, F1 2/3
    assert task("mrqa").score(["cat", "the mat"], out) == pytest.approx(
        {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2}
    )
    with pytest.raises(UserError, match=r"bad\.jsonl:2: malformed JSON"):
        task("mrqa").load(write(tmp_path / "bad.jsonl", mrqa_text().replace('"qas": [', '"qas": [,')))


# ----- every family: labels by rank classification, text by generation ------------------------------
@pytest.mark.parametrize("name", ["copa", "multirc"])
def test_named_classification_always_predicts_one_of_its_labels(tiny, name):
    rows = {
        "copa": [
            {"premise": "the cat is red", "choice1": "yes", "choice2": "no", "question": "effect", "label": k}
            for k in (0, 1, 0)
        ],
        "multirc": multirc_rows(),
    }[name]
    t = task(name)
    out = t.examples(rows[:3], "rows.jsonl", None)
    t.prepare(tiny)
    predictions = t.predict_all(tiny, [e.fields for e in out], progress=False)
    assert len(predictions) == len(out) and set(predictions) <= set(t.label_values)
    assert set(t.evaluate(tiny, out, progress=False)) == set(t.reported) | (
        {"average"} if t.metric == "average" else set()
    )


def test_encoder_only_refuses_the_generative_tasks():
    for name in ("record", "mrqa"):
        with pytest.raises(UserError, match=f"--data.task={name} needs an encoder-decoder or decoder-only model"):
            task(name).prepare(tiny_bert())


# ----- training -----------------------------------------------------------------------------------------
def boolq_file(path: Path) -> str:
    rows = [
        {
            "question": f"is the {w} good",
            "passage": f"the {w} was {w} and it was very {w}",
            "idx": i,
            "label": i % 2 == 0,
        }
        for i, w in enumerate(WORDS[:8])
    ]
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder-decoder"])
def test_train_eval_predict_boolq_with_no_other_data_option(tmp_path, model_folder, capsys):
    data = boolq_file(tmp_path / "boolq.jsonl")
    out = tmp_path / "run"
    small = [
        "--prompt.length=4",
        "--prompt.vocab_first_n=40",
        "--train.max_steps=2",
        "--train.batch_size=4",
        "--train.micro_batch_size=4",
        "--train.eval_every=2",
    ]
    assert (
        main(
            [
                "train",
                "--model.name",
                model_folder,
                "--data.task=boolq",
                f"--data.train={data}",
                f"--data.validation={data}",
                *small,
                f"--train.output_dir={out}",
            ]
        )
        == 0
    )
    assert "best at step 2: accuracy" in capsys.readouterr().out
    saved = load_prompt(out / "prompt.safetensors").metadata
    assert saved["task"] == {
        "type": "boolq",
        "template": "passage: {passage} question: {question}",
        "max_input_length": 512,
        "max_target_length": 8,
        "verbalizers": {"False": "False", "True": "True"},
    }
    assert make_task(task_options(load_prompt(out / "prompt.safetensors"))).name == "boolq"

    assert main(["eval", str(out / "prompt.safetensors"), f"--data.validation={data}"]) == 0
    scores = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    assert float(scores["accuracy"]) == pytest.approx(saved["metrics"]["accuracy"], abs=0.01)
    assert (
        main(
            [
                "predict",
                str(out / "prompt.safetensors"),
                json.dumps({"passage": "the sun is red", "question": "is the sun red"}),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() in ("False", "True")


def test_two_training_steps_on_record_generate_text(tmp_path):
    model = tiny_gpt2()
    text = "the cat and the dog saw the sun\n@highlight\nthe moon is red"
    spans = [{"start": text.index(w), "end": text.index(w) + len(w) - 1} for w in ("cat", "dog", "sun")]
    rows = [
        {
            "idx": 0,
            "passage": {"text": text, "entities": spans},
            "qas": [
                {
                    "idx": 0,
                    "query": "the @placeholder saw the sun",
                    "answers": [{"start": 4, "end": 6, "text": "cat"}, {"start": 4, "end": 6, "text": "the cat"}],
                },
                {
                    "idx": 1,
                    "query": "the cat and the @placeholder",
                    "answers": [{"start": 16, "end": 18, "text": "dog"}],
                },
            ],
        }
    ]
    record = task("record")
    out = record.examples(rows, "record.jsonl", [1])
    before = model.initial_prompt("vocab", 4, first_n=40, seed=42)
    options = TrainOptions(max_steps=2, batch_size=2, micro_batch_size=2, eval_every=2)
    result = train_prompt(
        model,
        record,
        out,
        out,
        PromptOptions(length=4, init="vocab", vocab_first_n=40),
        options,
        tmp_path,
        progress=False,
    )
    assert result.steps == 2 and set(result.metrics) == {"exact_match", "f1", "average"}
    assert not torch.equal(model.bank.prompt(0), before)
    assert all(isinstance(p, str) for p in record.predict(model, [e.fields for e in out]))
    assert load_prompt(tmp_path / "prompt.safetensors").metadata["task"]["max_target_length"] == 16


# ----- the public data, read as published ------------------------------------------------------------
def shared(folder: str):
    return pytest.mark.skipif(not (SHARED / folder).is_dir(), reason=f"needs $SOFTPROMPT_DATA/{folder}")


@pytest.mark.parametrize(
    "name,file,count",
    [
        pytest.param("boolq", "superglue_boolq/val.jsonl", 3270, marks=shared("superglue_boolq")),
        pytest.param("boolq", "superglue_boolq/train_fewglue32.jsonl", 32, marks=shared("superglue_boolq")),
        pytest.param("cb", "superglue_cb/val.jsonl", 56, marks=shared("superglue_cb")),
        pytest.param("copa", "superglue_copa/val.jsonl", 100, marks=shared("superglue_copa")),
        pytest.param("rte", "superglue_rte/val.jsonl", 277, marks=shared("superglue_rte")),
        pytest.param("rte", "superglue_rte/train.jsonl", 2490, marks=shared("superglue_rte")),
        pytest.param("wic", "superglue_wic/val.jsonl", 638, marks=shared("superglue_wic")),
        pytest.param("wsc", "superglue_wsc/val.jsonl", 104, marks=shared("superglue_wsc")),
        pytest.param("wsc", "superglue_wsc/train.jsonl", 554, marks=shared("superglue_wsc")),
        pytest.param("trec", "trec/TREC.train.all", 5452, marks=shared("trec")),
        pytest.param("trec", "trec/TREC.test.all", 500, marks=shared("trec")),
        pytest.param("sst5", "sst5/stsa.fine.train", 8544, marks=shared("sst5")),
        pytest.param("sst5", "sst5/stsa.fine.dev", 1101, marks=shared("sst5")),
        pytest.param("sst5", "sst5/stsa.fine.test", 2210, marks=shared("sst5")),
        pytest.param("mr", "mr/rt-polarity.all", 10662, marks=shared("mr")),
        pytest.param("sst2", "sst2/dev.tsv", 872, marks=shared("sst2")),
        pytest.param(
            "squad",
            "squad_v1.1_dev_subset_xquad_en/xquad.en.json",
            1190,
            marks=shared("squad_v1.1_dev_subset_xquad_en"),
        ),
        pytest.param("mrqa", "mrqa_newsqa_sample/NewsQA_sample.jsonl", 17, marks=shared("mrqa_newsqa_sample")),
    ],
)
def test_public_data_row_counts(name, file, count):
    out = task(name).load(str(SHARED / file))
    assert len(out) == count
    if name not in ("squad", "mrqa"):
        assert {e.target for e in out} == set(task(name).label_texts)  # every label occurs, each row has one


@shared("superglue_boolq")
def test_public_boolq_first_row():
    first = task("boolq").load(str(SHARED / "superglue_boolq" / "val.jsonl"))[0]
    assert first.input.startswith("passage: Ethanol fuel -- All biomass goes through")
    assert (
        first.input.endswith(" question: does ethanol take more energy make that produces") and first.target == "False"
    )


@shared("superglue_multirc")
def test_public_multirc_has_83_passages_953_questions_4848_answers():
    rows, _ = task("multirc").read(str(SHARED / "superglue_multirc" / "val.jsonl"))
    out = task("multirc").load(str(SHARED / "superglue_multirc" / "val.jsonl"))
    assert (len(rows), len({e.group for e in out}), len(out)) == (83, 953, 4848)


@shared("superglue_wsc")
def test_public_wsc_marks_both_spans_in_every_row():
    for file in ("val", "train"):
        for e in task("wsc").load(str(SHARED / "superglue_wsc" / f"{file}.jsonl")):
            assert e.input.count("*") == 2 and e.input.count("#") == 2, e.input


@shared("trec")
def test_public_trec_raw_coarse_names_give_the_labels_of_the_numbered_file():
    for split in ("train", "test"):
        numbered = task("trec").load(str(SHARED / "trec" / f"TREC.{split}.all"))
        raw = task("trec").load(str(SHARED / "trec" / f"TREC.{split}.raw"))
        assert [e.target for e in raw] == [e.target for e in numbered]
    latin1 = [e.input for e in task("trec").load(str(SHARED / "trec" / "TREC.train.all")) if "\xf0" in e.input]
    assert latin1 == ["question: Which city has the oldest relationship as a sister\xf0city with Los Angeles ?"]


@shared("sst5")
def test_public_sst5_binary_dev_is_sst2_dev_in_size_and_balance():
    out = task("sst5-binary").load(str(SHARED / "sst5" / "stsa.fine.dev"))
    assert len(out) == 872 and sum(e.class_id for e in out) == 444  # GLUE SST-2 dev: 872 sentences, 444 positive


@shared("mr")
def test_public_mr_split_and_latin1():
    path = str(SHARED / "mr" / "rt-polarity.all")
    train, validation = task("mr").load(path + "@train"), task("mr").load(path + "@validation")
    assert (len(train), len(validation)) == (9596, 1066) and sum(e.class_id for e in validation) == 533
    assert any("\xe9" in e.input for e in train + validation)  # é, decoded as Latin-1


@pytest.mark.parametrize(
    ("verbalizers", "message"),
    [
        ({"0": "", "1": "good"}, "--data.verbalizers: label '0' has an empty text; give each label a word or phrase"),
        (
            {"0": "good", "1": "   "},
            "--data.verbalizers: label '1' has an empty text; give each label a word or phrase",
        ),
        (
            {"0": "good", "1": "good"},
            "--data.verbalizers: labels '0' and '1' share the text 'good'; give each label its own",
        ),
        (
            {"0": "good", "1": " good "},
            "--data.verbalizers: labels '0' and '1' share the text 'good'; give each label its own",
        ),
    ],
)
def test_empty_or_shared_label_texts_are_refused(verbalizers, message):
    with pytest.raises(UserError) as refused:
        make_task(DataOptions(verbalizers=verbalizers))
    assert str(refused.value) == message


@pytest.mark.parametrize("family", ["decoder-only"])
def test_empty_label_texts_are_refused_by_train_before_the_model_loads_with_labels_init(tmp_path, model_folder, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "great", "label": 1}\n{"text": "awful", "label": 0}\n')
    command = [
        "train",
        "--model.name",
        model_folder,
        "--data.train",
        str(data),
        "--data.verbalizers",
        '{"0": "", "1": "good"}',
        "--prompt.init=labels",
        "--train.output_dir",
        str(tmp_path / "run"),
    ]
    assert main(command) == 1
    assert (
        capsys.readouterr().err
        == "error: --data.verbalizers: label '0' has an empty text; give each label a word or phrase\n"
    )
    assert not (tmp_path / "run").exists()


def test_a_typed_field_that_is_not_text_is_refused_whether_typed_or_escaped_in_json():
    qa = task("squad")
    with pytest.raises(UserError, match=r"^input 2: not valid text \(a lone surrogate"):
        qa.fields_from_texts(['{"question": "q", "context": "c"}', '{"question": "\\ud800", "context": "c"}'])
    with pytest.raises(UserError, match=r"^input 1: not valid text \(a lone surrogate"):
        task("classification", verbalizers={"0": "no", "1": "yes"}).fields_from_texts(["caf\udce9"])
