"""Single-sentence classification: GLUE SST-2, SST-5 (and SST-5 as binary, for transfer from SST-2), MR and TREC.

Files are read as they are published: GLUE's TSV, or `LABEL TEXT` lines as SentEval and Kim (2014) ship SST-5, MR
and TREC (UTF-8, or Latin-1 when not UTF-8). Any JSONL/CSV/TSV with a `sentence` or `text` column and a `label` column
works too. MR has no official split: `rt-polarity.all@train` and `rt-polarity.all@validation` split it, every 10th row
(the 10th, 20th, ...) to validation."""

import os
from pathlib import Path

from softprompt.data.readers import TABULAR, load_labelled_lines, load_rows, require_columns
from softprompt.data.readers import where as row_where
from softprompt.tasks.classification import LabelledTask

SENTIMENT = {"0": "negative", "1": "positive"}  # T5's SST-2 label words


class SentenceTask(LabelledTask):
    field = "sentence"  # the template field the text fills
    default_template = "sentence: {sentence}"
    fields_provided = ("sentence",)

    def read(self, source):
        path = os.path.expanduser(source)
        if os.path.isfile(path) and Path(path).suffix.lower() not in TABULAR:
            return load_labelled_lines(path)
        return load_rows(source, self.options.format)

    def label_value(self, label: str) -> str | None:
        """The task's label value for a label in the data; None drops the row."""
        return label

    def examples(self, rows, source, lines):
        column = "sentence" if "sentence" in rows[0] else "text"
        require_columns(rows, [column, "label"], source)
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n)
            value = self.label_value(str(row["label"]))
            if value is not None:
                out.append(self.labelled(self.fields({self.field: row[column]}, where), value, where))
        return out


class SST2(SentenceTask):
    name = "sst2"
    description = "GLUE SST-2 TSV (sentence, label 0/1)"
    labels = SENTIMENT


class SST5(SentenceTask):
    name = "sst5"
    description = "SST-5 `LABEL TEXT` lines, labels 0-4"
    labels = {"0": "very negative", "1": "negative", "2": "neutral", "3": "positive", "4": "very positive"}


class SST5Binary(SentenceTask):
    """SST-5 read as SST-2: very negative and negative are 0, positive and very positive 1, neutral rows dropped."""

    name = "sst5-binary"
    description = "SST-5 files as SST-2 labels (neutral dropped)"
    labels = SENTIMENT

    def label_value(self, label):
        return {"0": "0", "1": "0", "2": None, "3": "1", "4": "1"}.get(label, label)


class MR(SentenceTask):
    name = "mr"
    description = "MR `LABEL TEXT` lines (Latin-1), split by FILE@train / FILE@validation"
    labels = SENTIMENT


class TREC(SentenceTask):
    """Coarse TREC classes; labels 0-5 as in the `.all` files, or the raw `COARSE:fine` labels."""

    name = "trec"
    description = "TREC-6 `LABEL TEXT` lines, labels 0-5 or COARSE:fine"
    field = "question"
    default_template = "question: {question}"
    fields_provided = ("question",)
    labels = {"0": "description", "1": "entity", "2": "abbreviation", "3": "human", "4": "location", "5": "number"}
    COARSE = ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM")  # the order of the labels 0-5

    def label_value(self, label):
        coarse = label.partition(":")[0]
        return str(self.COARSE.index(coarse)) if ":" in label and coarse in self.COARSE else label
