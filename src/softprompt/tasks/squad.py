"""Extractive question answering written out as text: SQuAD v1.1 JSON and MRQA 2019 JSONL (the paper's
out-of-domain transfer sets). The context is cut first when an input is too long, never the question."""

import os

from softprompt.data.readers import load_mrqa, require_columns
from softprompt.data.readers import where as row_where
from softprompt.errors import UserError
from softprompt.tasks.text2text import TextToTextTask


class SquadTask(TextToTextTask):
    name = "squad"
    description = "SQuAD v1.1 JSON"
    metric = "f1"
    default_template = "question: {question} context: {context}"
    cut_first = ("context",)
    targets = "an answer (scored by the best-matching gold answer)"

    def examples(self, rows, source, lines):
        require_columns(rows, [*self.columns().values(), "answers"], source)
        out = []
        for n, row in enumerate(rows):
            where = row_where(source, lines, n) if lines is not None else f"{source} question {row.get('id', n)}"
            answers = row["answers"]
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise UserError(f"{where}: column 'answers' must be an array of strings")
            answers = answers or [""]
            out.append(self.example(self.fields(row, where), target=answers[0], answers=answers))
        return out


class MrqaTask(SquadTask):
    """MRQA 2019 shared-task JSONL: one context per line with its questions; `answers` are the gold texts."""

    name = "mrqa"
    description = "MRQA 2019 JSONL (.jsonl or .jsonl.gz)"
    default_max_target_length = 32

    def read(self, source):
        return load_mrqa(os.path.expanduser(source))
